"""The seed study: fine-tuning again under other seeds from one prepared run, with the spread."""
import json

import pandas as pd
import pytest

from lib import config, runs
from lib.errors import KitError
from tools.study import seed_study


@pytest.mark.notebook
@pytest.mark.slow  # it starts from the smoke pipeline's run
def test_seed_study_reproduces_the_run_and_tabulates_the_spread(smoke_notebook, smoke_workspace):
    smoke_notebook("04_infer")
    base = smoke_workspace["run_dir"]
    cfg = runs.read_params(base)
    lines = []
    table = seed_study.run_study(cfg, base, [0, 1], label="t", progress=False, log=lines.append)
    assert list(table["run"]) == ["zero-shot", "seed 0", "seed 1", "mean", "std", "mean - zero-shot"]
    rows = table.set_index("run")
    assert rows.loc["zero-shot", "checkpoint"] == "pretrained"
    # seed 0 is the pipeline's own seed: the rerun lands on the very same scores
    own = json.loads((base / "scores.json").read_text())
    assert rows.loc["seed 0", "checkpoint"] == own["checkpoint"]
    assert rows.loc["seed 0", "test_official"] == own["test"]["map10_official"]
    assert rows.loc["seed 0", "val_standard"] == own["val"]["map10_standard"]
    seeds = rows.loc[["seed 0", "seed 1"], list(seed_study.COLUMNS)]
    assert rows.loc["mean", "test_official"] == pytest.approx(seeds["test_official"].mean())
    assert rows.loc["std", "val_official"] == pytest.approx(seeds["val_official"].std(ddof=1))
    assert rows.loc["mean - zero-shot", "test_official"] == pytest.approx(
        seeds["test_official"].mean() - rows.loc["zero-shot", "test_official"])
    # a second call finds every seed scored and trains nothing
    lines.clear()
    again = seed_study.run_study(cfg, base, [0, 1], label="t", progress=False, log=lines.append)
    assert all("already scored" in line for line in lines) and len(lines) == 2
    pd.testing.assert_frame_equal(again, table)
    # a seed stopped after training, before its scores: resumed from its checkpoints, same result
    seed1 = smoke_workspace["root"] / "runs" / f"{base.name}-t-seed1"
    (seed1 / "scores.json").unlink()
    lines.clear()
    resumed = seed_study.run_study(cfg, base, [0, 1], label="t", progress=False, log=lines.append)
    assert any("[seed 1] fine-tuning" in line for line in lines)
    assert "resumed from" in (seed1 / "out.log").read_text()  # from its checkpoints, not trained again
    pd.testing.assert_frame_equal(resumed, table)


def test_seed_study_needs_a_prepared_run(tmp_path):
    cfg = config.load("smoke", runs_root=str(tmp_path / "runs"))
    with pytest.raises(KitError, match="notebooks 01 and 02"):
        seed_study.run_study(cfg, tmp_path / "not-a-run", [0], progress=False, log=lambda *_: None)


def test_the_study_starts_from_the_base_runs_parameters(tmp_path, monkeypatch):
    """Not the profile's: a run made with lr 2e-4 is studied at lr 2e-4, with the overrides on top."""
    base = runs.create_run(config.load("smoke", runs_root=str(tmp_path), run_name="base", lr=2e-4))
    seen = {}

    def fake_study(cfg, base_run, seeds, label, progress):
        seen.update(cfg=cfg, base=base_run, seeds=seeds)
        return pd.DataFrame()

    monkeypatch.setattr(seed_study, "run_study", fake_study)
    assert seed_study.main(["--run", str(base), "--seeds", "3", "--no-progress", "stop_epoch=2"]) == 0
    assert seen["cfg"] == runs.read_params(base).replace(stop_epoch=2) and seen["cfg"].lr == 2e-4
    assert seen["base"] == base.resolve() and seen["seeds"] == [3]


def test_each_seed_makes_its_soup_between_training_and_scoring(tmp_path, monkeypatch):
    """soup=greedy under study: the seed's soup is made after training, before 04_infer scores it."""
    base = runs.create_run(config.load("smoke", runs_root=str(tmp_path), run_name="base"))
    (base / "data" / "train.csv").write_text("filepath,title\n")
    calls = []

    def step(name):
        def call(cfg, run_dir, **kwargs):
            calls.append((name, run_dir.name, cfg.soup))
            if name == "infer":
                (run_dir / "scores.json").write_text(json.dumps({"checkpoint": "soup.pt"}))
        return call

    for name in ("fine_tune", "make_soup", "infer"):
        monkeypatch.setattr(seed_study, name, step(name))
    cfg = runs.read_params(base).replace(soup="greedy")
    seed_study.run_study(cfg, base, [0], label="s", progress=False, log=lambda *_: None)
    assert calls == [("infer", "base-zero-shot", "greedy"), ("fine_tune", "base-s-seed0", "greedy"),
                     ("make_soup", "base-s-seed0", "greedy"), ("infer", "base-s-seed0", "greedy")]

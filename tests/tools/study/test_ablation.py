"""tools.study.ablation: rows of seeds, mean ± std, and the change against a reference with its interval."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from lib import config, runs
from tools.study import ablation
from tools.study.ablation import DEFAULT, Row


def fake_run(folder, val, test, seed=0):
    """A scored run folder whose per_query.csv holds these APs (test: first half A, second half B)."""
    folder.mkdir(parents=True)
    n = len(test)
    rows = [("val", "", q, ap) for q, ap in enumerate(val)]
    rows += [("test", "A" if q < n // 2 else "B", q, ap) for q, ap in enumerate(test)]
    pd.DataFrame(rows, columns=["split", "board", "query", "ap_official"]).assign(
        kind="car", ap_standard=0.0).to_csv(folder / "per_query.csv", index=False)
    return folder


def test_means_stds_and_paired_changes(tmp_path):
    rng = np.random.default_rng(0)
    base_val, base_test = rng.uniform(0, 1, 200), rng.uniform(0, 1, 200)
    folders = {DEFAULT: [fake_run(tmp_path / f"d{s}", base_val + 0.01 * s, base_test) for s in range(3)],
               "better": [fake_run(tmp_path / f"b{s}", base_val + 0.2, base_test + 0.2) for s in range(3)]}
    rows = [Row(DEFAULT, against=""), Row("better")]
    aps = ablation.per_query(folders)
    frame = ablation.table(rows, aps).set_index("row")
    assert frame.loc[DEFAULT, "val_mean"] == pytest.approx(base_val.mean() + 0.01)
    assert frame.loc[DEFAULT, "val_std"] == pytest.approx(0.01)
    assert frame.loc["better", "val_delta"] == pytest.approx(0.19)  # against the default's seed mean
    assert frame.loc["better", "A_low"] > 0.15 and frame.loc["better", "B_delta"] == pytest.approx(0.2)
    # the seeds differ by 0.01 on val: resampled, the change moves by up to 0.02 beyond the queries'
    assert frame.loc["better", "val_high"] - frame.loc["better", "val_low"] > 0.01
    assert frame.loc["better", "val_mde"] > 0 and np.isnan(frame.loc[DEFAULT, "val_delta"])
    text = ablation.markdown(frame.reset_index())
    assert "| better | " in text and "+0.190 [" in text and text.count("\n") == 3
    seeds = ablation.seed_table(aps).set_index(["row", "seed"])
    assert seeds.loc[(DEFAULT, 2), "val"] == pytest.approx(base_val.mean() + 0.02)


def test_the_published_tables_are_the_same_bytes_from_the_same_scores(tmp_path):
    rng = np.random.default_rng(1)
    folders = {DEFAULT: [fake_run(tmp_path / f"d{s}", rng.uniform(0, 1, 20), rng.uniform(0, 1, 20))
                         for s in range(2)]}
    aps = ablation.per_query(folders)
    first = ablation.table_paths(tmp_path / "a", "world0", "ablation")
    second = ablation.table_paths(tmp_path / "b", "world0", "ablation")
    rows = [Row(DEFAULT, against="")]
    assert ablation.write_tables(ablation.table(rows, aps), aps, first) == ablation.write_tables(
        ablation.table(rows, aps), aps, second)
    assert all(first[k].read_bytes() == second[k].read_bytes() for k in first)
    back = pd.read_csv(first["per_query"])
    assert len(back) == 2 * 40 and set(back.columns) == {"row", "seed", "split", "board", "query", "ap"}


def test_every_reference_is_a_row_and_the_chain_starts_at_zero_shot():
    names = set(ablation.ROWS)
    assert all(row.against in names or row.against == "" for row in ablation.ROWS.values())
    assert ablation.CHAIN[0].name == ablation.ZERO_SHOT and not ablation.CHAIN[0].trains
    assert [row.name for row in ablation.CHAIN if row.trains][-1] == DEFAULT


def test_the_tables_are_named_after_the_whole_run_name_dots_included(tmp_path):
    run = "2026_12_02-10_54_32-kit-tiny-vit-lr0.0003-b64"
    paths = ablation.table_paths(tmp_path, run, "ablation")
    assert paths["csv"] == tmp_path / f"{run}-ablation.csv" and paths["md"] == tmp_path / f"{run}-ablation.md"


@pytest.mark.slow
@pytest.mark.notebook
def test_rows_on_the_smoke_run(smoke_notebook, smoke_workspace):
    """The default row's seed 0 is the pipeline's own run; a scoring-only row reuses its checkpoints."""
    base = smoke_notebook("04_infer").parent
    rows = [ablation.ROWS[ablation.ZERO_SHOT], Row(DEFAULT, against=ablation.ZERO_SHOT),
            ablation.ROWS["query policy none"], ablation.ROWS["ensemble of the seeds"]]
    lines = []
    folders = ablation.run_rows(runs.read_params(base), base, rows, [0], "t", progress=False,
                                log=lines.append)
    (default,) = folders[DEFAULT]
    own = json.loads((base / "scores.json").read_text())
    assert json.loads((default / "scores.json").read_text())["test_A"] == own["test_A"]
    (rescored,) = folders["query policy none"]
    assert runs.read_params(rescored).query_policy == "none" and (rescored / "checkpoints").is_dir()
    assert (rescored / "checkpoints" / "epoch_1.pt").stat().st_ino == (
        default / "checkpoints" / "epoch_1.pt").stat().st_ino  # hard links, not copies
    frame = ablation.table(rows, ablation.per_query(folders)).set_index("row")
    assert frame.loc[DEFAULT, "seeds"] == 1 and not np.isnan(frame.loc[DEFAULT, "val_delta"])
    # an ensemble of one seed is that seed: the same rankings, a change of exactly 0 everywhere
    ensemble = frame.loc["ensemble of the seeds"]
    assert (ensemble["val_delta"], ensemble["A_delta"], ensemble["B_delta"]) == (0.0, 0.0, 0.0)


def test_row_names_can_be_given_to_only_and_name_their_folders():
    """--only splits on commas, so no row name holds one; a row's folders follow its slug and seeds."""
    assert [name for name in ablation.ROWS if "," in name] == []
    root, base = Path("/r"), Path("/r/base")
    assert ablation.row_paths(root, base, ablation.ROWS["lr 1e-4"], [0, 2], "abl") == [
        Path("/r/base-abl-lr-1e-4-seed0"), Path("/r/base-abl-lr-1e-4-seed2")]
    zero_shot = ablation.row_paths(root, base, ablation.ROWS["zero-shot"], [0, 1], "abl")
    assert zero_shot == [Path("/r/base-zero-shot")]
    assert ablation.row_paths(root, base, ablation.ROWS["ensemble of the seeds"], [0, 1], "abl") == [
        Path("/r/base-abl-ensemble")]


def test_jobs_split_the_work_and_keep_the_default_with_the_rows_that_rescore_it():
    names = ("zero-shot", "default", "lr 1e-4", "+ greedy soup", "query policy none", "brand filled too",
             "no attribute augmentation", "augmentation on unpadded images")
    rows = [ablation.ROWS[n] for n in names]
    assert ablation.job_groups(rows, 2) == [
        ["default", "+ greedy soup", "query policy none", "no attribute augmentation"],
        ["lr 1e-4", "brand filled too", "augmentation on unpadded images"]]
    assert ablation.job_groups(rows[:2], 3) == [["default"]]


@pytest.mark.parametrize(("val", "board_a", "votes", "expected"), [
    ((0.01, 0.02), (0.00, 0.03), ("val", "A"), "better"),  # val beyond noise, A not against it
    ((-0.01, 0.02), (-0.03, -0.001), ("val", "A"), "worse"),
    ((0.001, 0.02), (-0.03, -0.001), ("val", "A"), "val and A disagree"),
    ((-0.01, 0.0), (0.0, 0.03), ("val", "A"), "noise"),  # an interval touching 0 holds it
    ((-0.05, -0.01), (0.01, 0.03), ("A",), "better (A only)"),  # val chose the compared epoch
    ((0.01, 0.02), (0.01, 0.03), (), "no vote: val and A chose it"),
])
def test_the_verdict_is_the_rule_on_the_boards_that_vote(val, board_a, votes, expected):
    line = {"val_delta": sum(val) / 2, "val_low": val[0], "val_high": val[1], "A_low": board_a[0],
            "A_high": board_a[1]}
    assert ablation.verdict(line, votes) == expected
    assert ablation.verdict({"val_delta": float("nan")}, votes) == ""


def test_a_published_table_replaces_its_block_in_the_pages_that_show_it(tmp_path, monkeypatch):
    monkeypatch.setattr(ablation, "REPO_ROOT", tmp_path)
    (tmp_path / "docs" / "tables").mkdir(parents=True)
    table = tmp_path / "docs" / "tables" / "w-ablation.md"
    table.write_text("| row |\n|---|\n| new |\n")
    shown = tmp_path / "docs" / "results.md"
    shown.write_text("head\n" + ablation.table_block("docs/tables/w-ablation.md", "| old |") + "\ntail\n")
    other = tmp_path / "docs" / "other.md"
    other.write_text("no table here\n")
    assert ablation.update_table_blocks(tmp_path / "docs", table) == [shown]
    assert shown.read_text() == (
        "head\n<!-- table: docs/tables/w-ablation.md (written by make ablation --publish; do not edit) -->\n"
        "| row |\n|---|\n| new |\n<!-- /table -->\ntail\n")
    assert other.read_text() == "no table here\n"


def test_default_rows_put_each_default_against_its_alternative():
    cfg = config.load("demo", attribute_augmentation=True, photometric_jitter_prob=0.8, lr=3e-4,
                      car_caption_form="attributes", attribute_fields=["colour", "brand", "type"],
                      augment_padded_images=False, augment_val=False, submit_epoch=5, soup="none",
                      rerank="none", query_policy="strip_prefix", category_aware=False)
    rows = ablation.default_rows(cfg)
    assert list(rows) == [
        "zero-shot", "default", "attribute_augmentation False", "photometric_jitter_prob 0", "lr 0.0001",
        "car_caption_form sentence", "attribute_fields colour type", "augment_padded_images True",
        "augment_val True", "submit_epoch 0", "soup greedy", "soup uniform", "soup wise", "rerank a3r",
        "rerank aqe", "rerank kreciprocal", "query_policy none", "query_policy surveillance",
        "category_aware True", "ensemble of the seeds"]
    assert rows["lr 0.0001"].overrides == {"lr": 1e-4} and rows["lr 0.0001"].trains
    assert rows["default"].against == "zero-shot" and rows["soup uniform"].against == "default"
    assert not rows["query_policy none"].trains and rows["query_policy none"].votes == ("val", "A")
    assert rows["submit_epoch 0"].votes == rows["augment_val True"].votes == ("A",)
    assert rows["soup greedy"].votes == rows["soup wise"].votes == ()


def test_a_rescore_interrupted_while_linking_checkpoints_resumes(tmp_path):
    """The links an interrupted rescore left are kept; a different file in their place is refused."""
    source, target, other = tmp_path / "epoch_1.pt", tmp_path / "copy.pt", tmp_path / "other.pt"
    source.write_bytes(b"weights")
    other.write_bytes(b"weights")
    ablation._link(str(source), str(target))
    ablation._link(str(source), str(target))  # the second pass of a resumed rescore
    assert target.stat().st_ino == source.stat().st_ino
    with pytest.raises(FileExistsError):
        ablation._link(str(source), str(other))

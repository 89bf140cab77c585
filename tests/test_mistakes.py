"""Off the stock path: what a careless or unlucky user does, and what the kit answers. One test a
case: no silent wrong result, no lost record, nothing written outside a run, one line and the way
on instead of a traceback. (Kills, full disks and hangs: tests/test_reliability.py.)

The pipeline cases run the real lib.pipeline with its notebooks replaced by a fake that writes each
step's outputs from the run's parameters (`FakeSteps`), so that what the pipeline decides (which step
runs, from scratch or not) is seen in seconds; test_reliability.py runs the real notebooks.
"""
from __future__ import annotations

import errno
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from lib import config, runs, steps
from lib.config import ConfigError
from lib.files import sha256_file
from lib.model.checkpoints import ChecksumError, save_checkpoint
from lib.paths import REPO_ROOT
from lib.pipeline import runner
from lib.record import review


class FakeSteps:
    """lib.pipeline.run_notebook's stand-in: each step writes its outputs from the run's params.yaml;
    03 refuses to train over checkpoints unless told to resume, as the real loop does."""

    def __init__(self, fail: dict[str, Exception] | None = None):
        self.calls: list[tuple[str, dict]] = []
        self.fail = fail or {}

    def __call__(self, name, out_dir, parameters, timeout_s=None, log=print, log_path=None, stats=None):
        self.calls.append((name, dict(parameters)))
        run_dir = Path(out_dir)
        cfg = runs.read_params(run_dir)
        data = run_dir / "data"
        if name == "01_prepare":
            for table in steps.OUTPUTS[name]:
                (run_dir / table).write_text(f"{table} of demo_seed {cfg.demo_seed}\n")
        if name == "02_augment":
            (data / "train_augmented.csv").write_text(f"augmented: {cfg.attribute_augmentation}\n")
        if name == "03_train":
            ckpt = run_dir / "checkpoints"
            if any(ckpt.glob("*.pt")) and parameters.get("resume") != "latest":
                raise runner.NotebookFailed(f"{run_dir} already holds checkpoints")
            if not (ckpt / "epoch_1.pt").exists():
                augmented = data / "train_augmented.csv"
                trained_on = augmented.read_text() if augmented.exists() else "train.csv"
                save_checkpoint(ckpt / "epoch_1.pt", {"epoch": 1, "state_dict": {"w": torch.tensor([cfg.lr])},
                                                      "trained_on": trained_on, "seed": cfg.seed})
                (run_dir / "metrics.jsonl").write_text('{"epoch": 0, "step": 0}\n{"epoch": 1, "step": 3}\n')
                (run_dir / "out.log").write_text("trained\n")
        if name in self.fail:  # an exception, or a function of the run folder that makes one
            failure = self.fail.pop(name)
            raise failure(run_dir) if callable(failure) else failure
        if name == "04_infer":
            for out in ("submission.json", "scores.json", "per_query.csv"):
                (run_dir / out).write_text(json.dumps({"query_policy": cfg.query_policy}) + "\n")
        target = run_dir / f"{name}.ipynb"
        target.write_text(f"{name} executed\n")
        return target

    def ran(self) -> list[str]:
        return [name for name, _ in self.calls]


@pytest.fixture
def fake(monkeypatch):
    steps_ = FakeSteps()
    monkeypatch.setattr(runner, "run_notebook", steps_)
    return steps_


def _run(tmp_path, **overrides) -> Path:
    cfg = config.load("smoke", runs_root=str(tmp_path / "runs"), run_name="r", **overrides)
    return runner.run_pipeline(cfg, log=lambda *_: None)


def _trained_on(run_dir: Path) -> str:
    return torch.load(run_dir / "checkpoints" / "epoch_1.pt", weights_only=True)["trained_on"]


def _history(run_dir: Path) -> list[dict]:
    return steps.read_state(run_dir)["history"]


# --- silent wrong results ---------------------------------------------------------------------------
def test_01_going_back_redoes_every_later_step_from_scratch(tmp_path, fake):
    run_dir = _run(tmp_path)
    assert _trained_on(run_dir) == "augmented: True\n"
    fake.calls.clear()
    runner.resume_pipeline(run_dir, "02_augment", {"attribute_augmentation": False}, log=lambda *_: None)
    assert fake.ran() == ["02_augment", "03_train", "04_infer"]
    assert "resume" not in dict(fake.calls)["03_train"]  # trained again, not resumed from the old weights
    assert _trained_on(run_dir) == "augmented: False\n"
    assert len(list((run_dir / "superseded").iterdir())) == 1  # the old training outputs, kept


def test_01_training_run_by_hand_before_02_is_redone_after_it(tmp_path, fake, monkeypatch):
    cfg = config.load("smoke", runs_root=str(tmp_path / "runs"), run_name="r")
    run_dir = runs.create_run(cfg)
    steps.record_parameters(run_dir, cfg)
    with pytest.raises(runner.StepStopped):  # 02 stops: the user runs 03 by hand instead
        fake.fail["02_augment"] = runner.NotebookFailed("02 failed")
        runner._execute(run_dir, cfg, list(steps.PIPELINE), None, lambda *_: None)
    (run_dir / "data" / "train_augmented.csv").unlink(missing_ok=True)
    monkeypatch.delenv(steps.PIPELINE_ENV, raising=False)
    steps.open_step("03_train", run_dir)  # what the notebook's first cell does, by hand
    fake("03_train", run_dir, {"run_dir": str(run_dir)})
    assert _trained_on(run_dir) == "train.csv"
    runner.resume_pipeline(run_dir, log=lambda *_: None)
    assert _trained_on(run_dir) == "augmented: True\n"


def test_02_new_parameters_on_a_finished_run_are_recorded_and_retrain(tmp_path, fake):
    run_dir = _run(tmp_path)
    fake.calls.clear()
    runner.resume_pipeline(run_dir, overrides={"lr": 0.5, "seed": 7}, log=lambda *_: None)
    assert fake.ran() == ["03_train", "04_infer"] and "resume" not in dict(fake.calls)["03_train"]
    changed = [e for e in _history(run_dir) if e["event"] == "parameters changed"][-1]
    assert changed["changes"] == {"lr": [1e-4, 0.5], "seed": [0, 7]}
    assert torch.load(run_dir / "checkpoints" / "epoch_1.pt", weights_only=True)["seed"] == 7


def test_02_a_params_yaml_edited_by_hand_is_recorded_before_anything_runs(tmp_path, fake):
    run_dir = _run(tmp_path)
    params = run_dir / "params.yaml"
    params.write_text(params.read_text().replace("lr: 0.0001", "lr: 0.5"))
    fake.calls.clear()
    runner.resume_pipeline(run_dir, log=lambda *_: None)
    assert fake.ran() == ["03_train", "04_infer"]
    changed = [e for e in _history(run_dir) if e["event"] == "parameters changed"][-1]
    assert changed["by"] == "params.yaml edited by hand" and changed["changes"] == {"lr": [1e-4, 0.5]}
    weights = torch.load(run_dir / "checkpoints" / "epoch_1.pt", weights_only=True)["state_dict"]
    assert weights["w"].item() == 0.5


def test_03_a_key_given_twice_in_a_profile_is_refused_with_its_line(tmp_path):
    profile = tmp_path / "mine.yaml"
    profile.write_text("extends: smoke\nlr: 1.0e-4\nbatch_size: 8\nlr: 5.0e-4\n")
    with pytest.raises(ConfigError, match=r"mine\.yaml:4:1: lr is given twice \(lines 2 and 4\)"):
        config.load(str(profile))
    with pytest.raises(ConfigError, match="lr is given twice on the command line"):
        config.parse_overrides(["lr=1e-4", "lr=2e-4"])


def test_04_a_consistent_forgery_of_the_embedding_cache_is_refused(clip, gallery, tmp_path):
    """Rows reordered and the sidecar's sha256 recomputed: the sidecar agrees, the model does not."""
    from lib.eval import embedding_cache, retrieval

    model, _, pp = clip
    opts = {"model_id": "m", "cache_dir": tmp_path, "progress": False}
    names, emb, _ = retrieval.encode_gallery(model, gallery, pp, **opts)
    (npy,) = tmp_path.glob("*.npy")
    forged = np.load(npy)[::-1].copy()
    np.save(npy, forged)
    meta = json.loads(npy.with_suffix(".json").read_text())
    npy.with_suffix(".json").write_text(json.dumps({**meta, "sha256": embedding_cache.array_sha256(forged)}))
    with pytest.warns(UserWarning, match="is not that image's embedding under the model in use"):
        again, emb2, hit = retrieval.encode_gallery(model, gallery, pp, **opts)
    assert not hit and again == names and torch.equal(emb2, emb)
    meta = json.loads(npy.with_suffix(".json").read_text())  # rewritten: another model's entry is refused
    npy.with_suffix(".json").write_text(json.dumps({**meta, "model_id": "another"}))
    with pytest.warns(UserWarning, match="made by another model"):
        assert embedding_cache.load(tmp_path, npy.stem, names, model_id="m") is None


def _finished(tmp_path, fake, monkeypatch) -> Path:
    run_dir = _run(tmp_path)
    params = run_dir / "params.yaml"
    params.write_text(params.read_text().replace("-dirty", ""))  # as if made by a commit
    steps.record_parameters(run_dir, runs.read_params(run_dir))
    monkeypatch.setattr(runs, "git_commit", lambda: "abc123")
    return run_dir


def test_05_every_file_of_the_record_is_covered_by_its_checksums(tmp_path, fake, monkeypatch):
    record = review.build_record(_finished(tmp_path, fake, monkeypatch), tmp_path / "record")
    table = review.verify_checksums(record)
    assert {p.name for p in review.record_files(record)} <= set(table["file"])
    for name in ("scores.json", "metrics.jsonl", "out.log", "pipeline.json", "03_train.ipynb", "README.md"):
        saved = (record / name).read_bytes()
        (record / name).write_bytes(saved + b" ")
        with pytest.raises(review.ReviewError, match=f"checksum mismatch for {name}"):
            review.verify_checksums(record)
        (record / name).write_bytes(saved)
    (record / "notes.txt").write_text("slipped in")
    with pytest.raises(review.ReviewError, match="notes.txt in record/ but not in its checksums"):
        review.verify_checksums(record)


# --- lost work ------------------------------------------------------------------------------------------
def test_06_promote_checks_the_run_before_writing_anything(tmp_path, fake, monkeypatch):
    run_dir = _finished(tmp_path, fake, monkeypatch)
    ckpt = run_dir / "checkpoints" / "epoch_1.pt"
    good = ckpt.read_bytes()
    ckpt.write_bytes(good[:-1] + bytes([good[-1] ^ 1]))  # a bit flip
    with pytest.raises(ChecksumError, match="sha256 mismatch"):
        review.build_record(run_dir, tmp_path / "record")
    assert not (tmp_path / "record").exists()
    ckpt.write_bytes(good)
    (run_dir / "submission.json").write_text("a stale submission\n")  # changed since 04 completed
    with pytest.raises(review.ReviewError, match="04_infer did not complete, or its outputs changed"):
        review.build_record(run_dir, tmp_path / "record")
    assert not (tmp_path / "record").exists()


def test_06_a_record_that_fails_its_review_leaves_the_old_one_in_place(tmp_path, fake, monkeypatch):
    run_dir = _finished(tmp_path, fake, monkeypatch)
    record = tmp_path / "best-result-review"
    record.mkdir()
    (record / "old.txt").write_text("the committed record")
    monkeypatch.setattr(review, "REVIEW_DIR", record)
    monkeypatch.setattr(runner, "REPO_ROOT", tmp_path)

    def failing_review(record=False, log=print):
        raise runner.NotebookFailed("05_quick_review failed in cell 4: 13 queries differ")

    monkeypatch.setattr(runner, "run_review", failing_review)
    with pytest.raises(runner.NotebookFailed, match="13 queries differ"):
        runner.promote_run(run_dir, log=lambda *_: None)
    assert sorted(p.name for p in record.iterdir()) == ["old.txt"]  # the old record, whole
    (failed,) = (tmp_path / "runs" / "promote-failed").iterdir()
    assert (failed / "checksums.sha256").exists()  # the one that failed, kept for reading
    assert not list(tmp_path.glob(".best-result-review.*"))


def test_07_a_failing_gain_check_goes_on_with_its_hint_without_retraining(tmp_path, fake):
    from lib.train.state import NoGain

    fake.fail["03_train"] = lambda run_dir: NoGain(  # as lib.train.state.check_gain words it
        f"fine-tuning did not beat its starting point: {runs.resume_command(run_dir)} "
        "ARGS=\"no_gain_over_zero_shot=warn\"")
    with pytest.raises(runner.StepStopped) as stopped:
        _run(tmp_path)
    assert str(stopped.value).count("make reproduce RESUME=") == 1  # the check's own way on, not a loop
    run_dir = tmp_path / "runs" / "r"
    trained = sha256_file(run_dir / "checkpoints" / "epoch_1.pt")
    fake.calls.clear()
    runner.resume_pipeline(run_dir, overrides={"no_gain_over_zero_shot": "warn"}, log=lambda *_: None)
    assert fake.ran() == ["03_train", "04_infer"] and dict(fake.calls)["03_train"]["resume"] == "latest"
    assert sha256_file(run_dir / "checkpoints" / "epoch_1.pt") == trained


# --- written outside a run ------------------------------------------------------------------------------
@pytest.mark.parametrize("folder", ["notebooks-copy", "plain"])
def test_08_resume_refuses_a_folder_that_is_not_a_run_before_writing(tmp_path, folder, capsys):
    target = tmp_path / folder
    if folder == "notebooks-copy":
        shutil.copytree(REPO_ROOT / "notebooks", target)
    else:
        target.mkdir()
    before = sorted(p.name for p in target.iterdir())
    assert runner.main(["--resume", str(target)]) == 1
    assert "is not a run folder (it has no params.yaml); nothing was written there" in capsys.readouterr().err
    assert sorted(p.name for p in target.iterdir()) == before


# --- one line instead of a traceback --------------------------------------------------------------------
@pytest.mark.parametrize("argv, says", [
    (["run_name=latest"], "run_name='latest' is reserved"),
    ([f"run_name={'x' * 300}"], "at most 200 bytes"),
    (["--resume", "README.md"], "is a file, not a run folder"),
])
def test_12_odd_names_are_refused_in_one_line(argv, says, capsys, tmp_path):
    assert runner.main(["--profile", "smoke", f"runs_root={tmp_path}", *argv]
                         if argv[0] != "--resume" else [*argv[:1], str(REPO_ROOT / argv[1])]) == 1
    err = capsys.readouterr().err
    assert says in err and "Traceback" not in err and not list(tmp_path.iterdir())


def test_12_a_nul_byte_in_a_run_name_from_yaml_is_refused(tmp_path):
    profile = tmp_path / "nul.yaml"
    profile.write_text('extends: smoke\nrun_name: "a\\0b"\n')
    with pytest.raises(ConfigError, match="no control characters"):
        config.load(str(profile))


def test_12_a_read_only_runs_folder_is_one_line(tmp_path, monkeypatch, capsys):
    real_mkdir = Path.mkdir

    def read_only(self, *args, **kwargs):
        if str(self).startswith(str(tmp_path)):
            raise OSError(errno.EROFS, "Read-only file system")
        return real_mkdir(self, *args, **kwargs)

    monkeypatch.setattr(Path, "mkdir", read_only)
    assert runner.main(["--profile", "smoke", f"runs_root={tmp_path}/runs"]) == 1
    err = capsys.readouterr().err
    assert "cannot write in" in err and "Read-only file system" in err and "Traceback" not in err


def test_12_a_read_only_run_is_one_line(tmp_path, fake, monkeypatch, capsys):
    run_dir = _run(tmp_path)
    real_open = os.open

    def read_only(path, flags, *args):
        if str(path).startswith(str(run_dir)) and flags & os.O_CREAT:
            raise OSError(errno.EROFS, "Read-only file system")
        return real_open(path, flags, *args)

    monkeypatch.setattr(os, "open", read_only)
    runs._held.pop(run_dir.resolve(), None)
    assert runner.main(["--resume", str(run_dir)]) == 1
    err = capsys.readouterr().err
    assert "cannot write in" in err and "Traceback" not in err

"""lib.pipeline.fine_tune: the one place that wires training to the val evaluator, in the notebook's
process and (named as torchrun's entry) in every torchrun process."""
from __future__ import annotations

import subprocess

from lib.pipeline import fine_tune
from lib.train import launch
from lib.train.state import TrainResult
from tests.train import tiny_cfg


def _fake_factory(calls):
    def factory(cfg, run_dir):
        calls.append(run_dir)
        return "the val evaluator"
    return factory


def test_in_process_training_gets_the_val_evaluator(tmp_path, monkeypatch):
    calls, trained = [], {}
    monkeypatch.setattr(fine_tune, "run_val_evaluator", _fake_factory(calls))
    monkeypatch.setattr(launch, "train", lambda cfg, run_dir, table, **kw: trained.update(kw) or "done")
    assert fine_tune.fine_tune(tiny_cfg(tmp_path), tmp_path / "run", processes=1) == "done"
    assert calls == [tmp_path / "run"] and trained["evaluator"] == "the val evaluator"


def test_torchrun_starts_every_process_here(tmp_path, monkeypatch):
    seen = {}

    def fake_run(cmd, **kw):
        seen["cmd"] = cmd
        return subprocess.CompletedProcess(cmd, 0)

    monkeypatch.setattr(launch.subprocess, "run", fake_run)
    monkeypatch.setattr(launch, "collect_result", lambda run_dir, submit_epoch=0: TrainResult(run_dir, []))
    fine_tune.fine_tune(tiny_cfg(tmp_path), tmp_path / "run", processes=2)
    cmd = seen["cmd"]
    assert cmd[cmd.index("-m", cmd.index("--nproc_per_node=2")) + 1] == "lib.pipeline.fine_tune"
    assert fine_tune.ENTRY == "lib.pipeline.fine_tune"


def test_the_command_line_builds_the_evaluator_in_each_process(tmp_path, monkeypatch):
    calls, trained = [], {}
    monkeypatch.setattr(fine_tune, "run_val_evaluator", _fake_factory(calls))
    monkeypatch.setattr(launch, "train", lambda cfg, run_dir, table, **kw: trained.update(kw))
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "train.csv").write_text("filepath,title\n")
    assert fine_tune.main(["--run-dir", str(tmp_path), "--config", "smoke"]) == 0
    assert calls == [tmp_path.resolve()] and trained["evaluator"] == "the val evaluator"

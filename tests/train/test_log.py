"""lib.train.log: out.log lines, metrics.jsonl rows (JSON-safe), and forgetting rows a resume redoes."""
import json
import math

import numpy as np
import torch

from lib.train.log import RunLog, read_metrics


def test_rows_are_json_with_non_finite_values_as_null(tmp_path):
    log = RunLog(tmp_path, echo=lambda *_: None)
    log.metrics({"epoch": 0, "step": 0, "val_loss": float("nan"), "lr": np.float32(0.5),
                 "n": torch.tensor(3)})
    log.metrics({"epoch": 1, "step": 4, "val_loss": 1.5})
    log.line("hello")
    log.close()
    rows = read_metrics(tmp_path / "metrics.jsonl")
    assert rows == [{"epoch": 0, "step": 0, "val_loss": None, "lr": 0.5, "n": 3},
                    {"epoch": 1, "step": 4, "val_loss": 1.5}]
    assert all(json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines())
    assert (tmp_path / "out.log").read_text().endswith("| hello\n")
    assert not math.isnan(rows[1]["val_loss"])


def test_truncate_after_forgets_what_a_resume_redoes(tmp_path):
    log = RunLog(tmp_path, echo=lambda *_: None)
    for epoch in range(4):
        log.metrics({"epoch": epoch, "step": 4 * epoch})
    log.truncate_after(6)
    assert [r["epoch"] for r in read_metrics(tmp_path / "metrics.jsonl")] == [0, 1]


def test_other_ranks_write_nothing(tmp_path):
    log = RunLog(tmp_path / "r1", enabled=False)
    log.line("x")
    log.metrics({"epoch": 0, "step": 0})
    assert not (tmp_path / "r1").exists() and read_metrics(tmp_path / "r1" / "metrics.jsonl") == []

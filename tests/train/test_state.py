"""lib.train.state: which epoch is the best, pruning, resume points."""
from __future__ import annotations

import json

import pytest

from lib.train.state import NoGain, TrainResult, check_gain, collect_result, prune_checkpoints


def test_pruning_keeps_the_newest_and_the_best(tmp_path):
    ckpts = tmp_path / "checkpoints"
    ckpts.mkdir()
    for n in (1, 2, 3, 10):
        (ckpts / f"epoch_{n}.pt").write_bytes(b"x")
        (ckpts / f"epoch_{n}.pt.sha256").write_text("0  x\n")
    (ckpts / "latest.pt").write_bytes(b"x")
    losses = {0: 9.0, 1: 2.0, 2: 1.0, 3: 3.0, 10: 4.0}
    rows = [{"epoch": e, "step": e, "val_loss": loss} for e, loss in losses.items()]
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert prune_checkpoints(tmp_path, keep=0) == []
    assert [p.name for p in prune_checkpoints(tmp_path, keep=1)] == ["epoch_1.pt", "epoch_3.pt"]
    assert sorted(p.name for p in ckpts.iterdir()) == [
        "epoch_10.pt", "epoch_10.pt.sha256", "epoch_2.pt", "epoch_2.pt.sha256", "latest.pt"]
    assert collect_result(tmp_path).best_epoch == 2


def _result(start: float, kept: float) -> TrainResult:
    rows = [{"epoch": 0, "val_map10_official": start}, {"epoch": 3, "val_map10_official": kept}]
    return TrainResult(run_dir=None, checkpoints=[], metrics=rows, best_epoch=3)


def test_the_gain_check_passes_a_gain_and_stops_a_tie_or_a_loss_with_a_way_on():
    assert check_gain(_result(0.2305, 0.3164), "fail") == (
        "val mAP@10 (official): 0.2305 zero-shot -> 0.3164 at epoch 3")
    with pytest.raises(NoGain) as stopped:  # equal is not a gain
        check_gain(_result(0.25, 0.25), "fail", resume_hint="make reproduce RESUME=runs/demo/x")
    assert str(stopped.value).endswith(
        'make reproduce RESUME=runs/demo/x ARGS="no_gain_over_zero_shot=warn"')
    assert "0.2500 zero-shot -> 0.2500 at epoch 3: fine-tuning did not beat" in str(stopped.value)
    warned = check_gain(_result(0.25, 0.2), "warn")
    assert warned.startswith("warning: val mAP@10 (official): 0.2500 zero-shot")
    assert check_gain(TrainResult(None, [], [], None), "fail").startswith("no gain check")


def _epochs(tmp_path, scores: dict[int, float]) -> None:
    ckpts = tmp_path / "checkpoints"
    ckpts.mkdir(exist_ok=True)
    for epoch in scores:
        if epoch:
            (ckpts / f"epoch_{epoch}.pt").write_bytes(b"x")
    rows = [{"epoch": e, "step": e, "val_map10_official": v} for e, v in scores.items()]
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_the_kept_epoch_of_equal_scores_is_the_earliest_and_a_fixed_one_wins(tmp_path):
    _epochs(tmp_path, {0: 0.2, 1: 0.31, 2: 0.35, 3: 0.35, 4: 0.30})
    best = collect_result(tmp_path)
    assert (best.best_epoch, best.best_by) == (2, "val_map10_official")  # 0.35 twice: epoch 2, not 3
    fixed = collect_result(tmp_path, submit_epoch=4)  # as the reference submitted epoch 5: not the best
    assert (fixed.best_epoch, fixed.best_by, fixed.best_checkpoint.name) == (4, "submit_epoch", "epoch_4.pt")
    assert collect_result(tmp_path, submit_epoch=6).best_checkpoint is None  # not trained (yet)


def test_pruning_keeps_the_epoch_to_submit(tmp_path):
    _epochs(tmp_path, {0: 0.1, 1: 0.5, 2: 0.2, 3: 0.3, 4: 0.4})
    for n in range(1, 5):
        (tmp_path / "checkpoints" / f"epoch_{n}.pt.sha256").write_text("0  x\n")
    assert [p.name for p in prune_checkpoints(tmp_path, keep=1, submit_epoch=3)] == ["epoch_2.pt"]

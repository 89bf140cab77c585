"""lib.train.state: which epoch is the best, pruning, resume points."""
from __future__ import annotations

import json
import os
import random

import numpy as np
import pytest
import torch

from lib.files import sha256_file, write_sidecar
from lib.runs import RunDirError
from lib.train.state import (
    NoGain,
    TrainResult,
    check_gain,
    collect_result,
    link_checkpoint,
    prune_checkpoints,
    resume_checkpoint,
    rng_state,
    set_rng_state,
)


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


def test_the_gain_checks_words_are_exact_with_and_without_a_way_to_resume():
    """The messages a user reads when fine-tuning did not beat zero-shot (0.25 -> 0.20 at epoch 3), and
    the skipped check when either end of the comparison has no val mAP@10."""
    line = ("val mAP@10 (official): 0.2500 zero-shot -> 0.2000 at epoch 3: fine-tuning did not beat its "
            "starting point")
    advice = (". Check lr, warmup_steps and the training captions; if this run is what you meant (a low lr, "
              "a short trial), let it go on with no_gain_over_zero_shot=warn")
    with pytest.raises(NoGain) as stopped:
        check_gain(_result(0.25, 0.2), "fail")
    assert str(stopped.value) == line + advice
    with pytest.raises(NoGain) as stopped:
        check_gain(_result(0.25, 0.2), "fail", "make reproduce RESUME=runs/demo/x")
    assert str(stopped.value) == (line + advice
                                  + ': make reproduce RESUME=runs/demo/x ARGS="no_gain_over_zero_shot=warn"')
    assert check_gain(_result(0.25, 0.2), "warn") == f"warning: {line} (no_gain_over_zero_shot=warn)"
    skipped = "no gain check: the run has no val mAP@10 at the start and at the kept epoch"
    no_start = TrainResult(None, [], [{"epoch": 3, "val_map10_official": 0.3}], best_epoch=3)
    no_kept = TrainResult(None, [], [{"epoch": 0, "val_map10_official": 0.2}, {"epoch": 3, "val_loss": 1.0}],
                          best_epoch=3)
    assert check_gain(no_start, "fail") == check_gain(no_kept, "fail") == skipped


def test_a_checkpoint_cut_short_before_its_sha256_is_pruned_all_the_same(tmp_path):
    """A kill between a checkpoint and its .sha256 leaves one without: pruning deletes it all the same."""
    _epochs(tmp_path, {0: 0.1, 1: 0.2, 2: 0.5, 3: 0.3})
    (tmp_path / "checkpoints" / "epoch_3.pt.sha256").write_text("0  x\n")
    assert [p.name for p in prune_checkpoints(tmp_path, keep=1)] == ["epoch_1.pt"]
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == [
        "epoch_2.pt", "epoch_3.pt", "epoch_3.pt.sha256"]


def test_the_kept_epoch_by_val_loss_is_the_lowest_and_of_equal_losses_the_earliest(tmp_path):
    ckpts = tmp_path / "checkpoints"
    ckpts.mkdir()
    for n in (1, 2, 3):
        (ckpts / f"epoch_{n}.pt").write_bytes(b"x")
    rows = [{"epoch": 0, "val_loss": 0.5, "val_map10_official": None}, {"epoch": 1, "val_loss": 1.5},
            {"epoch": 2, "val_loss": 1.2}, {"epoch": 3, "val_loss": 1.2}]
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    best = collect_result(tmp_path)
    assert (best.best_epoch, best.best_by, best.best_checkpoint) == (2, "val_loss", ckpts / "epoch_2.pt")
    assert (best.run_dir, best.checkpoints, best.metrics) == (
        tmp_path, [ckpts / "epoch_1.pt", ckpts / "epoch_2.pt", ckpts / "epoch_3.pt"], rows)


def test_the_starting_point_is_never_kept_and_without_scores_the_last_epoch_is(tmp_path):
    _epochs(tmp_path, {0: 0.9, 1: 0.3, 2: 0.2})  # zero-shot scored best, but has no checkpoint
    kept = collect_result(tmp_path)
    assert (kept.best_epoch, kept.best_by) == (1, "val_map10_official")
    rows = [{"epoch": 0, "train_loss": None}, {"epoch": 1, "train_loss": 2.0},
            {"epoch": 2, "train_loss": 1.0}]
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    last = collect_result(tmp_path)
    assert (last.best_epoch, last.best_by, last.best_checkpoint.name) == (2, "last epoch", "epoch_2.pt")
    empty = collect_result(tmp_path / "nothing")
    assert (empty.best_epoch, empty.best_by, empty.best_checkpoint, empty.checkpoints) == (None, "", None, [])


def _saved(path, data: bytes = b"weights"):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    write_sidecar(path, sha256_file(path))
    return path


def test_a_fresh_start_refuses_a_directory_with_checkpoints_naming_the_first_three(tmp_path):
    run = tmp_path / "run"
    assert resume_checkpoint("", run) is None
    (run / "checkpoints").mkdir(parents=True)
    (run / "checkpoints" / "epoch_1.pt.sha256").write_text("0  x\n")  # not a checkpoint
    assert resume_checkpoint("", run) is None
    way_on = ("continue that run (make reproduce RESUME=<run>, or python -m lib.train --resume latest), or "
              "train into a new run directory")
    for name in ("epoch_1.pt", "epoch_2.pt", "latest.pt"):
        (run / "checkpoints" / name).write_bytes(b"x")
    with pytest.raises(RunDirError) as three:
        resume_checkpoint("", run)
    assert str(three.value) == (
        f"{run} already holds checkpoints (epoch_1.pt, epoch_2.pt, latest.pt): {way_on}")
    (run / "checkpoints" / "epoch_3.pt").write_bytes(b"x")
    with pytest.raises(RunDirError) as four:
        resume_checkpoint("", run)
    assert str(four.value) == (
        f"{run} already holds checkpoints (epoch_1.pt, epoch_2.pt, epoch_3.pt, ...): {way_on}")


def test_resume_latest_falls_back_to_the_newest_epoch_checkpoint_that_verifies(tmp_path):
    run = tmp_path / "run"
    assert resume_checkpoint("latest", run) is None  # nothing trained yet
    ckpts = run / "checkpoints"
    for n in (1, 2, 10):
        _saved(ckpts / f"epoch_{n}.pt", f"epoch {n}".encode())
    latest = _saved(ckpts / "latest.pt", b"epoch 10")
    assert resume_checkpoint("latest", run) == latest
    latest.write_bytes(b"epoch 1")  # a kill cut its save short: it no longer matches its .sha256
    assert resume_checkpoint("latest", run) == ckpts / "epoch_10.pt"  # 10 after 2: by number
    (ckpts / "epoch_10.pt").write_bytes(b"damaged")
    (ckpts / "epoch_2.pt.sha256").unlink()  # none to check against: not trusted
    latest.unlink()
    assert resume_checkpoint("latest", run) == ckpts / "epoch_1.pt"
    (ckpts / "epoch_1.pt").unlink()
    assert resume_checkpoint("latest", run) is None


def test_resume_from_a_named_checkpoint_or_say_it_is_not_there(tmp_path):
    named = _saved(tmp_path / "elsewhere" / "epoch_3.pt")
    assert resume_checkpoint(str(named), tmp_path / "run") == named
    missing = tmp_path / "gone.pt"
    with pytest.raises(RunDirError) as err:
        resume_checkpoint(str(missing), tmp_path / "run")
    assert str(err.value) == f"resume={missing}: no such checkpoint"


def test_latest_is_a_hard_link_to_the_epoch_checkpoint_with_its_own_sha256(tmp_path, monkeypatch):
    src = _saved(tmp_path / "epoch_2.pt", b"epoch 2")
    dst = tmp_path / "latest.pt"
    dst.write_bytes(b"epoch 1")  # the previous epoch's
    stale = tmp_path / f".latest.pt.{os.getpid()}.tmp"  # left by an interrupted link
    stale.write_bytes(b"half")
    link_checkpoint(src, dst, "ab" * 32)
    assert dst.read_bytes() == b"epoch 2" and os.path.samefile(src, dst)
    assert (tmp_path / "latest.pt.sha256").read_text() == "ab" * 32 + "  latest.pt\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["epoch_2.pt", "epoch_2.pt.sha256", "latest.pt",
                                                           "latest.pt.sha256"]

    def no_links(src, dst):
        raise OSError("hard links not supported")

    monkeypatch.setattr(os, "link", no_links)
    copy = tmp_path / "copy.pt"
    link_checkpoint(src, copy, "cd" * 32)
    assert copy.read_bytes() == b"epoch 2" and not os.path.samefile(src, copy)
    assert (tmp_path / "copy.pt.sha256").read_text() == "cd" * 32 + "  copy.pt\n"


def _draws():
    return torch.rand(3).tolist(), np.random.rand(3).tolist(), np.random.standard_normal(), random.random()


def test_the_rng_state_survives_a_weights_only_checkpoint_and_replays_the_same_draws(tmp_path):
    torch.manual_seed(1)
    np.random.seed(2)
    random.seed(3)
    _draws()  # mid-stream, with a cached gaussian: every part of numpy's state matters
    np.random.standard_normal()
    state = rng_state()
    assert set(state) == {"torch", "cuda", "numpy", "python"}
    torch.save(state, tmp_path / "rng.pt")
    want = _draws()
    set_rng_state(torch.load(tmp_path / "rng.pt", weights_only=True))
    assert _draws() == want


def test_the_cuda_generators_are_saved_with_a_gpu_and_restored_only_onto_as_many(monkeypatch):
    saved = [torch.tensor([1], dtype=torch.uint8), torch.tensor([2], dtype=torch.uint8)]
    monkeypatch.setattr(torch.cuda, "get_rng_state_all", lambda: saved)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert rng_state()["cuda"] == []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    state = rng_state()
    assert state["cuda"] is saved
    restored = []
    monkeypatch.setattr(torch.cuda, "set_rng_state_all", restored.append)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    set_rng_state(state)
    assert restored == [saved]
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)  # 2 saved, 1 here: left as they are
    set_rng_state(state)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # saved on a GPU, resumed on a CPU
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
    set_rng_state(state)
    set_rng_state({**state, "cuda": []})
    assert restored == [saved]

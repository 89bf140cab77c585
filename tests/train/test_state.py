"""lib.train.state: which epoch is the best, pruning, resume points."""
from __future__ import annotations

import json

from lib.train.state import collect_result, prune_checkpoints


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

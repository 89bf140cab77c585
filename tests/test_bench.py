"""The benchmark's plumbing only (no timing assertions): a tiny run prints its JSON last and writes it."""
from __future__ import annotations

import json

import pytest

from lib import bench, bench_train

RATIOS = ("encode_speedup_vs_naive", "topk_speedup_vs_broadcast", "train_speed_vs_open_clip_train")


def test_quick_bench_ends_with_the_json_report(tmp_path, capsys):
    out = tmp_path / "bench.json"
    bench.main(["--quick", "--only", "encode,topk", "--images", "6", "--topk-size", "48", "--out", str(out)])
    lines = capsys.readouterr().out.strip().splitlines()
    report = json.loads(lines[-1])
    assert set(RATIOS) | {"machine", "encode", "topk", "train", "goals"} <= set(report)
    assert report["encode_speedup_vs_naive"] > 0 and report["topk_speedup_vs_broadcast"] > 0
    assert report["train_speed_vs_open_clip_train"] is None and report["train"] == {"skipped": "--only"}
    assert report["encode"]["images"] == 6 and report["encode"]["max_abs_diff"] < bench.EMBEDDING_TOLERANCE
    model_only = report["encode"]["model_only"]  # the ceiling: peer time / the model alone on ready tensors
    assert len(model_only["times_s"]) == 1 and report["encode"]["ceiling"] > 0
    assert any(line.strip().startswith("model alone") for line in lines[:-1])
    assert report["topk"]["queries"] == 48 and report["topk"]["identical_rows"] == 1.0
    assert json.loads(out.read_text()) == report
    assert any(line.startswith("encode_speedup_vs_naive") for line in lines[:-1])  # the table came first


def test_broadcast_peer_and_kit_topk_agree():
    import torch

    from lib import retrieval

    g = torch.Generator().manual_seed(1)
    text = torch.nn.functional.normalize(torch.randn(20, 8, generator=g), dim=-1)
    images = torch.nn.functional.normalize(torch.randn(50, 8, generator=g), dim=-1)
    peer_scores, peer_idx = bench.broadcast_topk(text, images, k=5, batch=7)
    kit_scores, kit_idx = retrieval.topk(text, images, k=5)
    assert torch.equal(peer_idx, kit_idx)
    assert torch.allclose(peer_scores, kit_scores, atol=1e-6)


def test_samples_per_s_skips_the_warmup_steps():
    stamps = [0.0, 10.0, 11.0, 13.0]  # the first step (start-up) is slow and must not count
    assert bench_train.samples_per_s(stamps, batch_size=4, warmup=1) == pytest.approx(4 * 2 / 3.0)
    with pytest.raises(ValueError, match="optimizer steps"):
        bench_train.samples_per_s(stamps[:2], batch_size=4, warmup=1)


def test_kit_side_of_the_training_race_runs_open_clip_trains_augmentation():
    """open_clip_train is raced with its default augmentation: the kit may not carry extra work
    (the demo's colour jitter) into the race, nor drop the optimiser settings both sides share."""
    spec = {"model": "kit-micro-vit", "batch_size": 8, "workers": 0, "seed": 0, "lr": 1e-4,
            "weight_decay": 0.1, "beta1": 0.9, "beta2": 0.98, "eps": 1e-6}
    cfg = bench_train.kit_config(spec)
    assert cfg.color_jitter_prob == 0.0 and (cfg.lr, cfg.weight_decay, cfg.batch_size) == (1e-4, 0.1, 8)
    args = bench_train.peer_args({**spec, "csv": "x.csv", "workdir": "w"})
    assert "--aug-cfg" not in args

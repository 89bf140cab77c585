"""The benchmark's plumbing only (no timing assertions): a tiny run prints its JSON last and writes it."""
from __future__ import annotations

import json

import pytest

from tools.bench import bench

RATIOS = ("encode_speedup_vs_naive", "topk_speedup_vs_broadcast", "train_speed_vs_open_clip_train",
          "rerank_speedup_vs_reference", "train_1_thread_vs_default")


def test_quick_bench_ends_with_the_json_report(tmp_path, capsys):
    out = tmp_path / "bench.json"
    bench.run(["--quick", "--only", "encode,topk", "--images", "6", "--topk-size", "48", "--out", str(out)])
    lines = capsys.readouterr().out.strip().splitlines()
    report = json.loads(lines[-1])
    assert set(RATIOS) | {"machine", "encode", "topk", "train", "rerank", "threads", "goals"} <= set(report)
    assert set(report["goals"]) == set(RATIOS)
    assert report["encode_speedup_vs_naive"] > 0 and report["topk_speedup_vs_broadcast"] > 0
    assert report["train_speed_vs_open_clip_train"] is None and report["train"] == {"skipped": "--only"}
    assert report["rerank_speedup_vs_reference"] is None and report["rerank"] == {"skipped": "--only"}
    assert report["train_1_thread_vs_default"] is None and report["threads"] == {"skipped": "--only"}
    assert report["encode"]["images"] == 6 and report["encode"]["max_abs_diff"] < bench.EMBEDDING_TOLERANCE
    model_only = report["encode"]["model_only"]  # the ceiling: peer time / the model alone on ready tensors
    assert len(model_only["times_s"]) == 1 and report["encode"]["ceiling"] > 0
    assert any(line.strip().startswith("model alone") for line in lines[:-1])
    assert report["topk"]["queries"] == 48 and report["topk"]["identical_rows"] == 1.0
    assert json.loads(out.read_text()) == report
    assert any(line.startswith("encode_speedup_vs_naive") for line in lines[:-1])  # the table came first


def test_quick_rerank_section(tmp_path, capsys):
    report = bench.run(["--quick", "--only", "rerank", "--rerank-queries", "2", "--out", str(tmp_path / "j")])
    lines = capsys.readouterr().out.strip().splitlines()
    assert report["rerank_speedup_vs_reference"] > 0 and report["rerank"]["depth"] == 50
    assert report["rerank"]["checked"]["embedded"] == {"queries": 2, "identical_rows": 1.0}
    assert "full_size" not in report["rerank"]  # quick: the real size is skipped
    assert any(line.startswith("rerank_speedup_vs_reference") for line in lines[:-1])


def test_broadcast_peer_and_kit_topk_agree():
    import torch

    from lib.eval.topk import topk

    g = torch.Generator().manual_seed(1)
    text = torch.nn.functional.normalize(torch.randn(20, 8, generator=g), dim=-1)
    images = torch.nn.functional.normalize(torch.randn(50, 8, generator=g), dim=-1)
    peer_scores, peer_idx = bench.broadcast_topk(text, images, k=5, batch=7)
    kit_scores, kit_idx = topk(text, images, k=5)
    assert torch.equal(peer_idx, kit_idx)
    assert torch.allclose(peer_scores, kit_scores, atol=1e-6)




def test_quick_threads_section_alternates_one_thread_and_all_cores(tmp_path, capsys, monkeypatch):
    """The race's plumbing; the sides themselves are bench_train.run_side, the training race's."""
    from tools.bench import train as bench_train

    calls = []

    def fake_side(side, spec, workdir):
        calls.append(spec["threads"])
        step = 1.0 / spec["threads"]  # 2 threads: twice as fast
        return [0.0, 1.0, 1.0 + step, 1.0 + 2 * step]

    monkeypatch.setattr(bench_train, "run_side", fake_side)
    report = bench.run(["--quick", "--only", "threads", "--images", "6", "--train-steps", "2",
                        "--repeats", "2", "--threads", "2", "--out", str(tmp_path / "j")])
    lines = capsys.readouterr().out.strip().splitlines()
    threads = report["threads"]
    assert calls == [1, 2, 2, 1]  # alternated, so neither side always runs on a warm machine
    assert threads["threads"] == {"kit": 1, "peer": 2} and threads["timed_steps"] == 2
    assert report["train_1_thread_vs_default"] == threads["ratio"] == pytest.approx(0.5)
    assert any(line.startswith("train_1_thread_vs_default") for line in lines[:-1])

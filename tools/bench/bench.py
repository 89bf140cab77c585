"""`make bench`: the kit's speed against a peer, both measured in this run on the same model and data.

    python -m tools.bench [--quick] [--images N] [--topk-size N] [--train-steps N]
                              [--rerank-queries N] [--rerank-full-size N]
                              [--only encode,topk,train,rerank,threads]

Five comparisons, each a ratio kit / peer (higher is better for the kit):
- encode_speedup_vs_naive: lib.model.encode.encode_images (the demo profile's workers and batch size)
  against the reference's plain loop: PIL open, pad to square with PIL, open_clip's val preprocess
  per image, stacked batches, no workers, torch.no_grad, fp32. The embeddings must agree.
- topk_speedup_vs_broadcast: lib.eval.topk.topk against the reference's
  torch.cosine_similarity(text[:, None], images_batch) over image batches, then topk over all.
  The top-10 must agree (index for index, or score for score where rounding reorders a near-tie).
- train_speed_vs_open_clip_train: samples/s of lib.train against open_clip's own trainer
  (tools.bench.train).
- rerank_speedup_vs_reference: lib.eval.rerank's batched A3R re-ranking (N = 50, the reference's
  m = k = 10, flip, embedded form) against a per-query port of the reference notebook's functions with
  its loops fixed to the described method (tools.bench.rerank), on the same random normalised
  embeddings. The rankings must be identical. Then the kit alone at the real size (17,611 queries x
  17,611 images, d = 1280, N = 50), both forms: the figure the "under a minute" budget is about.
- train_1_thread_vs_default: the kit's training loop (the demo's batch and workers) with one torch
  thread (the demo's `threads: 1`) against torch's default, one per core.
Timing: a warm-up run of each side, then `repeats` rounds that alternate the order of the sides;
the figure is the BEST (shortest) time of each side, the least disturbed by other processes on a
shared machine (medians are in the JSON too). Both sides run with torch.set_num_threads(cores).
The table's last line is one JSON object (ratios at the top level, raw figures under the sections),
also written to runs/bench/bench.json.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import open_clip
import torch
import torch.nn.functional as F

from lib import config as config_mod
from lib.data.images import read_image
from lib.data.transforms import eval_two_stage
from lib.eval.topk import topk
from lib.model.encode import encode_images, encode_texts
from lib.model.factory import create_model
from lib.paths import REPO_ROOT
from tools.bench import rerank as bench_rerank
from tools.bench import train as bench_train
from tools.workload import REAL_CAPTIONS, captions, make_images, naive_encode

DEFAULT_OUT = REPO_ROOT / "runs" / "bench" / "bench.json"
GOALS = {"encode_speedup_vs_naive": 1.5, "topk_speedup_vs_broadcast": 5.0,
         "train_speed_vs_open_clip_train": 1.0, "rerank_speedup_vs_reference": 20.0,
         "train_1_thread_vs_default": 1.0}
RATIOS = (("encode_speedup_vs_naive", "encode"), ("topk_speedup_vs_broadcast", "topk"),
          ("train_speed_vs_open_clip_train", "train"), ("rerank_speedup_vs_reference", "rerank"),
          ("train_1_thread_vs_default", "threads"))
EMBEDDING_TOLERANCE = 1e-3  # PIL and OpenCV may decode a JPEG pixel differently by one level
SCORE_TOLERANCE = 1e-5  # float rounding of a dot product vs a cosine of normalised vectors
BROADCAST_BYTES = 512 * 2 ** 20  # one (queries, batch, d) float32 tensor; cosine_similarity holds ~3


# --- timing ----------------------------------------------------------------------------------------

def race(peer: Callable[[], Any], kit: Callable[[], Any], repeats: int,
         warmup: tuple[Callable[[], Any], Callable[[], Any]] | None = None) -> dict[str, Any]:
    """Warm each side up once (with `warmup`'s smaller (peer, kit) calls when given), then `repeats`
    rounds alternating which side goes first. Returns both sides' times (s) and last results."""
    for fn in warmup or (peer, kit):
        fn()
    out: dict[str, Any] = {"peer_times": [], "kit_times": []}
    for r in range(repeats):
        for side, fn in (("peer", peer), ("kit", kit))[::1 if r % 2 == 0 else -1]:
            t0 = time.perf_counter()
            out[f"{side}_result"] = fn()
            out[f"{side}_times"].append(time.perf_counter() - t0)
    return out


def _summary(times: list[float], work: float, unit: str) -> dict[str, Any]:
    return {"best_s": min(times), "median_s": statistics.median(times),
            "times_s": [round(t, 4) for t in times],
            f"best_{unit}": work / min(times), f"median_{unit}": work / statistics.median(times)}


# --- 1. gallery encoding ---------------------------------------------------------------------------

def bench_encode(cfg: config_mod.Config, paths: list[Path], repeats: int) -> dict[str, Any]:
    torch.manual_seed(cfg.seed)
    model, tokenizer, pp = create_model(cfg.model, "", device="cpu")  # random weights: speed is the same
    model.eval()
    # the peer's preprocess exactly as the reference got it (same model name, same preprocess config)
    _, _, preprocess_val = open_clip.create_model_and_transforms(cfg.model)
    batch, workers = cfg.eval_batch_size, cfg.workers
    fill = int(pp.get("fill_color", 0))

    def peer():
        return naive_encode(model, paths, preprocess_val, batch, fill)

    def kit():
        return encode_images(model, paths, pp, batch_size=batch, workers=workers,
                                       precision="fp32", progress=False)

    few = paths[:batch]  # warm-up: one batch each (threads, allocator, worker start-up, page cache)
    raced = race(peer, kit, repeats, warmup=(
        lambda: naive_encode(model, few, preprocess_val, batch, fill),
        lambda: encode_images(model, few, pp, batch_size=batch, workers=workers,
                                        precision="fp32", progress=False)))
    a, b = raced["peer_result"], raced["kit_result"]
    # the ceiling: the model alone on ready tensors, i.e. what an encoder whose image loading cost
    # nothing would take; peer / model-only bounds any encoder's ratio on this machine
    transform = eval_two_stage(pp)
    ready = [transform.normalise(torch.stack([transform.to_uint8(read_image(p)) for p in paths[s:s + batch]]))
             for s in range(0, len(paths), batch)]

    def model_only():
        with torch.inference_mode():
            return [model.encode_image(x) for x in ready]

    model_only()
    model_times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        model_only()
        model_times.append(time.perf_counter() - t0)
    max_diff = float((a - b).abs().max())
    if not max_diff < EMBEDDING_TOLERANCE:
        raise AssertionError(f"encode: kit and naive embeddings differ by {max_diff:.3g} "
                             f"(tolerance {EMBEDDING_TOLERANCE}): the comparison is not like for like")
    queries = encode_texts(model, tokenizer, captions(min(100, len(paths))), progress=False)
    k = min(10, len(paths))
    top_kit = topk(queries, b, k=k)[1]
    top_peer = topk(queries, a, k=k)[1]
    overlap = float(np.mean([len(set(x) & set(y)) / k for x, y in zip(top_kit.tolist(), top_peer.tolist())]))
    n = len(paths)
    return {"images": n, "batch_size": batch, "kit_workers": workers, "precision": "fp32",
            "model": cfg.model, "image_size": pp.get("size"), "max_abs_diff": max_diff,
            "top10_overlap": overlap, "kit": _summary(raced["kit_times"], n, "images_per_s"),
            "peer": _summary(raced["peer_times"], n, "images_per_s"),
            "model_only": _summary(model_times, n, "images_per_s"),
            "ceiling": min(raced["peer_times"]) / min(model_times),
            "ratio": min(raced["peer_times"]) / min(raced["kit_times"])}


# --- 2. top-k --------------------------------------------------------------------------------------

def broadcast_topk(text: torch.Tensor, images: torch.Tensor, k: int, batch: int):
    """The reference: cosine similarity of every query with a batch of images by broadcasting
    (queries, 1, d) against (batch, d), the batches concatenated, then top-k over the whole row."""
    sims = [torch.cosine_similarity(text[:, None], images[s:s + batch], dim=-1)
            for s in range(0, len(images), batch)]
    return torch.cat(sims, dim=1).topk(k, dim=1)


def bench_topk(size: int, dim: int, repeats: int, k: int = 10, seed: int = 0) -> dict[str, Any]:
    g = torch.Generator().manual_seed(seed)
    text = F.normalize(torch.randn(size, dim, generator=g), dim=-1)
    images = F.normalize(torch.randn(size, dim, generator=g), dim=-1)
    batch = max(1, BROADCAST_BYTES // (size * dim * 4))

    few = text[:max(k, size // 16)]  # warm-up on a slice of the queries
    raced = race(lambda: broadcast_topk(text, images, k, batch), lambda: topk(text, images, k=k),
                 repeats, warmup=(lambda: broadcast_topk(few, images, k, batch),
                                  lambda: topk(few, images, k=k)))
    (peer_scores, peer_idx), (kit_scores, kit_idx) = raced["peer_result"], raced["kit_result"]
    same_rows = (peer_idx == kit_idx).all(dim=1)
    score_diff = float((peer_scores - kit_scores).abs().max())
    if not score_diff <= SCORE_TOLERANCE:
        raise AssertionError(f"top-k: kit and broadcast top-{k} scores differ by {score_diff:.3g} "
                             f"(tolerance {SCORE_TOLERANCE})")
    return {"queries": size, "gallery": size, "dim": dim, "k": k, "peer_image_batch": batch,
            "identical_rows": float(same_rows.float().mean()), "max_score_diff": score_diff,
            "kit": _summary(raced["kit_times"], size, "queries_per_s"),
            "peer": _summary(raced["peer_times"], size, "queries_per_s"),
            "ratio": min(raced["peer_times"]) / min(raced["kit_times"])}


# --- report ----------------------------------------------------------------------------------------

def machine() -> dict[str, Any]:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "torch": torch.__version__, "python": platform.python_version(),
            "load_avg_1min": round(os.getloadavg()[0], 2)}


def _fmt(value: float | None, unit: str) -> str:
    return "-" if value is None else f"{value:,.1f} {unit}"


def table(results: dict[str, Any], info: dict[str, Any]) -> str:
    rows = [f"machine: {info['cpu']}, {info['cores']} cores, torch {info['torch']} with "
            f"{info['torch_threads']} threads (both sides); load average {info['load_avg_1min']} at start, "
            f"{info.get('load_avg_1min_end', '?')} at end",
            f"images: {info.get('images', '?')}; captions: {info.get('captions', '?')}",
            "figures: best of the alternated runs after a warm-up (medians in the JSON)"
            + ("\n--quick: tiny sizes check the plumbing; start-up costs dominate, the ratios mean nothing"
               if info.get("quick") else "")
            + ("\nWARNING: load average >= half the cores before the bench: other processes (or a run that "
               "just ended) may have taken CPU time from either side, the figures may be noisy"
               if info.get("busy") else ""),
            f"{'name':<32} {'kit':>16} {'peer':>16} {'ratio':>8} {'goal':>7}"]
    units = {"encode": ("images_per_s", "img/s"), "topk": ("queries_per_s", "q/s"),
             "train": ("samples_per_s", "samples/s"), "rerank": ("queries_per_s", "q/s"),
             "threads": ("samples_per_s", "samples/s")}
    for name, section in RATIOS:
        raw, (key, unit) = results.get(section), units[section]
        ratio = results.get(name)
        if raw is None or ratio is None:
            reason = (raw or {}).get("skipped", "not run")
            rows.append(f"{name:<32} {'-':>16} {'-':>16} {'-':>8} {'>= ' + str(GOALS[name]):>7}  ({reason})")
            continue
        met = "" if ratio >= GOALS[name] else "  (below goal)"
        goal = ">= " + str(GOALS[name])
        rows.append(f"{name:<32} {_fmt(raw['kit'][f'best_{key}'], unit):>16} "
                    f"{_fmt(raw['peer'][f'best_{key}'], unit):>16} {ratio:>7.2f}x {goal:>7}{met}")
        if section == "encode" and "ceiling" in raw:
            alone = _fmt(raw["model_only"]["best_images_per_s"], unit)
            label = "  model alone (no image loading)"
            rows.append(f"{label:<32} {alone:>16} {'':>16} {raw['ceiling']:>7.2f}x"
                        "  (the most any encoder could gain over the peer here)")
        if section == "rerank" and "full_size" in raw:
            full = raw["full_size"]
            loads = ", ".join(map(str, full["load_avg_1min_before"].values()))
            rows.append(f"  kit at {full['queries']:,} x {full['gallery']:,}, d {full['dim']}, "
                        f"N {full['depth']}: "
                        + ", ".join(f"{form} {t:.1f} s (CPU {full['rerank_cpu_s'][form]:.1f} s)"
                                    for form, t in full["rerank_s"].items())
                        + f" (load average before: {loads}; the first stage's top-{full['depth']}: "
                        f"{full['first_stage_topk_s']:.1f} s)")
    return "\n".join(rows)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m tools.bench", description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="tiny sizes: checks the plumbing in seconds")
    p.add_argument("--images", type=int, help="gallery images to encode (default 1000; quick 32)")
    p.add_argument("--image-dir", type=Path, help="encode these *.jpg instead of generated ones")
    p.add_argument("--topk-size", type=int, help="queries = gallery images (default 4000; quick 256)")
    p.add_argument("--dim", type=int, default=128, help="embedding size for the top-k comparison")
    p.add_argument("--train-steps", type=int, help="measured training steps (default 30; quick 3)")
    p.add_argument("--rerank-queries", type=int,
                   help="queries re-ranked by both sides (default 200; quick 8)")
    p.add_argument("--rerank-full-size", type=int,
                   help="queries = images for the kit's real-size run (default 17611; quick 0: skipped)")
    p.add_argument("--only", default="encode,topk,train,rerank,threads",
                   help="comma-separated sections to run")
    p.add_argument("--repeats", type=int, help="timed runs of each side after the warm-up (default 3)")
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="torch threads, both sides")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help="where the JSON is written")
    args = p.parse_args(argv)
    q = args.quick
    args.images = args.images or (32 if q else 1000)
    args.topk_size = args.topk_size or (256 if q else 4000)
    args.train_steps = args.train_steps or (3 if q else 30)
    args.rerank_queries = args.rerank_queries or (8 if q else 200)
    if args.rerank_full_size is None:
        args.rerank_full_size = 0 if q else 17611
    args.repeats = args.repeats or (1 if q else 3)
    return args


def _train(args: argparse.Namespace, cfg: config_mod.Config, paths: list[Path],
           workdir: Path) -> dict[str, Any]:
    return bench_train.bench_train(cfg, paths, captions(len(paths)), workdir, steps=args.train_steps,
                                   quick=args.quick, threads=args.threads, repeats=1 if args.quick else 2)


def run(argv: list[str] | None = None) -> dict[str, Any]:
    """Run the benchmarks the arguments ask for; the report (also printed, last line JSON, and saved)."""
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    cfg = config_mod.load("demo")
    info = {**machine(), "quick": args.quick}
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="kit-bench-") as tmp:
        if args.image_dir:
            paths = sorted(args.image_dir.glob("*.jpg"))[:args.images]
            if not paths:
                raise SystemExit(f"--image-dir {args.image_dir}: no *.jpg files")
        else:
            paths = make_images(Path(tmp) / "images", args.images)
        generated = "generated: cv2 JPEGs, 1/3 128x72, 2/3 48x128"
        info["images"] = str(args.image_dir) if args.image_dir else generated
        info["captions"] = f"real validation texts ({REAL_CAPTIONS.relative_to(REPO_ROOT)})"
        sections: dict[str, Callable[[], dict[str, Any]]] = {
            "encode": lambda: bench_encode(cfg, paths, args.repeats),
            "topk": lambda: bench_topk(args.topk_size, args.dim, max(1, args.repeats - 1)),
            "train": lambda: _train(args, cfg, paths, Path(tmp) / "train"),
            "threads": lambda: bench_train.bench_threads(
                cfg, paths, captions(len(paths)), Path(tmp) / "threads", steps=args.train_steps,
                quick=args.quick, cores=args.threads, repeats=args.repeats),
            "rerank": lambda: bench_rerank.bench_rerank(
                args.rerank_queries, gallery=400 if args.quick else 4000, dim=64 if args.quick else 1280,
                depth=50, repeats=args.repeats, full_size=args.rerank_full_size, full_dim=1280, race=race),
        }
        for name, run in sections.items():
            if name not in args.only.split(","):
                results[name] = {"skipped": "--only"}
                continue
            print(f"bench: {name} ...", file=sys.stderr, flush=True)
            t0 = time.perf_counter()
            results[name] = run()
            results[name]["section_s"] = round(time.perf_counter() - t0, 1)
    info["load_avg_1min_end"] = round(os.getloadavg()[0], 2)
    # at the start the load is other processes' (at the end it is mostly the bench's own)
    info["busy"] = info["load_avg_1min"] >= (info["cores"] or 1) / 2
    report = {**{name: results[section].get("ratio") for name, section in RATIOS}, "goals": GOALS,
              "machine": info, "quick": args.quick,
              "method": "best (shortest) of alternated runs after one warm-up run per side", **results}
    print(table(report, info))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
    print(json.dumps(report))
    return report


def main(argv: list[str] | None = None) -> int:
    run(argv)
    return 0


if __name__ == "__main__":
    sys.exit(main())

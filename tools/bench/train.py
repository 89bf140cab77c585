"""Training throughput: lib.train against open_clip's own trainer (`open_clip_train.main`).

Both sides train the same tiny architecture from the same random start on the same CSV
(`filepath`, `title`), batch size, workers, fp32 on the CPU, each in a fresh subprocess so that
neither inherits the other's threads, caches or RNG. What is timed is the same for both: a global
torch.optim step hook records when every optimizer step ends, and samples/s is taken over the steps
after `warmup` (data loading included; start-up, model creation and the final checkpoint excluded).
open_clip's CsvDataset decodes with PIL and does not pad to square: that is its own pipeline.

Child entry point (used by `bench_train`): python -m tools.bench.train SIDE SPEC.json
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch
from torch.optim.optimizer import register_optimizer_step_post_hook

from lib import config
from lib.config import Config
from lib.paths import REPO_ROOT
from tools.workload import write_table

SIDES = ("peer", "kit")
LR_WARMUP_STEPS = 2  # the LR schedule's warmup, the same for both (not the timing warm-up)


def peer_args(spec: dict[str, Any]) -> list[str]:
    """open_clip_train.main's command line for the spec (the reference's trainer, as documented)."""
    return ["--model", spec["model"], "--train-data", spec["csv"], "--dataset-type", "csv",
            "--csv-img-key", "filepath", "--csv-caption-key", "title", "--csv-separator", ",",
            "--batch-size", str(spec["batch_size"]), "--epochs", "1", "--workers", str(spec["workers"]),
            "--lr", str(spec["lr"]), "--wd", str(spec["weight_decay"]), "--beta1", str(spec["beta1"]),
            "--beta2", str(spec["beta2"]), "--eps", str(spec["eps"]), "--warmup", str(LR_WARMUP_STEPS),
            "--precision", "fp32", "--seed", str(spec["seed"]), "--logs", spec["workdir"],
            "--name", "open_clip_train", "--report-to", "", "--log-every-n-steps", "1000000",
            "--save-frequency", "1"]


def kit_config(spec: dict[str, Any]) -> Config:
    return config.load("demo", model=spec["model"], pretrained="", pretrained_sha256="",
                       batch_size=spec["batch_size"], workers=spec["workers"], precision="fp32", device="cpu",
                       seed=spec["seed"], lr=spec["lr"], weight_decay=spec["weight_decay"],
                       beta1=spec["beta1"],
                       beta2=spec["beta2"], eps=spec["eps"], warmup_steps=LR_WARMUP_STEPS, schedule_epochs=1,
                       stop_epoch=1, submit_epoch=1, eval_every=1, log_every=1000000, threads=spec["threads"],
                       photometric_jitter_prob=0.0)  # the same augmentation as open_clip_train's defaults


def _child(side: str, spec_path: Path) -> None:
    """Train one side and write the end time of every optimizer step to spec['stamps']."""
    spec = json.loads(spec_path.read_text(encoding="utf-8"))
    torch.set_num_threads(spec["threads"])
    stamps: list[float] = []
    register_optimizer_step_post_hook(lambda *_: stamps.append(time.perf_counter()))
    # each child imports only its own side's trainer (the peer's process never loads the kit's loop)
    if side == "kit":
        from lib.train.launch import train

        run_dir = Path(spec["workdir"]) / "kit_run"
        run_dir.mkdir(parents=True)
        train(kit_config(spec), run_dir, spec["csv"], progress=False)
    else:
        from open_clip_train.main import main

        import lib.model.factory  # noqa: F401 - registers the kit's model configs with open_clip

        if main(peer_args(spec)) == -1:
            raise SystemExit("open_clip_train.main refused to start (see its log above)")
    Path(spec["stamps"]).write_text(json.dumps(stamps), encoding="utf-8")


def run_side(side: str, spec: dict[str, Any], workdir: Path) -> list[float]:
    """Run one side in a fresh interpreter; its optimizer-step end times (perf_counter seconds)."""
    workdir.mkdir(parents=True)
    spec = {**spec, "workdir": str(workdir), "stamps": str(workdir / "stamps.json")}
    spec_path = workdir / "spec.json"
    spec_path.write_text(json.dumps(spec), encoding="utf-8")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO_ROOT), os.environ.get("PYTHONPATH", "")]),
           "HF_HUB_OFFLINE": os.environ.get("HF_HUB_OFFLINE", "1")}
    done = subprocess.run([sys.executable, "-m", "tools.bench.train", side, str(spec_path)], cwd=workdir,
                          env=env, capture_output=True, text=True)
    if done.returncode:
        tail = (done.stdout + done.stderr)[-3000:]
        hint = (" (open_clip_train needs its training extras: `make bench` installs requirements-bench.txt)"
                if "ModuleNotFoundError" in tail else "")
        raise RuntimeError(f"training side {side!r} failed with exit code {done.returncode}{hint}:\n{tail}")
    return json.loads(Path(spec["stamps"]).read_text(encoding="utf-8"))


def samples_per_s(stamps: list[float], batch_size: int, warmup: int) -> float:
    """Throughput over the steps after the first `warmup` ones."""
    if len(stamps) < warmup + 2:
        raise ValueError(f"only {len(stamps)} optimizer steps recorded, need at least {warmup + 2}")
    return batch_size * (len(stamps) - 1 - warmup) / (stamps[-1] - stamps[warmup])


def _race(cfg: Config, image_paths: list[Path], captions: list[str], workdir: Path, *, steps: int,
          quick: bool) -> tuple[dict[str, Any], int, int, int]:
    """(spec, batch, warmup, rows) shared by the races: one epoch of warmup + 1 steps that open the
    timing window and `steps` timed ones, on a CSV cycling through the images."""
    batch = 8 if quick else cfg.batch_size
    warmup = 2 if quick else 5
    rows = batch * (warmup + steps + 1)
    spec = {"model": cfg.model, "csv": str(write_table(workdir / "train.csv", image_paths, captions, rows)),
            "batch_size": batch, "workers": cfg.workers, "seed": cfg.seed, "lr": cfg.lr,
            "weight_decay": cfg.weight_decay, "beta1": cfg.beta1, "beta2": cfg.beta2, "eps": cfg.eps}
    return spec, batch, warmup, rows


def _summary(rates: dict[str, list[float]]) -> dict[str, dict[str, Any]]:
    """Each side's best (the least disturbed) and median samples/s, and every run's."""
    return {side: {"best_samples_per_s": max(v), "median_samples_per_s": statistics.median(v),
                   "runs_samples_per_s": [round(x, 2) for x in v]} for side, v in rates.items()}


def _ratio(summary: dict[str, dict[str, Any]]) -> float:
    return summary["kit"]["best_samples_per_s"] / summary["peer"]["best_samples_per_s"]


def bench_train(cfg: Config, image_paths: list[Path], captions: list[str], workdir: Path, *, steps: int,
                quick: bool, threads: int, repeats: int) -> dict[str, Any]:
    """Alternate kit and peer runs; the figure is each side's best samples/s."""
    spec, batch, warmup, rows = _race(cfg, image_paths, captions, workdir, steps=steps, quick=quick)
    spec["threads"] = threads
    rates: dict[str, list[float]] = {side: [] for side in SIDES}
    walls: dict[str, list[float]] = {side: [] for side in SIDES}
    for r in range(repeats):
        for side in SIDES[::1 if r % 2 == 0 else -1]:
            t0 = time.perf_counter()
            stamps = run_side(side, spec, workdir / f"{side}_{r}")
            walls[side].append(round(time.perf_counter() - t0, 1))
            if len(stamps) != warmup + steps + 1:
                raise AssertionError(f"{side}: {len(stamps)} optimizer steps, expected {warmup + steps + 1}")
            rates[side].append(samples_per_s(stamps, batch, warmup))
    summary = _summary(rates)
    for side in SIDES:
        summary[side]["runs_wall_s_with_startup"] = walls[side]
    return {"model": cfg.model, "batch_size": batch, "workers": cfg.workers, "precision": "fp32",
            "timed_steps": steps, "warmup_steps": warmup, "pairs": rows, **summary, "ratio": _ratio(summary)}


def bench_threads(cfg: Config, image_paths: list[Path], captions: list[str], workdir: Path, *, steps: int,
                  quick: bool, cores: int, repeats: int) -> dict[str, Any]:
    """The kit's training loop with one torch thread ("kit") against one per core ("peer", torch's
    default), alternated: what the demo's `threads: 1` costs or saves on this machine."""
    spec, batch, warmup, _ = _race(cfg, image_paths, captions, workdir, steps=steps, quick=quick)
    rates: dict[str, list[float]] = {"kit": [], "peer": []}
    for r in range(repeats):
        for side, threads in (("kit", 1), ("peer", cores))[::1 if r % 2 == 0 else -1]:
            stamps = run_side("kit", {**spec, "threads": threads}, workdir / f"threads{threads}_{r}")
            rates[side].append(samples_per_s(stamps, batch, warmup))
    summary = _summary(rates)
    return {"model": cfg.model, "batch_size": batch, "workers": cfg.workers,
            "threads": {"kit": 1, "peer": cores}, "timed_steps": steps, **summary, "ratio": _ratio(summary)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.bench.train",
                                     description="one side of the training race (started by bench_train)")
    parser.add_argument("side", choices=SIDES)
    parser.add_argument("spec", type=Path, help="the race's SPEC.json")
    args = parser.parse_args(argv)
    _child(args.side, args.spec)
    return 0


if __name__ == "__main__":
    sys.exit(main())

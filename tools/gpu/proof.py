"""`make gpu-proof`: what only a GPU can show about the competition profile, in one prepared command.

    python -m tools.gpu [--cpu-dry-run] [--out runs/gpu-proof.json] [--parts encode,train,pipeline]
                                  [--encode-budget S] [--train-budget S] [--pipeline-budget S] [--commit SHA]

Three parts (docs/gpu.md), each within its own time budget, each recorded with its
error if it fails while the run goes on; the JSON file is rewritten as results come, so a run cut
off still leaves what it measured:
1. encode (tools.gpu.encode): gallery encoding with ViT-bigG-14, the kit's path against
   the reference's way;
2. train (tools.gpu.train): fine-tuning steps at the reference's batch, with gradient
   checkpointing, at the largest batch that fits, and the text trimming's saving;
3. pipeline (tools.gpu.pipeline): the smoke profile's steps on CUDA in bf16, then torchrun
   with NCCL.
ViT-bigG-14 gets random weights (the GPU machine cannot download laion2b's): the same size and speed.
`--cpu-dry-run` runs the same code with kit-micro-vit, tiny sizes and the CPU (gloo for torchrun)
in well under a minute; the test suite runs it, so a broken proof never waits for a GPU. What the
CPU cannot measure (memory, NCCL) is null, and so are the plan's figures for a model that is not bigG.

The first step, on a machine without open_clip (the lent GPU machine), installs the wheels that
`make gpu-wheels` fetched (tools.gpu.wheels); this module imports nothing else before it.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from lib.errors import KitError
from lib.files import atomic_write_text
from lib.paths import REPO_ROOT
from tools.gpu import wheels as gpu_wheels

DEFAULT_OUT = REPO_ROOT / "runs" / "gpu-proof.json"
PARTS = ("encode", "train", "pipeline")
PLAN_MODEL = "ViT-bigG-14"  # the model docs/gpu.md's plan is for
# Sizes and budgets (seconds): on the GPU the three parts end within about 7 minutes (docs/gpu.md), the
# dry run within one.
FULL = {"images": 2500, "reference_images": 300, "train_steps": 10, "train_warmup": 3, "ladder": "256,128,64",
        "encode_budget": 60.0, "train_budget": 180.0, "pipeline_budget": 120.0, "pipeline_workers": 4}
DRY = {"images": 40, "reference_images": 12, "train_steps": 2, "train_warmup": 1, "ladder": "16,8",
       "encode_budget": 20.0, "train_budget": 30.0, "pipeline_budget": 90.0, "pipeline_workers": 0}
DRY_PROFILE = {"model": "kit-micro-vit", "batch_size": 4, "eval_batch_size": 16, "workers": 0}


class NoGpu(KitError, RuntimeError):
    """The proof was asked for on a machine without a CUDA GPU."""


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m tools.gpu", description=__doc__.split("\n")[0])
    p.add_argument("--cpu-dry-run", action="store_true",
                   help="kit-micro-vit, tiny sizes, the CPU and gloo: checks the proof itself in a minute")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help="the JSON report (runs/gpu-proof.json)")
    p.add_argument("--parts", default=",".join(PARTS), help="comma-separated parts to run (default: all)")
    p.add_argument("--images", type=int, help="generated gallery images for the kit's encoding and training "
                                              f"(default {FULL['images']})")
    p.add_argument("--reference-images", type=int, help="images the reference's way encodes (default 300)")
    p.add_argument("--train-steps", type=int, help="timed steps per training setting (default 10)")
    p.add_argument("--train-warmup", type=int, help="untimed steps before them (default 3, at least 1)")
    p.add_argument("--ladder", help="batch sizes tried with checkpointing, largest first (256,128,64)")
    p.add_argument("--pipeline-workers", type=int, help="DataLoader workers of the pipeline part (default 4)")
    for part in PARTS:
        p.add_argument(f"--{part}-budget", type=float, help=f"seconds for the {part} part "
                                                            f"(default {FULL[part + '_budget']:.0f})")
    p.add_argument("--work-dir", type=Path, help="where the scratch folder goes (default: the system's temp)")
    p.add_argument("--keep", action="store_true", help="keep the scratch folder (images, runs) afterwards")
    p.add_argument("--commit", default="", help="the code's git commit, where the folder is no git checkout "
                                                "(the device tool's copy)")
    args = p.parse_args(argv)
    defaults = DRY if args.cpu_dry_run else FULL
    for key, value in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    args.parts = [part for part in args.parts.split(",") if part]
    unknown = sorted(set(args.parts) - set(PARTS))
    if unknown:
        p.error(f"unknown part(s) {', '.join(unknown)}: choose from {', '.join(PARTS)}")
    args.ladder = tuple(int(b) for b in args.ladder.split(","))
    if args.train_warmup < 1 or args.train_steps < 1:
        p.error("--train-warmup and --train-steps must be at least 1")
    return args


def machine(wheels: str, commit: str) -> dict[str, Any]:
    """Versions, the GPU, the code: what the figures were measured on."""
    import open_clip  # here, not at the top: importable only once ensure_open_clip has run (see run)
    import torch

    from lib.runs import git_commit

    cuda = torch.cuda.is_available()
    memory = torch.cuda.get_device_properties(0).total_memory if cuda else None
    try:
        stat = os.statvfs("/dev/shm")  # DataLoader workers hand batches over through it
        shm_gb = round(stat.f_frsize * stat.f_blocks / 1e9, 1)
    except OSError:
        shm_gb = None
    return {"python": platform.python_version(), "torch": torch.__version__, "cuda": torch.version.cuda,
            "cudnn": torch.backends.cudnn.version() if cuda else None,
            "gpu": torch.cuda.get_device_name(0) if cuda else None,
            "gpu_memory_gb": round(memory / 1e9, 1) if memory else None, "gpus": torch.cuda.device_count(),
            "cpu_cores": os.cpu_count(), "shm_gb": shm_gb, "open_clip": open_clip.__version__,
            "open_clip_from": wheels, "git_commit": commit or git_commit(), "host": platform.node()}


def setup_template() -> dict[str, Any]:
    """What the parts share: the generated images and the model, and how long each took."""
    return {"images": None, "images_s": None, "model": None, "built_on": None, "build_s": None,
            "parameters": None, "error": None}


def build_model(name: str, device: str, trim_text: bool) -> tuple[tuple, dict[str, Any]]:
    """(model, tokenizer, preprocess_cfg) with random weights, and how long it took. On a GPU the
    parameters are made there (a 2.5 B-parameter init on the CPU takes far longer)."""
    import torch  # here, not at the top: lib.model imports open_clip (see run)

    from lib.model.factory import create_model

    torch.manual_seed(0)
    start, where = time.perf_counter(), device
    try:
        with torch.device(device):
            parts = create_model(name, "", device=device, trim_text=trim_text)
    except RuntimeError:
        if device == "cpu":
            raise
        where = "cpu, then moved"  # should an init not work on the device, build it the usual way
        parts = create_model(name, "", device=device, trim_text=trim_text)
    model = parts[0]
    return parts, {"model": name, "built_on": where, "build_s": round(time.perf_counter() - start, 1),
                   "parameters": sum(p.numel() for p in model.parameters())}


def run(argv: list[str] | None = None) -> dict[str, Any]:
    """The proof; returns the report (also printed as a table and written to --out)."""
    args = parse_args(argv)
    started = time.perf_counter()
    if args.cpu_dry_run:  # a plumbing check on a CPU others share: a second thread only spins against them
        os.environ["OMP_NUM_THREADS"] = "1"  # torchrun's child too
    wheels = gpu_wheels.ensure_open_clip()
    # Imported here, not at the top: open_clip (which lib imports) may only become importable now,
    # from the wheels the line above installed on a GPU machine without it.
    import torch

    from lib import config as config_mod
    from tools import workload
    from tools.gpu import encode as gpu_proof_encode
    from tools.gpu import measure as gpu_measure
    from tools.gpu import pipeline as gpu_proof_pipeline
    from tools.gpu import train as gpu_proof_train

    if not args.cpu_dry_run and not torch.cuda.is_available():
        raise NoGpu("no CUDA GPU here: make gpu-proof needs one (ARGS=--cpu-dry-run checks it on the CPU)")
    device = "cpu" if args.cpu_dry_run else "cuda"
    if args.cpu_dry_run:
        torch.set_num_threads(1)
    cfg = config_mod.load("competition", pretrained="", pretrained_sha256="", device=device,
                          **(DRY_PROFILE if args.cpu_dry_run else {}))
    plan = cfg.model == PLAN_MODEL
    report: dict[str, Any] = {
        "schema": 1, "dry_run": args.cpu_dry_run, "complete": False,
        "started": dt.datetime.now().isoformat(timespec="seconds"), "seconds": None,
        "machine": machine(wheels, args.commit),
        "settings": {k: (list(v) if isinstance(v, tuple) else str(v) if isinstance(v, Path) else v)
                     for k, v in vars(args).items()},
        "setup": setup_template(),
        "encode": gpu_proof_encode.template(), "train": gpu_proof_train.template(),
        "pipeline": gpu_proof_pipeline.template()}

    def save() -> None:
        report["seconds"] = round(time.perf_counter() - started, 1)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(args.out, json.dumps(report, indent=1) + "\n")

    def part(name: str, measure: Callable[[], Any]) -> None:
        if name not in args.parts:
            report[name].update(status="skipped", error="not in --parts")
            return
        if report[name]["status"] == "failed":  # its set-up did
            return
        print(f"gpu-proof: {name} ...", file=sys.stderr, flush=True)
        try:
            measure()
        except Exception as error:  # noqa: BLE001 - recorded; the other parts still run
            report[name].update(status="failed", error=gpu_measure.failure(error))
        save()

    save()
    work = Path(tempfile.mkdtemp(prefix="kit-gpu-proof-", dir=args.work_dir))
    try:
        model_parts = images = None
        if {"encode", "train"} & set(args.parts):
            print(f"gpu-proof: images and {cfg.model} ...", file=sys.stderr, flush=True)
            try:
                t0 = time.perf_counter()
                images = workload.make_images(work / "images", args.images, size=gpu_proof_encode.real_size)
                report["setup"].update(images=len(images), images_s=round(time.perf_counter() - t0, 1))
                model_parts, built = build_model(cfg.model, device, cfg.trim_text_padding)
                report["setup"].update(built)
            except Exception as error:  # noqa: BLE001 - recorded; the pipeline part still runs
                report["setup"]["error"] = gpu_measure.failure(error)
                for name in ("encode", "train"):
                    report[name].update(status="failed", error=f"set-up failed: {report['setup']['error']}")
            save()
        part("encode", lambda: gpu_proof_encode.measure_encode(
            model_parts[0], cfg.model, model_parts[2], images, batch_size=cfg.eval_batch_size,
            workers=cfg.workers, reference_images=args.reference_images, budget_s=args.encode_budget,
            plan=plan, out=report["encode"]))
        part("train", lambda: gpu_proof_train.measure_train(
            model_parts, cfg, images, workload.captions(len(images)), work / "train", steps=args.train_steps,
            warmup=args.train_warmup, ladder=args.ladder, budget_s=args.train_budget, plan=plan,
            out=report["train"], progress=save))
        model_parts = None  # the pipeline part needs the GPU's memory
        gpu_measure.free(torch.device(device))
        part("pipeline", lambda: gpu_proof_pipeline.measure_pipeline(
            work / "pipeline", device=device, precision="auto" if args.cpu_dry_run else "bf16",
            workers=args.pipeline_workers, budget_s=args.pipeline_budget, out=report["pipeline"],
            progress=save))
        report["complete"] = all(report[p]["status"] == "ok" for p in args.parts)
    finally:
        save()
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    print(table(report))
    print(f"written: {args.out}")
    return report


def _num(value: Any, fmt: str = ",.1f", unit: str = "") -> str:
    return "-" if value is None else f"{value:{fmt}}{unit}"


def table(report: dict[str, Any]) -> str:
    """The report in rows: part, figure, measured, and docs/gpu.md's plan beside it."""
    m, enc, tr, pipe = report["machine"], report["encode"], report["train"], report["pipeline"]
    where = m["gpu"] or "the CPU (dry run)"
    rows = [f"gpu-proof: {report['setup']['model'] or '-'} on {where}, torch {m['torch']} "
            f"(CUDA {m['cuda']}), open_clip {m['open_clip']} ({m['open_clip_from']}), "
            f"commit {m['git_commit']}, {_num(report['seconds'], ',.0f', ' s')}",
            f"{'part':<9} {'figure':<46} {'measured':<34} plan (docs/gpu.md)"]
    setup = report["setup"]
    if setup["parameters"]:
        rows.insert(1, f"set-up: {setup['images']:,} images in {setup['images_s']} s; {setup['model']} "
                       f"({setup['parameters'] / 1e6:,.0f} M parameters, random weights) built on "
                       f"{setup['built_on']} in {setup['build_s']} s")
    if setup["error"]:
        rows.insert(1, f"set-up failed: {setup['error']}")

    def row(part: str, figure: str, measured: str, planned: str = "") -> None:
        rows.append(f"{part:<9} {figure:<46} {measured:<34} {planned}".rstrip())

    kit, ref, plan = enc["kit"], enc["reference"], enc["plan"] or {}
    row("encode", f"kit ({kit['precision']}, batch {kit['batch_size']}, {kit['workers']} workers)",
        f"{_num(kit['images_per_s'], unit=' img/s')}, {_num(kit['images'], ',d')} images, "
        f"{_num(kit['peak_memory_gb'], unit=' GB')}", _num(plan.get("kit_images_per_s"), ',.0f', " img/s"))
    row("encode", f"reference (fp32, PIL, one process, batch {ref['batch_size']})",
        f"{_num(ref['images_per_s'], unit=' img/s')}, {_num(ref['images'], ',d')} images",
        _num(plan.get("reference_images_per_s_a100"), unit=" img/s on an A100 (the reference's)"))
    row("encode", "encode_speedup_vs_reference_gpu", _num(enc["encode_speedup_vs_reference_gpu"], ".2f", "x"))
    row("encode", "embeddings agree: cosine min / mean",
        f"{_num(enc['agreement']['min_cosine'], '.4f')} / {_num(enc['agreement']['mean_cosine'], '.4f')}")
    row("encode", f"{enc['test_gallery_images']:,}-image test gallery: kit / reference",
        f"{_num(enc['projected_test_gallery_s']['kit'], unit=' s')} / "
        f"{_num(enc['projected_test_gallery_s']['reference'], unit=' s')}")
    for s in tr["settings"]:
        row("train", s["name"], f"{_num(s['samples_per_s'], unit=' samples/s')}, "
            f"{_num(s['peak_memory_gb'], unit=' GB')} [{s['status']}]",
            f"{_num(s['plan_samples_per_s'], ',.0f', ' samples/s')}, {_num(s['plan_memory_gb'], unit=' GB')}"
            if s["plan_memory_gb"] is not None else "")
        if s["error"]:
            rows.append(f"{'':<9}   {s['error']}")
    saving = tr["trim_text_saving"] or {}
    row("train", "trim_text_padding: step time saved", _num(saving.get("saving"), ".1%"),
        _num(saving.get("plan_saving"), ".0%"))
    row("train", "largest batch with checkpointing", _num(tr["largest_checkpointed_batch"], "d"))
    row("pipeline", "steps", " ".join(f"{k}:{v['status'] or '-'}" for k, v in pipe["steps"].items()))
    row("pipeline", "training log", str(pipe["train_log"] or "-"))
    row("pipeline", "val mAP@10 (official), submission queries",
        f"{_num(pipe['val_map10_official'], '.4f')}, {_num(pipe['submission_queries'], 'd')}")
    t = pipe["torchrun"]
    checks = t["collectives"]
    failed = [name for name, ok in checks.items() if ok is False]
    collectives = "failed: " + ", ".join(failed) if failed else "ok" if all(checks.values()) else "-"
    row("pipeline", "torchrun: backend, world, collectives, steps",
        f"{t['backend'] or '-'}, {_num(t['world_size'], 'd')}, {collectives}, {_num(t['steps'], 'd')}")
    if report["dry_run"]:
        rows.append("dry run: these figures check the plumbing (a tiny model, one CPU thread), not any speed")
    for name in PARTS:
        part = report[name]
        rows.append(f"{name}: {part['status']}" + (f" ({part['error']})" if part.get("error") else "")
                    + (f", {part['seconds']} s" if part.get("seconds") is not None else ""))
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    try:
        report = run(argv)
    except KitError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0 if all(report[p]["status"] in ("ok", "cut short", "skipped") for p in PARTS) else 1


if __name__ == "__main__":
    sys.exit(main())

"""GPU proof, part 3: the pipeline's device path end to end on small data, then torchrun.

The smoke profile's steps through the lib functions the notebooks call (no papermill: the GPU
machine has no Jupyter), on the device and precision given (cuda, bf16), each timed and recorded
with its error if it fails (the steps after a failed one are skipped):
data (lib.demo.dataset) -> foundation (lib.demo.foundation) -> prepare -> augment -> train
(lib.pipeline.fine_tune: lib.train with the val evaluator, in this process) -> infer -> torchrun.

torchrun: `torchrun --standalone --nproc_per_node=1 -m tools.gpu.pipeline --child ...`.
With one process, `launch` trains in-process and `torchrun -m lib.train` joins no process group
(the kit starts one only for a world of several processes), so on a one-GPU machine neither
reaches NCCL. The child therefore opens the process group itself, with the backend the kit would
use (lib.train.launch.process_group_backend: NCCL on a GPU, gloo on the CPU), runs the
collectives the training loop uses between GPUs (all_reduce, all_gather_object, open_clip's feature
gather with gradients), then trains a few steps through the kit's CLI, lib.train.launch.main,
inside that group. DDP itself needs two processes: the test suite runs it with gloo on the CPU.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from open_clip.loss import gather_features
from open_clip_train.distributed import world_info_from_env

from lib import config as config_mod
from lib import runs
from lib.augment.attribute_augmentation import augment_run
from lib.config import Config
from lib.data.prepare import AUGMENTED_TABLE, prepare
from lib.demo.dataset import ensure_demo_data
from lib.demo.foundation import ensure_foundation
from lib.eval.infer import infer
from lib.model.device import resolve_device, resolve_precision
from lib.paths import REPO_ROOT
from lib.pipeline.fine_tune import fine_tune
from lib.train.launch import main as train_cli
from lib.train.launch import process_group_backend
from lib.train.state import collect_result
from tools.gpu.measure import Budget, failure

STEPS = ("data", "foundation", "prepare", "augment", "train", "infer", "torchrun")
RUN_NAME = "pipeline"
COLLECTIVES = ("all_reduce", "all_gather_object", "all_gather_with_grad")
LOGGED_STEP = re.compile(r" \| step (\d+)/\d+ ")  # the training loop's out.log lines


def template() -> dict[str, Any]:
    return {"status": None, "error": None, "device": None, "precision": None, "workers": None,
            "seconds": None,
            "steps": {name: {"status": None, "seconds": None, "error": None} for name in STEPS},
            "train_log": None, "train_steps": None, "val_map10_official": None, "submission_queries": None,
            "torchrun": {"backend": None, "world_size": None, "nccl_version": None,
                         "collectives": dict.fromkeys(COLLECTIVES),
                         "cli_exit_code": None, "steps": None, "checkpoint": None, "exit_code": None,
                         "output_tail": None}}


def last_step(run_dir: Path) -> int | None:
    """The last optimizer step a run's out.log reports."""
    log = Path(run_dir) / "out.log"
    steps = LOGGED_STEP.findall(log.read_text(encoding="utf-8")) if log.is_file() else []
    return int(steps[-1]) if steps else None


def pipeline_config(work: Path, *, device: str, precision: str, workers: int) -> Config:
    """The smoke profile in `work` (its own data, foundation and runs: never the repository's)."""
    return config_mod.load("smoke", data_root=str(work / "data"), runs_root=str(work / "runs"),
                           pretrained=str(work / "data" / "foundation" / "foundation.pt"), run_name=RUN_NAME,
                           device=device, precision=precision, workers=workers)


def run_steps(steps: list[tuple[str, Callable[[], Any]]], record: dict, budget: Budget,
              progress: Callable[[], None] = lambda: None) -> None:
    """Each step in turn into record["steps"]: ok, failed (with its error), or skipped; `progress`
    is called after each."""
    blocked = ""
    for name, step in steps:
        entry = record["steps"][name]
        if blocked or budget.over():
            entry.update(status="skipped", error=blocked or "the part's time was up")
            continue
        start = time.perf_counter()
        try:
            step()
            entry["status"] = "ok"
        except Exception as error:  # noqa: BLE001 - recorded; the run goes on with the other parts
            entry.update(status="failed", error=failure(error))
            blocked = f"after {name} failed"
        entry["seconds"] = round(time.perf_counter() - start, 2)
        progress()


def measure_pipeline(work: Path, *, device: str, precision: str, workers: int, budget_s: float,
                     out: dict | None = None, progress: Callable[[], None] = lambda: None) -> dict[str, Any]:
    """Fill (and return) the part's record `out`, calling `progress` after each step."""
    out = out if out is not None else template()
    budget = Budget(budget_s)
    cfg = pipeline_config(work, device=device, precision=precision, workers=workers)
    resolved = resolve_device(device)
    out.update(status="running", device=str(resolved), precision=resolve_precision(precision, resolved),
               workers=workers)
    run_dir = cfg.path("runs_root") / RUN_NAME

    def train() -> None:
        fine_tune(cfg, run_dir, processes=1, progress=False)
        out["train_steps"] = last_step(run_dir)
        lines = (run_dir / "out.log").read_text(encoding="utf-8").splitlines()
        out["train_log"] = next((line.split(" | ", 1)[-1] for line in lines if " | training " in line), None)

    def infer_step() -> None:
        result = infer(cfg, run_dir, progress=False)
        out["val_map10_official"] = round(float(result.val_scores.loc["all", "map10_official"]), 4)
        submission = json.loads(result.submission_path.read_text(encoding="utf-8"))
        out["submission_queries"] = len(submission["results"])

    def torchrun_step() -> None:
        out["torchrun"].update(torchrun(cfg, work / "torchrun", run_dir / "data" / AUGMENTED_TABLE,
                                        timeout_s=max(30.0, budget.left())))
        done = out["torchrun"]
        if done["exit_code"] != 0 or done["cli_exit_code"] != 0:
            raise RuntimeError(f"torchrun exited {done['exit_code']}: {done['output_tail']}")

    run_steps([("data", lambda: ensure_demo_data(cfg, progress=False)),
               ("foundation", lambda: ensure_foundation(cfg, progress=False)),
               ("prepare", lambda: prepare(cfg, runs.create_run(cfg), progress=False)),
               ("augment", lambda: augment_run(cfg, run_dir, progress=False)),
               ("train", train), ("infer", infer_step), ("torchrun", torchrun_step)], out, budget, progress)
    statuses = [s["status"] for s in out["steps"].values()]
    out.update(status="ok" if set(statuses) == {"ok"} else "failed" if "failed" in statuses else "cut short",
               seconds=round(budget.elapsed(), 1))
    return out


def torchrun(cfg: Config, work: Path, table: Path, *, timeout_s: float) -> dict[str, Any]:
    """Run the child under torchrun with one process; its record plus torchrun's exit code."""
    work.mkdir(parents=True, exist_ok=True)
    cfg_path, result_path = work / "config.yaml", work / "result.json"
    cfg_path.write_text(config_mod.to_yaml(cfg), encoding="utf-8")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=1",
           "-m", "tools.gpu.pipeline", "--child", "--config", str(cfg_path), "--run-dir",
           str(work / "run"), "--table", str(table), "--result", str(result_path)]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO_ROOT), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.Popen(cmd, cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True)
    try:
        output, _ = proc.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # torchrun and its worker: the session it leads
        output, _ = proc.communicate()
        output += f"\n(killed after {timeout_s:.0f} s)"
    record = json.loads(result_path.read_text(encoding="utf-8")) if result_path.is_file() else {}
    record["exit_code"] = proc.returncode
    if proc.returncode != 0:
        record["output_tail"] = output[-1500:]
    return record


def check_collectives(device: torch.device) -> dict[str, bool]:
    """The collectives the training loop runs between processes, each checked against its result."""
    rank, world = dist.get_rank(), dist.get_world_size()
    counts = torch.tensor([-3 - rank, rank], device=device)
    dist.all_reduce(counts, op=dist.ReduceOp.MAX)
    gathered: list = [None] * world
    dist.all_gather_object(gathered, [f"bad_{rank}.jpg"])
    features = torch.ones(4, 8, device=device, requires_grad=True)
    images, texts = gather_features(features, features * 2, local_loss=True, gather_with_grad=True,
                                    rank=rank, world_size=world)
    (images.sum() + texts.sum()).backward()
    dist.barrier()
    return {"all_reduce": counts.tolist() == [-3, world - 1],
            "all_gather_object": gathered == [[f"bad_{r}.jpg"] for r in range(world)],
            "all_gather_with_grad": images.shape[0] == 4 * world and bool((features.grad == 3 * world).all())}


def nccl_version() -> str:
    version = torch.cuda.nccl.version()
    return ".".join(map(str, version)) if isinstance(version, tuple) else str(version)


def child(args: argparse.Namespace) -> int:
    """Under torchrun: the process group, the collectives, then a few training steps by the kit's CLI."""
    cfg = config_mod.load_saved(args.config)
    device = resolve_device(cfg.device, world_info_from_env()[0])
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group(process_group_backend(device))
    record: dict[str, Any] = {"backend": dist.get_backend(), "world_size": dist.get_world_size(),
                              "nccl_version": nccl_version() if device.type == "cuda" else None}
    try:
        record["collectives"] = check_collectives(device)
        record["cli_exit_code"] = train_cli(["--config", str(args.config), "--run-dir", str(args.run_dir),
                                             "--table", str(args.table), "--val-table", "", "--no-progress"])
        record["steps"] = last_step(args.run_dir)
        record["checkpoint"] = bool(collect_result(args.run_dir).checkpoints)
    finally:
        dist.destroy_process_group()
        if int(os.environ.get("RANK", "0")) == 0:
            Path(args.result).write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8")
    return 0 if record.get("cli_exit_code") == 0 and all(record["collectives"].values()) else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.gpu.pipeline",
                                     description="the GPU proof's torchrun child (started by make gpu-proof)")
    parser.add_argument("--child", action="store_true", required=True)
    parser.add_argument("--config", type=Path, required=True, help="a complete parameter file")
    parser.add_argument("--run-dir", type=Path, required=True)
    parser.add_argument("--table", type=Path, required=True, help="the train CSV")
    parser.add_argument("--result", type=Path, required=True, help="where the child writes its record")
    return child(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())

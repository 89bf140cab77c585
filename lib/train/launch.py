"""Fine-tuning entry points: `train` (in-process), `launch`, and the CLI (also torchrun's).

Training knows nothing of evaluation: the caller (lib.pipeline.fine_tune) passes an evaluator factory
and, for torchrun, the module each process starts in, whose main calls `main` here with that factory.
"""
from __future__ import annotations

import argparse
import datetime as dt
import os
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import torch
import torch.distributed as dist
from open_clip_train.distributed import is_using_distributed, world_info_from_env

from lib import config as config_mod
from lib import runs
from lib.config import Config
from lib.data.prepare import AUGMENTED_TABLE, val_queries_path
from lib.errors import KitError
from lib.model.device import resolve_device
from lib.paths import REPO_ROOT, portable
from lib.train.loop import TrainLoop
from lib.train.state import TrainResult, collect_result

Evaluator = Callable[[torch.nn.Module], dict]
EvaluatorFactory = Callable[[Config, Path], Evaluator | None]
Table = str | os.PathLike | pd.DataFrame


def train(cfg: Config, run_dir: str | os.PathLike, train_table: Table, *, val_table: Table | None = None,
          init_checkpoint: str | os.PathLike | None = None, evaluator: Evaluator | None = None,
          progress: bool = True, resume: str = "") -> TrainResult:
    """Fine-tune cfg.model (from init_checkpoint, else cfg.pretrained); `resume`: "" (a new run),
    "latest" or a checkpoint's path. `evaluator(model) -> {metric: value}` runs on rank 0 at epoch 0
    and every cfg.eval_every epochs; params.yaml is written when run_dir has none."""
    started = _init_distributed(cfg.device)
    run_dir = Path(run_dir)
    if not dist.is_initialized() or dist.get_rank() == 0:
        run_dir.mkdir(parents=True, exist_ok=True)
        if not (run_dir / runs.PARAMS).exists():
            runs.write_params(cfg, run_dir)
    try:
        loop = TrainLoop(cfg, run_dir, train_table, val_table, init_checkpoint, evaluator, progress, resume)
        return loop.fit()
    finally:
        if started:
            dist.destroy_process_group()


def _init_distributed(device_name: str) -> bool:
    """Join torchrun's process group (NCCL on GPU, gloo on CPU); True if this call started it."""
    if not is_using_distributed() or dist.is_initialized():
        return False
    device = resolve_device(device_name, world_info_from_env()[0])
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group(process_group_backend(device), timeout=dt.timedelta(hours=2))
    return True


def process_group_backend(device: torch.device) -> str:
    """torch.distributed's backend for a process on `device`: NCCL between GPUs, gloo between CPUs."""
    return "nccl" if device.type == "cuda" else "gloo"


def default_tables(run_dir: Path) -> tuple[Path, Path | None]:
    """train_augmented.csv when notebook 02 wrote it, else train.csv; the val table, when present."""
    data, val_csv = Path(run_dir) / "data", val_queries_path(run_dir)
    train_csv = data / AUGMENTED_TABLE if (data / AUGMENTED_TABLE).is_file() else data / "train.csv"
    return train_csv, (val_csv if val_csv.is_file() else None)


def launch(cfg: Config, run_dir: str | os.PathLike, *, evaluator_factory: EvaluatorFactory | None = None,
           entry: str = "lib.train", processes: int | None = None, progress: bool = True,
           resume: str = "") -> TrainResult:
    """Train the run's default_tables with every visible GPU (`processes`): torchrun in a subprocess
    when more than one, else in-process. Under torchrun each process starts in the module `entry`,
    whose main must build the same evaluator (an evaluator object cannot cross into its processes)."""
    run_dir = Path(run_dir)
    if processes is None:
        on_gpu = cfg.device in ("auto", "cuda") and torch.cuda.is_available()
        processes = torch.cuda.device_count() if on_gpu else 1
    train_table, val_table = default_tables(run_dir)
    if processes <= 1:
        evaluator = evaluator_factory(cfg, run_dir) if evaluator_factory else None
        return train(cfg, run_dir, train_table, val_table=val_table, evaluator=evaluator, progress=progress,
                     resume=resume)
    with tempfile.TemporaryDirectory() as tmp:
        cfg_path = Path(tmp) / "config.yaml"  # this call's parameters, which may differ from the run's
        cfg_path.write_text(config_mod.to_yaml(cfg), encoding="utf-8")
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}",
               "-m", entry, "--config", str(cfg_path), "--run-dir", str(run_dir),
               "--table", str(train_table), "--val-table", str(val_table or "")]
        if not progress:
            cmd += ["--no-progress"]
        if resume:
            cmd += ["--resume", resume]
        path = os.pathsep.join([str(REPO_ROOT), os.environ.get("PYTHONPATH", "")])
        done = subprocess.run(cmd, cwd=REPO_ROOT, env={**os.environ, "PYTHONPATH": path})
    if done.returncode:
        raise KitError(f"torchrun with {processes} processes failed (exit {done.returncode}); "
                       f"see {run_dir / 'out.log'} and the output above. Command: {' '.join(cmd)}")
    return collect_result(run_dir, cfg.submit_epoch)


def main(argv: list[str] | None = None, evaluator_factory: EvaluatorFactory | None = None,
         prog: str = "python -m lib.train") -> int:
    """The command line: train a run folder (torchrun's processes start here, through `entry`)."""
    parser = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n")[0])
    parser.add_argument("--run-dir", required=True, help="run directory (created if missing)")
    parser.add_argument("--config", default="", help="parameters: a profile name or YAML, for a run folder "
                                                     "without params.yaml (default: the run's params.yaml)")
    parser.add_argument("--table", default="", help="train CSV (default: <run-dir>/data/train_augmented.csv "
                                                     "if present, else train.csv)")
    parser.add_argument("--val-table", help="val CSV for the val loss (default: "
                                             "<run-dir>/data/val.csv if present; '' for none)")
    parser.add_argument("--init-checkpoint", help="weights to start from instead of cfg.pretrained")
    parser.add_argument("--resume", default="",
                        help="latest (checkpoints/latest.pt) or a checkpoint to continue from")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("overrides", nargs="*", help="key=value parameter overrides (e.g. lr=1e-5)")
    args = parser.parse_args(argv)
    try:
        run_dir = Path(args.run_dir).resolve()
        cfg = _config(args.config, run_dir, config_mod.parse_overrides(args.overrides))
        run_dir.mkdir(parents=True, exist_ok=True)
        default_train, default_val = default_tables(run_dir)
        table = Path(args.table) if args.table else default_train
        if not table.is_file():
            raise KitError(f"no train table {table}: run notebooks 01 (and 02) first, or pass --table")
        val_table = default_val if args.val_table is None else (args.val_table or None)
        rank0 = not is_using_distributed() or world_info_from_env()[1] == 0
        evaluator = evaluator_factory(cfg, run_dir) if evaluator_factory and rank0 else None
        train(cfg, run_dir, table, val_table=val_table, init_checkpoint=args.init_checkpoint,
              evaluator=evaluator, progress=not args.no_progress, resume=args.resume)
    except KitError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"stopped: interrupted; the last checkpoint is kept. Continue with: {prog} "
              f"--run-dir {portable(args.run_dir)} --resume latest", file=sys.stderr)
        return 130
    return 0


def _config(config: str, run_dir: Path, overrides: dict) -> Config:
    """The run's params.yaml; or --config: a complete parameter file (what launch() hands torchrun,
    or a params.yaml), else a profile."""
    if not config:
        return runs.read_params(run_dir).replace(**overrides)
    path = Path(config)
    complete = set(config_mod.valid_keys()) | {config_mod.PROVENANCE_KEY}
    if path.is_file() and set(config_mod.valid_keys()) <= set(config_mod.read_yaml(path)) <= complete:
        return config_mod.load_saved(path).replace(**overrides)
    return config_mod.load(config, **overrides)

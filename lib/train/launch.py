"""Fine-tuning entry points: `train` (in-process), `launch`, and the CLI (also torchrun's).

open_clip's recipe (ClipLoss, AdamW, warmup + cosine, AMP), resumable exactly. The same function
runs in the notebook's process or, under torchrun, once per GPU with DDP:
    python -m lib.train --run-dir runs/<profile>/<name> [key=value ...]     (the run's params.yaml)
    torchrun --nproc_per_node=N -m lib.train --run-dir runs/<profile>/<name> [key=value ...]
`launch` picks between the two: torchrun in a subprocess when more than one GPU is visible.

Training knows nothing of evaluation: a caller passes an evaluator factory, and for torchrun the
module each process starts in (`entry`, a module whose main calls `main` here with the same
factory). lib.pipeline.fine_tune is that caller for the pipeline: it wires the val evaluator in.
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
    """Fine-tune cfg.model (weights: init_checkpoint, else cfg.pretrained) on the table's pairs.

    `resume`: "" (a new run; a folder that holds checkpoints is refused), "latest" (continue from
    checkpoints/latest.pt, or start when there is none) or a checkpoint's path.

    Writes into run_dir: params.yaml (when the folder has none yet), out.log, metrics.jsonl,
    checkpoints/epoch_N.pt + latest.pt. `evaluator(model) -> {metric: value}` runs on rank 0 before
    the first step ("epoch 0") and every cfg.eval_every epochs, beside the val loss on `val_table`.
    The best epoch is chosen by val map10_official (evaluator), else by val loss, else the last.
    """
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
    local_rank, _, _ = world_info_from_env()
    device = resolve_device(device_name, local_rank)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group(process_group_backend(device), timeout=dt.timedelta(hours=2))
    return True


def process_group_backend(device: torch.device) -> str:
    """torch.distributed's backend for a process on `device`: NCCL between GPUs, gloo between CPUs."""
    return "nccl" if device.type == "cuda" else "gloo"


def default_tables(run_dir: Path) -> tuple[Path, Path | None]:
    """The prepared tables of a run: train_augmented.csv when notebook 02 wrote it, else train.csv; the
    val table the run scores (lib.data.prepare.val_queries_path)."""
    data = Path(run_dir) / "data"
    train_csv = data / AUGMENTED_TABLE
    val_csv = val_queries_path(run_dir)
    train_csv = train_csv if train_csv.is_file() else data / "train.csv"
    return train_csv, (val_csv if val_csv.is_file() else None)


def launch(cfg: Config, run_dir: str | os.PathLike, train_table: str | os.PathLike | None = None, *,
           val_table: str | os.PathLike | None = None, evaluator_factory: EvaluatorFactory | None = None,
           entry: str = "lib.train", init_checkpoint: str | os.PathLike | None = None,
           processes: int | None = None, progress: bool = True, resume: str = "") -> TrainResult:
    """Train with every visible GPU: torchrun in a subprocess when processes > 1, else in-process.

    `val_table` defaults to <run_dir>/data/val.csv when present ("" for none). `processes`
    defaults to the number of visible GPUs (1 on a CPU machine). `evaluator_factory(cfg, run_dir)
    -> evaluator` runs in the rank-0 process. Under torchrun each process starts in the module
    `entry` (`-m entry`), whose main must build the same evaluator (an evaluator object cannot cross
    into torchrun's processes; the module that makes it can be named).
    """
    run_dir = Path(run_dir)
    if processes is None:
        on_gpu = cfg.device in ("auto", "cuda") and torch.cuda.is_available()
        processes = torch.cuda.device_count() if on_gpu else 1
    default_train, default_val = default_tables(run_dir)
    train_table = train_table or default_train
    val_table = default_val if val_table is None else (val_table or None)
    if processes <= 1:
        evaluator = evaluator_factory(cfg, run_dir) if evaluator_factory else None
        return train(cfg, run_dir, train_table, val_table=val_table, init_checkpoint=init_checkpoint,
                     evaluator=evaluator, progress=progress, resume=resume)
    with tempfile.TemporaryDirectory() as tmp:
        cfg_path = Path(tmp) / "config.yaml"  # this call's parameters, which may differ from the run's
        cfg_path.write_text(config_mod.to_yaml(cfg), encoding="utf-8")
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}",
               "-m", entry, "--config", str(cfg_path), "--run-dir", str(run_dir),
               "--table", str(train_table), "--val-table", str(val_table or "")]
        if init_checkpoint:
            cmd += ["--init-checkpoint", str(init_checkpoint)]
        if not progress:
            cmd += ["--no-progress"]
        if resume:
            cmd += ["--resume", resume]
        path = os.pathsep.join([str(REPO_ROOT), os.environ.get("PYTHONPATH", "")])
        env = {**os.environ, "PYTHONPATH": path}
        done = subprocess.run(cmd, cwd=REPO_ROOT, env=env)
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
    parser.add_argument("--val-table", default=None, help="val CSV for the val loss (default: "
                                                          "<run-dir>/data/val.csv if present; '' for none)")
    parser.add_argument("--init-checkpoint", default=None,
                        help="weights to start from instead of cfg.pretrained")
    parser.add_argument("--resume", default="", help="latest (checkpoints/latest.pt) or a checkpoint to "
                                                     "continue from")
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
        evaluator = None
        if evaluator_factory and (not is_using_distributed() or world_info_from_env()[1] == 0):
            evaluator = evaluator_factory(cfg, run_dir)
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


if __name__ == "__main__":
    sys.exit(main())

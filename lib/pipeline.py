"""`make reproduce`: execute the numbered notebooks with papermill into one run directory.

The notebooks are the record a person reads; this runner only sequences them, stops at the first
failure with the notebook's name and the failing cell's error, and keeps the executed copy.

    python -m lib.pipeline [--profile demo|competition|smoke|FILE.yaml] [key=value ...]
    python -m lib.pipeline --resume runs/<name> [--from STEP] [key=value ...]

A run survives what happens to it: `--resume` continues it from the first step that did not
complete (lib.steps verifies what the completed ones wrote), and training from its latest
checkpoint, so that a run killed at any moment ends with the same bytes as one never stopped.
`--from STEP` runs STEP and the later steps again (e.g. 04_infer after changing the query policy);
a retrained 03_train first moves the old checkpoints aside. Overrides given with --resume are
recorded in the run's params.yaml. No wall-clock limit stops a healthy run (`--cell-timeout`
sets one); a hung DataLoader worker is caught where it can hang (lib.data.images.WORKER_TIMEOUT_S).
"""
from __future__ import annotations

import argparse
import datetime as dt
import errno
import json
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

from lib import config as config_mod
from lib import preflight, runs, steps
from lib.config import Config
from lib.errors import KitError
from lib.files import DiskFull
from lib.paths import REPO_ROOT, portable
from lib.steps import PIPELINE

NOTEBOOK_DIR = REPO_ROOT / "notebooks"
TRAINING_OUTPUTS = ("checkpoints", "metrics.jsonl", "out.log", "tensorboard")  # moved aside to retrain


class NotebookFailed(KitError, RuntimeError):
    """A pipeline notebook raised; the executed copy is kept for reading."""


class StepStopped(KitError, RuntimeError):
    """A step stopped (a refusal, a failed cell, a full disk, Ctrl-C); what completed is kept and the
    message ends with the command that continues the run."""

    def __init__(self, message: str, interrupted: bool = False):
        super().__init__(message)
        self.interrupted = interrupted


def pipeline_notebooks() -> list[str]:
    """The steps that exist in this checkout, in order."""
    return [name for name in PIPELINE if (NOTEBOOK_DIR / f"{name}.ipynb").exists()]


def ensure_kernel_env() -> None:
    """The kernel runs in notebooks/: let it import `lib`, never reach for a model hub, and keep
    progress bars to a few lines a minute in the stored notebook (a 126k-image loop would store
    every refresh)."""
    paths = os.environ.get("PYTHONPATH", "").split(os.pathsep)
    if str(REPO_ROOT) not in paths:
        os.environ["PYTHONPATH"] = os.pathsep.join([str(REPO_ROOT), *filter(None, paths)])
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TQDM_MININTERVAL", "20")
    os.environ.pop("MPLBACKEND", None)  # a kernel shows figures with its inline backend only


def run_notebook(name: str, out_dir: Path, parameters: dict[str, Any], timeout_s: int | None = None,
                 log=print) -> Path:
    """Execute one notebook with papermill into out_dir/<name>.ipynb (written whole: papermill saves
    into a partial file that replaces it at the end); on failure raise with the cell's error."""
    import papermill as pm
    from papermill.exceptions import PapermillExecutionError

    ensure_kernel_env()
    source = NOTEBOOK_DIR / f"{name}.ipynb"
    declared = pm.inspect_notebook(str(source))  # pass each notebook only the parameters it declares
    parameters = {key: value for key, value in parameters.items() if key in declared}
    target = out_dir / f"{name}.ipynb"
    partial = out_dir / f".{name}.partial.ipynb"
    start = time.monotonic()
    log(f"[{name}] running -> {target}")
    try:
        pm.execute_notebook(
            str(source), str(partial), parameters=parameters, cwd=str(NOTEBOOK_DIR),
            kernel_name="python3", execution_timeout=timeout_s, progress_bar=False,
            log_output=False, stdout_file=None, stderr_file=None,
        )
    except PapermillExecutionError as err:
        os.replace(partial, target)  # the failed notebook, whole, for reading
        raise NotebookFailed(
            f"{name} failed in cell {err.exec_count}: {err.ename}: {err.evalue}\n"
            f"the executed notebook is kept: {target}"
        ) from None
    except OSError as err:
        if err.errno == errno.ENOSPC:
            raise DiskFull(target) from None
        raise
    os.replace(partial, target)
    log(f"[{name}] done in {time.monotonic() - start:.0f} s")
    return target


def _execute(run_dir: Path, names: list[str], parameters: dict[str, Any], timeout_s: int | None,
             log, resuming: bool = False) -> None:
    """Run the steps in order, recording each one that completes; a stop names the way on."""
    runs.hold(run_dir)
    current = names[0]
    try:
        for current in names:
            resume = {"resume": "latest"} if resuming and current == "03_train" else {}
            run_notebook(current, run_dir, {**parameters, **resume}, timeout_s, log=log)
            steps.mark_done(run_dir, current)
    except (KitError, KeyboardInterrupt) as err:
        interrupted = isinstance(err, KeyboardInterrupt)
        what = f"interrupted during {current}" if interrupted else str(err)
        raise StepStopped(f"{what}\ncontinue with: make reproduce RESUME={portable(run_dir)}",
                          interrupted) from None


def run_pipeline(cfg: Config, notebooks: list[str] | None = None, log=print,
                 extra_parameters: dict[str, Any] | None = None, timeout_s: int | None = None) -> Path:
    """Create the run (its params.yaml is the notebooks' only source of parameters) and execute the
    notebooks in order into it."""
    run_dir = runs.create_run(cfg)
    steps.note(run_dir, "started", profile=cfg.profile)
    log(f"run directory: {run_dir}")
    params = {"run_dir": str(run_dir), **(extra_parameters or {})}
    _execute(run_dir, notebooks or pipeline_notebooks(), params, timeout_s, log)
    return run_dir


def resume_pipeline(run_dir: str | Path, from_step: str = "", overrides: dict[str, Any] | None = None,
                    log=print, extra_parameters: dict[str, Any] | None = None,
                    timeout_s: int | None = None) -> Path:
    """Continue a run: the first step that did not complete (or `from_step`) and every later one."""
    run_dir = runs.find_run(run_dir)
    runs.wait_until_idle(run_dir)
    order = pipeline_notebooks()
    if overrides:
        cfg = runs.read_params(run_dir).replace(**overrides)
        runs.write_params(cfg, run_dir)
    done = steps.completed(run_dir, order)
    if from_step and from_step not in order:
        raise config_mod.ConfigError(f"--from {from_step}: not a step; the steps are {', '.join(order)}")
    start = from_step or next((name for name in order if name not in done), "")
    if not start:
        log(f"{run_dir}: every step has completed; nothing to do (--from STEP runs steps again)")
        return run_dir
    if start == "03_train" and from_step and (run_dir / "checkpoints").exists():
        _move_aside(run_dir, log)
    steps.forget_from(run_dir, start, order)
    steps.note(run_dir, "continued", step=start, overrides=overrides or {})
    log(f"continuing {run_dir} from {start}" + (f" with {overrides}" if overrides else ""))
    params = {"run_dir": str(run_dir), **(extra_parameters or {})}
    _execute(run_dir, order[order.index(start):], params, timeout_s, log, resuming=True)
    return run_dir


def _move_aside(run_dir: Path, log) -> None:
    """Retraining a finished run: its training outputs go to superseded/<time>/, never deleted."""
    aside = run_dir / "superseded" / dt.datetime.now().strftime("%Y_%m_%d-%H_%M_%S")
    aside.mkdir(parents=True)
    for name in TRAINING_OUTPUTS:
        if (run_dir / name).exists():
            shutil.move(str(run_dir / name), str(aside / name))
    log(f"the previous training outputs are kept in {aside}")


def run_review(record: bool = False, log=print) -> Path:
    """Execute 05_quick_review on best-result-review/ (into it when `record`, after a promote)."""
    from lib import review

    if not (review.REVIEW_DIR / "params.yaml").exists():
        raise NotebookFailed(f"{review.REVIEW_DIR} holds no record yet: make promote RUN=runs/<name>")
    out_dir = REPO_ROOT / "runs" / "quick-review"
    target_dir = review.REVIEW_DIR if record else out_dir.parent / "quick-review-notebook"
    target_dir.mkdir(parents=True, exist_ok=True)
    params = {"review_dir": str(review.REVIEW_DIR.relative_to(REPO_ROOT)),
              "out_dir": str(out_dir.relative_to(REPO_ROOT))}
    path = run_notebook("05_quick_review", target_dir, params, log=log)
    log(f"quick review passed: the submission regenerated from {review.REVIEW_DIR.name}/ matches; "
        f"executed notebook: {path}")
    return path


def report(run_dir: Path, log=print) -> None:
    """The figures a person wants at the end: where things are and the scores."""
    scores = run_dir / "scores.json"
    log(f"results: {run_dir}  (also runs/latest)")
    if (run_dir / "submission.json").exists():
        log(f"submission: {run_dir / 'submission.json'}")
    if scores.exists():
        data = json.loads(scores.read_text())
        shown = [f"{split} {data[split]['map10_official']:.4f} / {data[split]['map10_standard']:.4f}"
                 for split in ("val", "test_A", "test_B") if split in data]
        log("mAP@10 official / standard: " + ", ".join(shown) + "  (choose on val and A; B is reported)")
        log(f"all scores: {scores}")


def _steps_argument(value: str) -> list[str]:
    names = [v.strip() for v in value.split(",") if v.strip()]
    unknown = [n for n in names if n not in PIPELINE]
    if not names or unknown:
        raise argparse.ArgumentTypeError(f"expected steps among {','.join(PIPELINE)} separated by commas, "
                                         f"got {value!r}")
    return names


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lib.pipeline", description=__doc__.split("\n")[0])
    parser.add_argument("--profile", default="demo",
                        help="configs/<profile>.yaml or a YAML file (default demo)")
    parser.add_argument("--notebooks", type=_steps_argument, default=None,
                        help="a subset of the steps, comma-separated: " + ",".join(PIPELINE))
    parser.add_argument("--resume", default="", metavar="RUN", help="continue the run in this folder")
    parser.add_argument("--from", dest="from_step", default="", metavar="STEP",
                        help="with --resume: run this step and the later ones again")
    parser.add_argument("--cell-timeout", type=int, default=None, metavar="S",
                        help="stop a notebook cell that runs longer than S seconds (default: no limit)")
    parser.add_argument("--review", action="store_true", help="run 05_quick_review on best-result-review/")
    parser.add_argument("--record", action="store_true",
                        help="with --review: write the executed copy into the record")
    parser.add_argument("overrides", nargs="*", help="key=value parameter overrides")
    args = parser.parse_args(argv)
    try:
        if args.review:
            run_review(record=args.record)
            return 0
        overrides = config_mod.parse_overrides(args.overrides)
        if args.from_step and not args.resume:
            raise config_mod.ConfigError("--from needs --resume RUN (make reproduce RESUME=runs/<name> "
                                         "ARGS='--from 04_infer')")
        if args.resume:
            run_dir = resume_pipeline(args.resume, args.from_step, overrides, timeout_s=args.cell_timeout)
        else:
            cfg = config_mod.load(args.profile, **overrides)
            preflight.check(cfg)
            run_dir = run_pipeline(cfg, args.notebooks, timeout_s=args.cell_timeout)
    except StepStopped as err:
        print(f"{'stopped' if err.interrupted else 'error'}: {err}", file=sys.stderr)
        return 130 if err.interrupted else 1
    except KeyboardInterrupt:
        print("stopped: interrupted", file=sys.stderr)
        return 130
    except KitError as err:  # a refusal says what to do; anything else is a bug and keeps its traceback
        print(f"error: {err}", file=sys.stderr)
        return 1
    report(run_dir)
    return 0


if __name__ == "__main__":
    sys.exit(main())

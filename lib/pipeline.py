"""`make reproduce`: execute the numbered notebooks with papermill into one run directory.

The notebooks are the record a person reads; this runner only sequences them, stops at the first
failure with the notebook's name and the failing cell's error, and keeps the executed copy.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from lib import config as config_mod
from lib import preflight, runs
from lib.config import Config
from lib.errors import KitError
from lib.paths import REPO_ROOT

NOTEBOOK_DIR = REPO_ROOT / "notebooks"
PIPELINE = ("01_prepare", "02_augment", "03_train", "04_infer")
TIMEOUT_S = {"demo": 1800, "smoke": 600, "competition": 48 * 3600}


class NotebookFailed(KitError, RuntimeError):
    """A pipeline notebook raised; the executed copy is kept for reading."""


def pipeline_notebooks() -> list[str]:
    """The steps that exist in this checkout, in order."""
    return [name for name in PIPELINE if (NOTEBOOK_DIR / f"{name}.ipynb").exists()]


def ensure_kernel_env() -> None:
    """The kernel runs in notebooks/: let it import `lib` and never reach for a model hub."""
    paths = os.environ.get("PYTHONPATH", "").split(os.pathsep)
    if str(REPO_ROOT) not in paths:
        os.environ["PYTHONPATH"] = os.pathsep.join([str(REPO_ROOT), *filter(None, paths)])
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.pop("MPLBACKEND", None)  # a kernel shows figures with its inline backend only


def run_notebook(name: str, out_dir: Path, parameters: dict[str, Any], timeout_s: int,
                 log=print) -> Path:
    """Execute one notebook with papermill; on failure raise with the cell's error and the copy."""
    import papermill as pm
    from papermill.exceptions import PapermillExecutionError

    ensure_kernel_env()
    source = NOTEBOOK_DIR / f"{name}.ipynb"
    target = out_dir / f"{name}.ipynb"
    start = time.monotonic()
    log(f"[{name}] running -> {target}")
    try:
        pm.execute_notebook(
            str(source), str(target), parameters=parameters, cwd=str(NOTEBOOK_DIR),
            kernel_name="python3", execution_timeout=timeout_s, progress_bar=False,
            log_output=False, stdout_file=None, stderr_file=None,
        )
    except PapermillExecutionError as err:
        raise NotebookFailed(
            f"{name} failed in cell {err.exec_count}: {err.ename}: {err.evalue}\n"
            f"the executed notebook is kept: {target}"
        ) from None
    log(f"[{name}] done in {time.monotonic() - start:.0f} s")
    return target


def run_pipeline(cfg: Config, notebooks: list[str] | None = None, log=print,
                 extra_parameters: dict[str, Any] | None = None) -> Path:
    """Create the run (its params.yaml is the notebooks' only source of parameters) and execute the
    notebooks in order into it."""
    run_dir = runs.create_run(cfg)
    params = {"run_dir": str(run_dir), **(extra_parameters or {})}
    timeout_s = TIMEOUT_S.get(cfg.profile, TIMEOUT_S["competition"])
    log(f"run directory: {run_dir}")
    for name in notebooks or pipeline_notebooks():
        run_notebook(name, run_dir, params, timeout_s, log=log)
    return run_dir


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
    path = run_notebook("05_quick_review", target_dir, params, TIMEOUT_S["demo"], log=log)
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lib.pipeline", description=__doc__)
    parser.add_argument("--profile", default="demo",
                        help="configs/<profile>.yaml or a YAML file (default demo)")
    parser.add_argument("--notebooks", nargs="*", help="a subset of: " + " ".join(PIPELINE))
    parser.add_argument("--review", action="store_true", help="run 05_quick_review on best-result-review/")
    parser.add_argument("--record", action="store_true",
                        help="with --review: write the executed copy into the record")
    parser.add_argument("overrides", nargs="*", help="key=value parameter overrides")
    args = parser.parse_args(argv)
    if args.review:
        try:
            run_review(record=args.record)
        except KitError as err:
            print(f"error: {err}", file=sys.stderr)
            return 1
        return 0
    try:
        cfg = config_mod.load(args.profile, **config_mod.parse_overrides(args.overrides))
        preflight.check(cfg)
        run_dir = run_pipeline(cfg, args.notebooks)
    except KitError as err:  # a refusal says what to do; anything else is a bug and keeps its traceback
        print(f"error: {err}", file=sys.stderr)
        return 1
    report(run_dir)
    return 0


if __name__ == "__main__":
    sys.exit(main())

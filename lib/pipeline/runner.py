"""`make reproduce`: execute the numbered notebooks with papermill into one run directory.

    python -m lib.pipeline [--profile demo|competition|smoke|FILE.yaml] [key=value ...]
    python -m lib.pipeline --resume runs/<profile>/<name> [--from STEP] [key=value ...]

`--resume` continues a run from the first step that did not complete (lib.steps), and training from
its latest checkpoint when made from the same inputs, so that a run killed at any moment ends with
the same bytes as one never stopped; parameter changes redo the steps they affect (docs/running.md).
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import os
import shutil
import sys
from pathlib import Path
from typing import Any

from lib import config as config_mod
from lib import runs, steps
from lib.config import Config
from lib.errors import KitError
from lib.paths import REPO_ROOT, portable
from lib.pipeline import preflight
from lib.pipeline.notebooks import NOTEBOOK_DIR, Log, NotebookFailed, run_notebook
from lib.record import figures, review
from lib.steps import PIPELINE, TRAIN_STEP

TRAINING_OUTPUTS = ("checkpoints", "metrics.jsonl", "out.log", "tensorboard", "soup.json")  # moved to retrain


class StepStopped(KitError, RuntimeError):
    """A step stopped (a refusal, a failed cell, a full disk, Ctrl-C); the message ends with the way on."""

    def __init__(self, message: str, interrupted: bool = False):
        super().__init__(message)
        self.interrupted = interrupted


def pipeline_notebooks() -> list[str]:
    """The steps that exist in this checkout, in order."""
    return [name for name in PIPELINE if (NOTEBOOK_DIR / f"{name}.ipynb").exists()]


def _execute(run_dir: Path, cfg: Config, names: list[str], timeout_s: int | None, log: Log,
             retrain: bool = False) -> None:
    """Run the steps in order, recording each start and completion. Training continues from its
    checkpoints only as the first step to run, unless `retrain`, and from the same inputs; otherwise
    they move aside first. A stop names the way on."""
    runs.hold(run_dir)
    current = names[0]
    params = {"run_dir": portable(run_dir)}
    try:
        for index, current in enumerate(names):
            extra = {}
            if current == TRAIN_STEP and (run_dir / "checkpoints").exists():
                if index == 0 and not retrain and steps.may_continue(run_dir, current, cfg):
                    extra = {"resume": "latest"}
                else:
                    _move_aside(run_dir, log)
            steps.begin(run_dir, current, cfg)
            stats: dict[str, Any] = {}
            run_notebook(current, run_dir, {**params, **extra}, timeout_s, log=log, stats=stats)
            steps.mark_done(run_dir, current, **stats)
    except (KitError, KeyboardInterrupt) as err:
        interrupted = isinstance(err, KeyboardInterrupt)
        what = f"interrupted during {current}" if interrupted else str(err)
        resume = runs.resume_command(run_dir)
        way_on = "" if resume in what else f"\ncontinue with: {resume}"
        raise StepStopped(what + way_on, interrupted) from None


def run_pipeline(cfg: Config, notebooks: list[str] | None = None, log: Log = print,
                 timeout_s: int | None = None) -> Path:
    """Create the run (its params.yaml is the notebooks' only source of parameters) and execute them."""
    run_dir = runs.create_run(cfg)
    steps.record_parameters(run_dir, cfg)
    steps.note(run_dir, "started", profile=cfg.profile)
    log(f"run directory: {portable(run_dir)}")
    _execute(run_dir, cfg, notebooks or pipeline_notebooks(), timeout_s, log)
    return run_dir


def resume_pipeline(run_dir: str | Path, from_step: str = "", overrides: dict[str, Any] | None = None,
                    log: Log = print, timeout_s: int | None = None) -> Path:
    """Continue a run from the first step not completed, affected by a change, or `from_step`."""
    run_dir = runs.find_run(run_dir)
    order = pipeline_notebooks()
    if from_step and from_step not in order:
        raise config_mod.ConfigError(f"--from {from_step}: not a step; the steps are {', '.join(order)}")
    runs.wait_until_idle(run_dir)
    steps.adopt_hand_edits(run_dir)
    cfg = runs.read_params(run_dir)
    if overrides:
        cfg, _ = steps.change_parameters(run_dir, overrides, by="make reproduce RESUME= (command line)")
    done = steps.completed(run_dir, order)
    pending = [name for name in order if name not in done]
    start = min([s for s in (from_step, pending[0] if pending else "") if s], key=order.index, default="")
    if not start:
        log(f"{portable(run_dir)}: every step has completed with these parameters; nothing to do "
            "(--from STEP runs steps again)")
        return run_dir
    steps.forget_from(run_dir, start, order)
    steps.note(run_dir, "continued", step=start, overrides=overrides or {})
    log(f"continuing {portable(run_dir)} from {start}" + (f" with {overrides}" if overrides else ""))
    _execute(run_dir, cfg, order[order.index(start):], timeout_s, log, retrain=from_step == TRAIN_STEP)
    return run_dir


def _move_aside(run_dir: Path, log: Log) -> None:
    """Training again: the previous training outputs go to superseded/<time>/, never deleted."""
    present = [name for name in TRAINING_OUTPUTS if (run_dir / name).exists()]
    if not present:
        return
    aside = run_dir / "superseded" / dt.datetime.now().strftime("%Y_%m_%d-%H_%M_%S")
    aside.mkdir(parents=True)
    for name in present:
        shutil.move(str(run_dir / name), str(aside / name))
    steps.note(run_dir, "training outputs moved aside", to=portable(aside))
    log(f"training from scratch; the previous training outputs are kept in {portable(aside)}")


def run_review(record: bool = False, log: Log = print) -> Path:
    """Execute 05_quick_review on best-result-review/ (into it when `record`, after a promote)."""
    if not (review.REVIEW_DIR / "params.yaml").exists():
        raise NotebookFailed(f"{review.REVIEW_DIR} holds no record yet: "
                             "make promote RUN=runs/<profile>/<name>")
    out_dir = REPO_ROOT / "runs" / "quick-review"
    target_dir = review.REVIEW_DIR if record else out_dir.parent / "quick-review-notebook"
    target_dir.mkdir(parents=True, exist_ok=True)
    params = {"review_dir": portable(review.REVIEW_DIR), "out_dir": portable(out_dir)}
    path = run_notebook("05_quick_review", target_dir, params, log=log,
                        log_path=out_dir.parent / "quick-review-logs" / "05_quick_review.log")
    log(f"quick review passed: the submission regenerated from {review.REVIEW_DIR.name}/ matches; "
        f"executed notebook: {portable(path)}")
    return path


def promote_run(run_dir: str | Path, log: Log = print) -> Path:
    """`make promote`: the run's record built beside the current one, reviewed (05 executed into it),
    and only then kept; else the current one is restored (the failed one goes to runs/promote-failed/)."""
    record = review.REVIEW_DIR
    new, old = record.with_name(f".{record.name}.new"), record.with_name(f".{record.name}.old")
    if old.exists():
        raise review.ReviewError(f"{old} is left from a promote that was cut short: {record} may be a record "
                                 f"that was never reviewed; keep one of the two (move the other away), then "
                                 "promote again")
    if new.exists():
        shutil.rmtree(new)  # a half-built record of a promote cut short, never the record
    review.build_record(Path(run_dir), new)
    log(f"record of {portable(run_dir)} built; reviewing it (05_quick_review)")
    if record.exists():
        os.replace(record, old)
    os.replace(new, record)
    try:
        run_review(record=True, log=log)
    except BaseException:
        failed = REPO_ROOT / "runs" / "promote-failed" / dt.datetime.now().strftime("%Y_%m_%d-%H_%M_%S")
        failed.parent.mkdir(parents=True, exist_ok=True)
        os.replace(record, failed)
        if old.exists():
            os.replace(old, record)
        log(f"the record is unchanged; the one that failed its review is kept in {portable(failed)}")
        raise
    figures.update_pages(REPO_ROOT, record)
    if old.exists():
        shutil.rmtree(old)
    pages = ", ".join(str(page) for page, *_ in figures.PAGES)
    log(f"promoted {portable(run_dir)} -> {portable(record)} (its figures: {pages})")
    return record


def report(run_dir: Path, log: Log = print) -> None:
    """The figures a person wants at the end: where things are and the scores."""
    scores = run_dir / "scores.json"
    link = runs.latest_link(run_dir)
    log(f"results: {portable(run_dir)}  (also {portable(link.parent)}/{link.name})")
    if (run_dir / "submission.json").exists():
        log(f"submission: {portable(run_dir / 'submission.json')}")
    if scores.exists():
        data = json.loads(scores.read_text())
        shown = [f"{split} {data[split]['map10_official']:.4f} / {data[split]['map10_standard']:.4f}"
                 for split in ("val", "test_A", "test_B") if split in data]
        log("mAP@10 official / standard: " + ", ".join(shown) + "  (choose on val and A; B is reported)")
        log(f"all scores: {portable(scores)}; figures: {portable(run_dir / 'figures')}/")


def _steps_argument(value: str) -> list[str]:
    names = [v.strip() for v in value.split(",") if v.strip()]
    unknown = [n for n in names if n not in PIPELINE]
    if not names or unknown:
        raise argparse.ArgumentTypeError(f"expected steps among {','.join(PIPELINE)} separated by commas, "
                                         f"got {value!r}")
    return names


def _quiet_shutdown() -> None:
    """After Ctrl-C, asyncio would report each of the notebook client's unfinished tasks with a
    traceback ("Task exception was never retrieved"): the one-line message already said it."""
    logging.getLogger("asyncio").disabled = True


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
    parser.add_argument("--promote", default="", metavar="RUN",
                        help="make a finished run the record in best-result-review/ (checked, reviewed, "
                             "then swapped in)")
    parser.add_argument("overrides", nargs="*", help="key=value parameter overrides")
    args = parser.parse_args(argv)
    try:
        if args.review:
            run_review()
            return 0
        if args.promote:
            promote_run(args.promote)
            return 0
        overrides = config_mod.parse_overrides(args.overrides)
        if args.from_step and not args.resume:
            raise config_mod.ConfigError("--from needs --resume RUN (make reproduce "
                                         "RESUME=runs/<profile>/<name> ARGS='--from 04_infer')")
        if args.resume:
            run_dir = resume_pipeline(args.resume, args.from_step, overrides, timeout_s=args.cell_timeout)
        else:
            cfg = config_mod.load(args.profile, **overrides)
            preflight.check(cfg)
            run_dir = run_pipeline(cfg, args.notebooks, timeout_s=args.cell_timeout)
    except StepStopped as err:
        print(f"{'stopped' if err.interrupted else 'error'}: {err}", file=sys.stderr)
        if err.interrupted:
            _quiet_shutdown()
        return 130 if err.interrupted else 1
    except KeyboardInterrupt:
        print("stopped: interrupted", file=sys.stderr)
        _quiet_shutdown()
        return 130
    except KitError as err:  # a refusal says what to do; anything else is a bug and keeps its traceback
        print(f"error: {err}", file=sys.stderr)
        return 1
    report(run_dir)
    return 0


if __name__ == "__main__":
    sys.exit(main())

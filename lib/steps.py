"""The pipeline's steps, what each writes, which a run has completed, and its history.

`<run>/pipeline.json` holds, per step, a digest of what it started from and of what it wrote: a step
counts as completed only while those files are unchanged, so a continued run redoes the first step
that did not complete (or whose outputs changed) and every later one. It also keeps the parameters
as last recorded and the history of every act on the run; parameters change only through
`change_parameters` (a hand-edited params.yaml is found by its sha256 and recorded the same way).
"""
from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
from pathlib import Path
from typing import Any

from lib import config as config_mod
from lib import runs
from lib.config import Config, ConfigError
from lib.files import atomic_write_text, recorded_sha256, sha256_file

STATE_FILE = "pipeline.json"
PIPELINE = ("01_prepare", "02_augment", "03_train", "04_infer")
TRAIN_STEP = "03_train"
OUTPUTS = {  # what each step writes into the run (globs, relative to it), beside its executed notebook
    "01_prepare": ("data/train.csv", "data/val.csv", "data/test_queries.csv", "data/test_gallery.csv",
                   "data/vocabulary.json", "data/val_gt.txt"),
    "02_augment": ("data/train_augmented.csv", "data/val_augmented.csv"),
    "03_train": ("metrics.jsonl", "checkpoints/epoch_*.pt", "checkpoints/soup.pt", "soup.json"),
    "04_infer": ("submission.json", "scores.json", "per_query.csv", "rescore.csv"),
}
PIPELINE_ENV = "KIT_PIPELINE"  # set by the pipeline for the kernels it starts: a notebook not run by hand

# The first step whose outputs a parameter changes: changing it redoes that step and every later one.
# 03_train's include the val evaluator's retrieval settings (they choose the epoch kept); those in
# AFTER_TRAINING rerun 03 on the finished training. None: nothing a step writes depends on it.
_BY_STEP = {
    "01_prepare": ("data_root", "generate_demo_data", "demo_seed", "demo_train_size", "demo_val_size",
                   "demo_test_size", "demo_corpus_size", "foundation_epochs", "foundation_lr",
                   "foundation_batch_size", "foundation_warmup_steps", "max_bad_image_fraction"),
    "02_augment": ("model", "pretrained", "pretrained_sha256", "image_size", "trim_text_padding",
                   "attribute_augmentation", "attribute_fields", "augment_padded_images", "augment_val",
                   "car_caption_form", "augmented_labels", "eval_batch_size", "precision", "device",
                   "threads"),
    "03_train": ("batch_size", "accum_steps", "lr", "weight_decay", "beta1", "beta2", "eps", "warmup_steps",
                 "schedule_epochs", "stop_epoch", "grad_checkpointing", "lock_image", "photometric_jitter",
                 "photometric_jitter_prob", "seed", "eval_every", "max_steps", "keep_checkpoints",
                 "query_policy", "category_aware", "topk", "rerank", "rerank_depth_car",
                 "rerank_depth_person", "rerank_m", "rerank_k", "a3r_flip", "a3r_adapted_query",
                 "a3r_reciprocal", "aqe_alpha", "kreciprocal_lambda", "kreciprocal_k2", "soup", "wise_alphas",
                 "no_gain_over_zero_shot", "submit_epoch", "soup_runs"),
}
AFTER_TRAINING = ("soup", "wise_alphas", "soup_runs", "no_gain_over_zero_shot", "submit_epoch")
UNCHANGED_OUTPUTS = ("profile", "workers", "log_every", "save_every_steps")
FIXED = ("runs_root", "run_name")  # a run's folder: another value is another run
AFFECTS: dict[str, str | None] = {key: step for step, keys in _BY_STEP.items() for key in keys}
AFFECTS.update({key: None for key in UNCHANGED_OUTPUTS + FIXED})


def read_state(run_dir: Path) -> dict[str, Any]:
    path = Path(run_dir) / STATE_FILE
    if not path.is_file():
        return {"steps": {}, "history": []}
    try:
        state = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise runs.RunDirError(f"{path} is damaged ({err}): the run's record cannot be read; restore it "
                               "from a backup, or start a new run") from None
    state.setdefault("steps", {})
    state.setdefault("history", [])
    return state


def _write(run_dir: Path, state: dict[str, Any]) -> None:
    atomic_write_text(Path(run_dir) / STATE_FILE, json.dumps(state, indent=1) + "\n")


def _now() -> str:
    return dt.datetime.now().isoformat(timespec="seconds")


def outputs(run_dir: Path, step: str) -> list[Path]:
    """The files a completed step leaves (its executed notebook first, when there is one)."""
    found = [Path(run_dir) / f"{step}.ipynb"]
    for pattern in OUTPUTS.get(step, ()):
        found += sorted(Path(run_dir).glob(pattern))
    return found


def _digest(path: Path) -> str:
    """A checkpoint's sidecar digest (hashing 30 GB at every step costs minutes; loading verifies it)."""
    return recorded_sha256(path) or sha256_file(path)


def _digests(run_dir: Path, step: str) -> dict[str, str]:
    return {str(p.relative_to(run_dir)): _digest(p) for p in outputs(run_dir, step) if p.is_file()}


def inputs_digest(run_dir: Path, step: str, cfg: Config) -> str:
    """What `step` starts from: the parameters that shape its outputs and the earlier steps' outputs."""
    order = PIPELINE.index(step)
    shaping = {key: value for key, value in cfg.to_dict().items()
               if AFFECTS[key] is not None and (PIPELINE.index(AFFECTS[key]) < order or (
                   AFFECTS[key] == step and key not in AFTER_TRAINING))}
    earlier = {name: _digests(Path(run_dir), name) for name in PIPELINE[:order]}
    text = json.dumps({"parameters": shaping, "inputs": earlier}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def begin(run_dir: Path, step: str, cfg: Config) -> None:
    """Record that `step` starts now, from what (its record of an earlier completion is dropped)."""
    state = read_state(run_dir)
    state["steps"][step] = {"started": _now(), "inputs": inputs_digest(run_dir, step, cfg)}
    _write(run_dir, state)


def may_continue(run_dir: Path, step: str, cfg: Config) -> bool:
    """Whether `step`'s partial work (03's checkpoints) was made from what it would start from now."""
    record = read_state(run_dir)["steps"].get(step, {})
    return record.get("inputs") == inputs_digest(run_dir, step, cfg)


def mark_done(run_dir: Path, step: str, **measured: Any) -> None:
    """Record the step's completion: its outputs' digests, and what was `measured` (seconds, memory)."""
    state = read_state(run_dir)
    record = state["steps"].get(step, {})
    state["steps"][step] = {**record, "finished": _now(), "outputs": _digests(run_dir, step), **measured}
    _write(run_dir, state)


def note(run_dir: Path, event: str, **details: Any) -> None:
    """Add a line to the run's history (started, continued, run by hand, parameters changed)."""
    state = read_state(run_dir)
    state["history"].append({"at": _now(), "event": event, **details})
    _write(run_dir, state)


def completed(run_dir: Path, order: tuple[str, ...] | list[str] = PIPELINE) -> list[str]:
    """The leading steps of `order` that completed and whose outputs are still as they left them."""
    state, done = read_state(run_dir), []
    for step in order:
        record = state["steps"].get(step, {})
        if "outputs" not in record or not _unchanged(Path(run_dir), record["outputs"]):
            break
        done.append(step)
    return done


def _unchanged(run_dir: Path, recorded: dict[str, str]) -> bool:
    return all((run_dir / rel).is_file() and _digest(run_dir / rel) == digest
               for rel, digest in recorded.items())


def forget_from(run_dir: Path, step: str, order: tuple[str, ...] | list[str] = PIPELINE) -> list[str]:
    """Mark `step` and every later one as not done; returns the ones that were done."""
    state = read_state(run_dir)
    dropped = [later for later in order[order.index(step):] if "outputs" in state["steps"].get(later, {})]
    for later in order[order.index(step):]:
        record = state["steps"].get(later)
        if record is not None:  # what it started from stays (03 may continue); what it finished goes
            state["steps"][later] = {k: v for k, v in record.items() if k in ("started", "inputs")}
    _write(run_dir, state)
    return dropped


# --- parameters: changed only by a recorded act -------------------------------------------------------
def record_parameters(run_dir: Path, cfg: Config) -> None:
    """params.yaml's sha256 and values as the kit wrote them: what a later hand edit is told from."""
    state = read_state(run_dir)
    state["params_sha256"] = sha256_file(Path(run_dir) / runs.PARAMS)
    state["params"] = json.loads(json.dumps(cfg.to_dict(), default=str))
    _write(run_dir, state)


def earliest_affected(keys: list[str] | set[str]) -> str | None:
    """The first step that any of these parameters changes (None: none)."""
    steps = [AFFECTS[key] for key in keys if AFFECTS.get(key)]
    return min(steps, key=PIPELINE.index) if steps else None


def change_parameters(run_dir: Path, overrides: dict[str, Any], by: str) -> tuple[Config, str | None]:
    """Apply `overrides` to the run's params.yaml, recorded in its history; the steps it affects are no
    longer done. Returns the parameters and the first such step."""
    run_dir = Path(run_dir)
    old = runs.read_params(run_dir)
    new = old.replace(**overrides)
    changes = _changes(old.to_dict(), new.to_dict())
    if not changes:
        return old, None
    fixed = sorted(set(changes) & set(FIXED))
    if fixed:
        raise ConfigError(f"{', '.join(fixed)} cannot change in an existing run ({run_dir}): it names the "
                          "run's folder; start a new run instead (make reproduce ARGS=\"run_name=...\")")
    runs.write_params(new, run_dir)
    redo = earliest_affected(changes)
    dropped = forget_from(run_dir, redo) if redo else []
    note(run_dir, "parameters changed", by=by, changes=changes, redo=dropped)
    record_parameters(run_dir, new)
    return new, redo


def adopt_hand_edits(run_dir: Path) -> str | None:
    """Record a hand edit of params.yaml as a change; returns the first step it affects (None: no edit)."""
    run_dir = Path(run_dir)
    state = read_state(run_dir)
    recorded = state.get("params_sha256")
    if recorded is None or recorded == sha256_file(run_dir / runs.PARAMS):
        return None
    cfg = runs.read_params(run_dir)  # refuses an edit that is not a valid run, naming the key
    before = state.get("params", {})
    changes = _changes(before, json.loads(json.dumps(cfg.to_dict(), default=str)))
    fixed = sorted(set(changes) & set(FIXED))
    if fixed:
        raise ConfigError(f"{run_dir / runs.PARAMS} was edited by hand: {', '.join(fixed)} cannot change in "
                          "an existing run; put back " + ", ".join(f"{k}: {before.get(k)!r}" for k in fixed))
    redo = earliest_affected(changes)
    dropped = forget_from(run_dir, redo) if redo else []
    note(run_dir, "parameters changed", by=f"{runs.PARAMS} edited by hand", changes=changes, redo=dropped)
    record_parameters(run_dir, cfg)
    return redo


def _changes(old: dict[str, Any], new: dict[str, Any]) -> dict[str, list[Any]]:
    return {key: [old.get(key), value] for key, value in new.items() if old.get(key) != value}


# --- a notebook's first call ---------------------------------------------------------------------------
def open_step(step: str, run_dir: str | os.PathLike = "", overrides: Any = None,
              profile: str = "demo") -> tuple[Config, Path]:
    """(parameters, folder) for a notebook of `step`: the run given, else the newest one. Run by hand, the
    act is recorded, `overrides` change the run's parameters and this step and the later ones are no
    longer done; 01_prepare with no run starts one from `profile`."""
    changes = config_mod.as_overrides(overrides)
    if step == PIPELINE[0] and not run_dir:
        cfg = config_mod.load(profile, **changes)
        folder = runs.create_run(cfg)
        runs.hold(folder)
        record_parameters(folder, cfg)
        note(folder, "started", profile=cfg.profile, by=f"{step} run by hand", overrides=changes)
        begin(folder, step, cfg)
        return cfg, folder
    folder = runs.find_run(run_dir)
    runs.hold(folder)
    if os.environ.get(PIPELINE_ENV):
        return runs.read_params(folder), folder
    adopt_hand_edits(folder)
    by = f"{step} run by hand"
    cfg, _ = change_parameters(folder, changes, by=by) if changes else (runs.read_params(folder), None)
    redo = forget_from(folder, step)
    note(folder, "run by hand", step=step, overrides=changes, redo=redo)
    begin(folder, step, cfg)
    return cfg, folder

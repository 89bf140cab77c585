"""The best-result record: promote a run into `best-result-review/`, verify it, regenerate it.

A judge reruns the stored checkpoint on the stored parameters and must get the stored submission back
byte for byte; every file of the record and the data it depends on is pinned by its sha256 (the review
notebook is rerun and compared by nbval instead). lib.pipeline.runner.promote_run swaps records.
"""
from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import pandas as pd

from lib import config as config_mod
from lib import runs, steps
from lib.config import Config
from lib.data.layout import SPLIT_FILES, TEST_GT_FILE
from lib.data.prepare import VAL_AUGMENTED_TABLE, Prepared
from lib.errors import KitError
from lib.files import atomic_write_text, sha256_file
from lib.model.checkpoints import load_checkpoint, save_checkpoint, verify_file
from lib.paths import REPO_ROOT, portable
from lib.record.figures import AGREEMENT_FILE, RESCORE_FILE
from lib.train.state import collect_result

REVIEW_DIR = REPO_ROOT / "best-result-review"
CHECKSUMS = "checksums.sha256"
CHECKPOINT = "checkpoint.pt"
CHECKPOINT_INFO = "checkpoint.json"  # a competition record: the checkpoint's name, size and sha256
REVIEW_NOTEBOOK = "05_quick_review.ipynb"  # rerun and compared by nbval, not pinned by a sha256
RECORD_FILES = ("params.yaml", "out.log", "metrics.jsonl", "submission.json", "scores.json")
OPTIONAL_FILES = ("per_query.csv", "pipeline.json", AGREEMENT_FILE, RESCORE_FILE)
MAX_COMMITTED_CHECKPOINT = 64 * 2**20  # larger checkpoints are named, not committed
README_TEMPLATE = Path(__file__).parent / "templates" / "record_README.md"


class ReviewError(KitError, RuntimeError):
    """The record is incomplete or does not match what it claims."""


def data_files(cfg: Config) -> list[Path]:
    """The organisers' (or demo) files a submission depends on."""
    root = cfg.path("data_root")
    names = [label for label, _ in SPLIT_FILES.values()] + [TEST_GT_FILE]
    return [root / n for n in names if (root / n).exists()]


def write_checksums(review_dir: Path, files: list[Path]) -> Path:
    """sha256sum format; record files relative to the record, data files relative to the repo."""
    lines = [f"{sha256_file(p)}  {p.name if p.parent == review_dir else portable(p)}" for p in files]
    return atomic_write_text(review_dir / CHECKSUMS, "\n".join(lines) + "\n")


def record_files(review_dir: Path) -> list[Path]:
    """The files a record's checksums cover: all but the checksums, the review notebook, hidden files
    (papermill's partial copy) and a checkpoint too large for git (`checkpoint.json` names it)."""
    exempt = {CHECKSUMS, REVIEW_NOTEBOOK}
    if (review_dir / CHECKPOINT_INFO).exists():
        exempt |= {CHECKPOINT, CHECKPOINT + ".sha256"}
    return sorted(p for p in review_dir.iterdir()
                  if p.is_file() and p.name not in exempt and not p.name.startswith("."))


def verify_checksums(review_dir: Path = REVIEW_DIR) -> pd.DataFrame:
    """Every file in checksums.sha256 with both digests; stops on a mismatch or a file they do not name."""
    rows = []
    for line in (review_dir / CHECKSUMS).read_text().splitlines():
        expected, name = line.split(maxsplit=1)
        path = review_dir / name if (review_dir / name).exists() else REPO_ROOT / name
        actual = sha256_file(path) if path.exists() else "missing"
        rows.append({"file": name, "expected": expected, "actual": actual, "ok": actual == expected})
    table = pd.DataFrame(rows)
    bad = table[~table["ok"]]
    if len(bad):
        first = bad.iloc[0]
        raise ReviewError(f"checksum mismatch for {first['file']}: expected {first['expected']}, "
                          f"got {first['actual']} ({len(bad)} file(s) differ); the record or the data "
                          "changed")
    unlisted = [p.name for p in record_files(review_dir) if p.name not in set(table["file"])]
    if unlisted:
        raise ReviewError(f"{', '.join(unlisted)} in {review_dir.name}/ but not in its {CHECKSUMS}: the "
                          "record holds a file nothing vouches for; remove it, or promote the run again")
    return table


def build_record(run_dir: Path, folder: Path, commit: str | None = None) -> Path:
    """Write a record of the run (its files, kept weights, a README, checksums) into a new `folder`, once
    the run is complete as recorded, made by committed code and promoted from a clean tree (so that a
    fresh clone of that commit makes it again), and its checkpoint verifies."""
    run_dir = Path(run_dir).resolve()
    missing = [n for n in RECORD_FILES if not (run_dir / n).exists()]
    if missing:
        raise ReviewError(f"{run_dir} is not a finished run: missing {', '.join(missing)}")
    done = steps.completed(run_dir)
    if done != list(steps.PIPELINE):
        stale = next(s for s in steps.PIPELINE if s not in done)
        raise ReviewError(f"{run_dir} is not complete: {stale} did not complete, or its outputs changed "
                          f"since (pipeline.json); finish it first: {runs.resume_command(run_dir)}")
    if steps.read_state(run_dir).get("params_sha256") not in (None, sha256_file(run_dir / runs.PARAMS)):
        raise ReviewError(f"{run_dir / runs.PARAMS} was edited after the run: its outputs are not what it "
                          f"says; continue the run to record the edit ({runs.resume_command(run_dir)})")
    made_by = str((config_mod.read_yaml(run_dir / "params.yaml").get(config_mod.PROVENANCE_KEY) or {})
                  .get("git_sha", "unknown"))
    commit = runs.git_commit() if commit is None else commit
    if made_by.endswith("-dirty") or made_by == "unknown":
        raise ReviewError(f"{run_dir} was made by uncommitted code (git_sha {made_by}): a fresh clone cannot "
                          "make it again; commit, run make reproduce again, then promote that run")
    if commit.endswith("-dirty") or commit == "unknown":
        raise ReviewError(f"this tree has uncommitted changes ({commit}): commit them, then promote, so that "
                          "the record's review notebook is the committed code's")
    cfg = runs.read_params(run_dir)
    best = collect_result(run_dir, cfg.submit_epoch).best_checkpoint
    if best is None:
        raise ReviewError(f"{run_dir} has no fine-tuned checkpoint to promote (or not the submit_epoch's)")
    verify_file(best)  # a damaged checkpoint stops here, naming both digests
    folder.mkdir(parents=True)
    for name in RECORD_FILES + tuple(n for n in OPTIONAL_FILES if (run_dir / n).exists()):
        shutil.copy2(run_dir / name, folder / name)
    for notebook in sorted(run_dir.glob("0[1-4]_*.ipynb")):
        shutil.copy2(notebook, folder / notebook.name)
    if (run_dir / "data" / VAL_AUGMENTED_TABLE).is_file():  # the val queries the run scored (augment_val)
        shutil.copy2(run_dir / "data" / VAL_AUGMENTED_TABLE, folder / VAL_AUGMENTED_TABLE)
    state = load_checkpoint(best)
    weights = {"name": state.get("name", cfg.model), "epoch": state.get("epoch"),
               "state_dict": state["state_dict"]}
    checkpoint = folder / CHECKPOINT
    digest = save_checkpoint(checkpoint, weights)
    if checkpoint.stat().st_size > MAX_COMMITTED_CHECKPOINT:  # too large for git: its name, size and digest
        info = {"file": CHECKPOINT, "bytes": checkpoint.stat().st_size, "sha256": digest,
                "from": f"{run_dir.name}/checkpoints/{best.name}"}
        atomic_write_text(folder / CHECKPOINT_INFO, json.dumps(info, indent=1) + "\n")
    readme = README_TEMPLATE.read_text(encoding="utf-8")
    atomic_write_text(folder / "README.md", readme.format(run=run_dir.name, profile=cfg.profile,
                                                          epoch=weights["epoch"], sha=digest,
                                                          made_by=made_by, commit=commit))
    write_checksums(folder, record_files(folder) + data_files(cfg))
    return folder


def scored_queries(prep: Prepared, review_dir: Path) -> Prepared:
    """The prepared tables with the val queries the recorded run scored: the completed ones when the
    record keeps val_augmented.csv (augment_val), else the labels' own."""
    path = review_dir / VAL_AUGMENTED_TABLE
    if not path.is_file():
        return prep
    return dataclasses.replace(prep, val=pd.read_csv(path, keep_default_na=False))


def review_config(review_dir: Path = REVIEW_DIR, **overrides) -> Config:
    """The stored parameters, pointed at a fresh output folder."""
    return config_mod.load_saved(review_dir / "params.yaml").replace(**overrides)


def compare_submissions(stored: Path, regenerated: Path) -> pd.DataFrame:
    """The queries whose ranked lists differ (empty: identical)."""
    a = json.loads(Path(stored).read_text(encoding="utf-8"))["results"]
    b = json.loads(Path(regenerated).read_text(encoding="utf-8"))["results"]
    if len(a) != len(b):
        raise ReviewError(f"stored submission has {len(a)} queries, regenerated {len(b)}")
    rows = [{"query": i, "text": x["text"], "stored": x["image_names"], "regenerated": y["image_names"]}
            for i, (x, y) in enumerate(zip(a, b)) if x != y]
    return pd.DataFrame(rows, columns=["query", "text", "stored", "regenerated"])


def fresh_dir(path: Path) -> Path:
    """An empty folder for a regeneration (only ever one of the kit's own output folders)."""
    path = Path(path)
    marker = ".quick-review-output"
    if path.exists():
        if any(path.iterdir()) and not (path / marker).exists():
            raise ReviewError(f"{path} exists and is not a quick-review output folder: "
                              "choose another out_dir")
        shutil.rmtree(path)
    (path / "data").mkdir(parents=True)
    (path / marker).touch()
    return path

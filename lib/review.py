"""The best-result record: promote a run into `best-result-review/`, verify it, regenerate it.

A judge reruns the stored checkpoint on the stored parameters and must get the stored submission
back, byte for byte; every file the record depends on is pinned by its sha256 first.
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

import pandas as pd

from lib import config as config_mod
from lib import record_figures, runs
from lib.config import Config
from lib.data.layout import SPLIT_FILES, TEST_GT_FILE
from lib.errors import KitError
from lib.files import atomic_write_text, sha256_file
from lib.model.checkpoints import load_checkpoint, save_checkpoint
from lib.paths import REPO_ROOT, portable
from lib.train.state import collect_result

REVIEW_DIR = REPO_ROOT / "best-result-review"
CHECKSUMS = "checksums.sha256"
CHECKPOINT = "checkpoint.pt"
RECORD_FILES = ("params.yaml", "out.log", "metrics.jsonl", "submission.json", "scores.json")
OPTIONAL_FILES = ("per_query.csv", "pipeline.json", record_figures.AGREEMENT_FILE)
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
    lines = []
    for path in files:
        name = path.name if path.parent == review_dir else portable(path)
        lines.append(f"{sha256_file(path)}  {name}")
    return atomic_write_text(review_dir / CHECKSUMS, "\n".join(lines) + "\n")


def verify_checksums(review_dir: Path = REVIEW_DIR) -> pd.DataFrame:
    """Every file named in checksums.sha256, with its expected and actual digests; stops on a mismatch."""
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
    return table


def promote(run_dir: Path, review_dir: Path = REVIEW_DIR, commit: str | None = None) -> Path:
    """Copy a finished run into the record (replacing the previous one).

    Only from committed code: the run must say it was made by a commit (its params.yaml's git_sha
    is not `-dirty`) and the tree that promotes it (and executes the review into the record) must
    be clean too, so that a fresh clone of that commit makes the record again.
    """
    run_dir = Path(run_dir).resolve()
    missing = [n for n in RECORD_FILES if not (run_dir / n).exists()]
    if missing:
        raise ReviewError(f"{run_dir} is not a finished run: missing {', '.join(missing)}")
    made_by = str((config_mod.read_yaml(run_dir / "params.yaml").get(config_mod.PROVENANCE_KEY) or {})
                  .get("git_sha", "unknown"))
    commit = runs.git_commit() if commit is None else commit
    if made_by.endswith("-dirty") or made_by == "unknown":
        raise ReviewError(f"{run_dir} was made by uncommitted code (git_sha {made_by}): a fresh clone cannot "
                          "make it again; commit, run make reproduce again, then promote that run")
    if commit.endswith("-dirty") or commit == "unknown":
        raise ReviewError(f"this tree has uncommitted changes ({commit}): commit them, then promote, so that "
                          "the record's review notebook is the committed code's")
    best = collect_result(run_dir).best_checkpoint
    if best is None:
        raise ReviewError(f"{run_dir} has no fine-tuned checkpoint to promote")
    cfg = config_mod.load_saved(run_dir / "params.yaml")
    if review_dir.exists():
        shutil.rmtree(review_dir)
    review_dir.mkdir(parents=True)
    for name in RECORD_FILES + tuple(n for n in OPTIONAL_FILES if (run_dir / n).exists()):
        shutil.copy2(run_dir / name, review_dir / name)
    for notebook in sorted(run_dir.glob("0[1-4]_*.ipynb")):
        shutil.copy2(notebook, review_dir / notebook.name)
    state = load_checkpoint(best)
    weights = {"name": state.get("name", cfg.model), "epoch": state.get("epoch"),
               "state_dict": state["state_dict"]}
    checkpoint = review_dir / CHECKPOINT
    digest = save_checkpoint(checkpoint, weights)
    pinned = [review_dir / n for n in ("submission.json", "params.yaml")] + data_files(cfg)
    if checkpoint.stat().st_size <= MAX_COMMITTED_CHECKPOINT:
        pinned.insert(0, checkpoint)
    else:  # too large for git: keep its name, size and digest; the file travels separately
        info = {"file": CHECKPOINT, "bytes": checkpoint.stat().st_size, "sha256": digest,
                "from": f"{run_dir.name}/checkpoints/{best.name}"}
        atomic_write_text(review_dir / "checkpoint.json", json.dumps(info, indent=1) + "\n")
        pinned.insert(0, review_dir / "checkpoint.json")
    write_checksums(review_dir, pinned)
    readme = README_TEMPLATE.read_text(encoding="utf-8")
    atomic_write_text(review_dir / "README.md", readme.format(run=run_dir.name, profile=cfg.profile,
                                                              epoch=weights["epoch"], sha=digest,
                                                              made_by=made_by, commit=commit))
    if review_dir == REVIEW_DIR:
        record_figures.update_page(REPO_ROOT / record_figures.RESULTS_PAGE, review_dir)
    return review_dir


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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lib.review")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("promote", help="copy a run into best-result-review/")
    p.add_argument("run", type=Path)
    sub.add_parser("verify", help="check best-result-review/checksums.sha256")
    args = parser.parse_args(argv)
    try:
        if args.command == "promote":
            review_dir = promote(args.run)
            print(f"promoted {args.run} -> {review_dir}")
        else:
            print(verify_checksums().to_string(index=False))
    except (KitError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

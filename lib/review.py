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

import numpy as np
import pandas as pd

from lib import config as config_mod
from lib import model
from lib.config import REPO_ROOT, Config
from lib.prepare import portable

REVIEW_DIR = REPO_ROOT / "best-result-review"
CHECKSUMS = "checksums.sha256"
CHECKPOINT = "checkpoint.pt"
RECORD_FILES = ("params.yaml", "out.log", "metrics.jsonl", "submission.json", "scores.json")
MAX_COMMITTED_CHECKPOINT = 64 * 2**20  # larger checkpoints are named, not committed
PERSON_ATTRIBUTES = ("Female", "AgeOver60", "Age18-60", "AgeLess18", "Front", "Side", "Back", "Hat",
                     "Glasses", "HandBag", "ShoulderBag", "Backpack", "HoldObjectsInFront",
                     "ShortSleeve", "LongSleeve", "UpperStripe", "UpperLogo", "UpperPlaid",
                     "UpperSplice", "LongCoat", "Skirt&Dress")


class ReviewError(RuntimeError):
    """The record is incomplete or does not match what it claims."""


def data_files(cfg: Config) -> list[Path]:
    """The organisers' (or demo) files a submission depends on."""
    root = cfg.path("data_root")
    names = ["train/train_label.txt", "val/val_label.txt", "test/test_text.txt", "test/test_gt.txt"]
    return [root / n for n in names if (root / n).exists()]


def sha256(path: Path) -> str:
    return model.sha256_file(path)


def write_checksums(review_dir: Path, files: list[Path]) -> Path:
    """sha256sum format; record files relative to the record, data files relative to the repo."""
    lines = []
    for path in files:
        name = path.name if path.parent == review_dir else portable(path)
        lines.append(f"{sha256(path)}  {name}")
    target = review_dir / CHECKSUMS
    target.write_text("\n".join(lines) + "\n")
    return target


def verify_checksums(review_dir: Path = REVIEW_DIR) -> pd.DataFrame:
    """Every file named in checksums.sha256, with its expected and actual digests; stops on a mismatch."""
    rows = []
    for line in (review_dir / CHECKSUMS).read_text().splitlines():
        expected, name = line.split(maxsplit=1)
        path = review_dir / name if (review_dir / name).exists() else REPO_ROOT / name
        actual = sha256(path) if path.exists() else "missing"
        rows.append({"file": name, "expected": expected, "actual": actual, "ok": actual == expected})
    table = pd.DataFrame(rows)
    bad = table[~table["ok"]]
    if len(bad):
        first = bad.iloc[0]
        raise ReviewError(f"checksum mismatch for {first['file']}: expected {first['expected']}, "
                          f"got {first['actual']} ({len(bad)} file(s) differ); the record or the data changed")
    return table


def promote(run_dir: Path, review_dir: Path = REVIEW_DIR) -> Path:
    """Copy a finished run into the record (replacing the previous one)."""
    from lib.train_state import collect_result

    run_dir = Path(run_dir).resolve()
    missing = [n for n in RECORD_FILES if not (run_dir / n).exists()]
    if missing:
        raise ReviewError(f"{run_dir} is not a finished run: missing {', '.join(missing)}")
    best = collect_result(run_dir).best_checkpoint
    if best is None:
        raise ReviewError(f"{run_dir} has no fine-tuned checkpoint to promote")
    cfg = config_mod.load_saved(run_dir / "params.yaml")
    if review_dir.exists():
        shutil.rmtree(review_dir)
    review_dir.mkdir(parents=True)
    for name in RECORD_FILES:
        shutil.copy2(run_dir / name, review_dir / name)
    for notebook in sorted(run_dir.glob("0[1-4]_*.ipynb")):
        shutil.copy2(notebook, review_dir / notebook.name)
    state = model.load_checkpoint(best)
    weights = {"name": state.get("name", cfg.model), "epoch": state.get("epoch"), "state_dict": state["state_dict"]}
    checkpoint = review_dir / CHECKPOINT
    digest = model.save_checkpoint(checkpoint, weights)
    pinned = [review_dir / n for n in ("submission.json", "params.yaml")] + data_files(cfg)
    if checkpoint.stat().st_size <= MAX_COMMITTED_CHECKPOINT:
        pinned.insert(0, checkpoint)
    else:  # too large for git: keep its name, size and digest; the file travels separately
        info = {"file": CHECKPOINT, "bytes": checkpoint.stat().st_size, "sha256": digest,
                "from": f"{run_dir.name}/checkpoints/{best.name}"}
        (review_dir / "checkpoint.json").write_text(json.dumps(info, indent=1) + "\n")
        pinned.insert(0, review_dir / "checkpoint.json")
    write_checksums(review_dir, pinned)
    (review_dir / "README.md").write_text(RECORD_README.format(run=run_dir.name, profile=cfg.profile,
                                                               epoch=weights["epoch"], sha=digest))
    return review_dir


RECORD_README = """# best-result-review/: the record of the best run

Promoted from `runs/{run}` (profile `{profile}`, fine-tuned epoch {epoch}) by `make promote`.

| file | what |
|---|---|
| `params.yaml` | every parameter of the run, with the code version and library versions (`_run`) |
| `out.log`, `metrics.jsonl` | the training log and the per-epoch validation figures |
| `submission.json`, `scores.json` | the submission and its scores (val; test on the demo) |
| `checkpoint.pt` | the weights that made the submission (sha256 `{sha}`) |
| `checksums.sha256` | sha256 of the checkpoint, submission, parameters and data files |
| `01_*`..`04_*.ipynb` | the executed pipeline notebooks of the run |
| `05_quick_review.ipynb` | the executed review: the record `make test` reruns with nbval |

To review it: `make quick-review`. It regenerates the demo data from its seed when missing,
verifies every checksum (a mismatch stops and names both values), regenerates the submission from
`checkpoint.pt` on `params.yaml`, and says whether it matches `submission.json` query by query.
A competition record has `checkpoint.json` (file name, size, sha256) instead of the weights when they
are too large for git: download the file, put it here as `checkpoint.pt`, then run the review.
"""


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


def person_attribute_ap(table: pd.DataFrame, ap: np.ndarray) -> pd.DataFrame:
    """Mean official AP of person queries by attribute bit set in the query image's vector."""
    persons = table["kind"].to_numpy() == "person"
    vectors = np.array([[int(v) for v in a.rstrip(".").split(",")] for a in table["attribute"][persons]])
    ap_persons = np.asarray(ap)[persons]
    rows = [{"attribute": name, "queries": int(vectors[:, i].sum()),
             "map10_official": float(ap_persons[vectors[:, i] == 1].mean()) if vectors[:, i].any() else np.nan}
            for i, name in enumerate(PERSON_ATTRIBUTES)]
    return pd.DataFrame(rows).set_index("attribute")


def car_field_ap(table: pd.DataFrame, ap: np.ndarray, field: str = "type") -> pd.DataFrame:
    """Mean official AP of car queries by a parsed field of their caption (empty: not named)."""
    cars = table["kind"].to_numpy() == "car"
    frame = pd.DataFrame({field: table[field][cars].replace("", "(not named)").fillna("(not named)"),
                          "ap": np.asarray(ap)[cars]})
    return frame.groupby(field)["ap"].agg(["count", "mean"]).rename(
        columns={"count": "queries", "mean": "map10_official"})


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
    except (ReviewError, FileNotFoundError, model.ChecksumError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())


def fresh_dir(path: Path) -> Path:
    """An empty folder for a regeneration (only ever one of the kit's own output folders)."""
    path = Path(path)
    marker = ".quick-review-output"
    if path.exists():
        if any(path.iterdir()) and not (path / marker).exists():
            raise ReviewError(f"{path} exists and is not a quick-review output folder: choose another out_dir")
        shutil.rmtree(path)
    (path / "data").mkdir(parents=True)
    (path / marker).touch()
    return path

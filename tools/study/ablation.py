"""The ablation and the choices, measured as the competition chose: on val and board A, over seeds.

    python -m tools.study.ablation --run runs/demo/<name> [--seeds 0 1 2] [--label ablation]
                                   [--only ROW,...] [--publish docs/tables] [--name NAME]

Every row is a fine-tuning per seed of the same prepared data (the base run's), or, for a row that
changes only what happens after training (a soup, re-ranking, the query policy, the epoch kept, an
ensemble), the default's trained seeds scored again. Each row gives val, test A and test B
official mAP@10 as mean ± std over the seeds, and its change against a reference row with a 95 %
interval that holds both the spread between seeds and between queries (lib.eval.paired: the
seeds and the queries resampled), and the smallest change the design would detect (MDE). The chain
(zero-shot → fine-tuned → + attribute augmentation → + jitter → + soup → + re-ranking) compares each
row with the one before; the choices compare with the default. B is reported, never used to choose.
Resumable: a seed that has its scores is not run again. Writes <run>-<label>.csv, .md, -seeds.csv
and -per-query.csv.gz beside the run; --publish copies them into a folder (docs/tables/: the
tables the results page shows and a test checks).
"""
from __future__ import annotations

import argparse
import gzip
import io
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from lib import config as config_mod
from lib import runs
from lib.config import Config
from lib.errors import KitError
from lib.eval.infer import PER_QUERY_FILE, SCORES_FILE, infer
from lib.eval.paired import paired_difference
from lib.files import atomic_write_bytes, atomic_write_text
from lib.paths import REPO_ROOT
from lib.soup.make import make_soup
from tools.study.ensemble import score_ensemble
from tools.study.seed_study import ZERO_SHOT, run_study

DEFAULT = "default"
BOARDS = (("val", "val", ""), ("A", "test", "A"), ("B", "test", "B"))  # column, split, board in per_query.csv


def _votes(key: str, value: Any) -> tuple[str, ...]:
    """The boards that vote on a change of `key` to `value`: not one that chose the row's own
    parameters (a greedy soup's ingredients, WiSE-FT's alpha: on val and A), nor val where its own
    queries change (augment_val) or where it chose the epoch one side keeps (submit_epoch)."""
    if key in ("augment_val", "submit_epoch"):
        return ("A",)
    return () if key == "soup" and value in ("greedy", "wise") else ("val", "A")


@dataclass(frozen=True)
class Row:
    """One line of the tables: what it changes, whether it trains, and what it is compared with."""

    name: str
    overrides: dict[str, Any] = field(default_factory=dict)
    trains: bool = True  # False: the default's trained seeds, scored again with the overrides
    against: str = DEFAULT
    ensemble: bool = False  # the default's seeds fused into one ranking (tools.study.ensemble)

    @property
    def votes(self) -> tuple[str, ...]:
        """The boards that vote on every one of its overrides (_votes)."""
        return tuple(board for board in ("val", "A")
                     if all(board in _votes(key, value) for key, value in self.overrides.items()))


CHAIN = (
    Row(ZERO_SHOT, trains=False, against=""),
    Row("fine-tuned alone (no augmentation or jitter)",
        {"attribute_augmentation": False, "photometric_jitter_prob": 0.0}, against=ZERO_SHOT),
    Row("+ attribute augmentation", {"photometric_jitter_prob": 0.0},
        against="fine-tuned alone (no augmentation or jitter)"),
    Row(DEFAULT, against="+ attribute augmentation"),  # + the photometric jitter
    Row("+ greedy soup", {"soup": "greedy"}, trains=False),
    Row("+ A3R re-ranking", {"rerank": "a3r"}, trains=False),
)
REFERENCE_STEPS = {"car_caption_form": "attributes", "attribute_fields": ["colour", "brand", "type"],
                   "augment_padded_images": False, "augment_val": True, "submit_epoch": 5}
CHOICES = (
    Row("no attribute augmentation", {"attribute_augmentation": False}),  # the default without it
    Row("lr 1e-4", {"lr": 1e-4}),
    Row("uniform soup", {"soup": "uniform"}, trains=False),
    Row("WiSE-FT (alpha on the grid)", {"soup": "wise"}, trains=False),
    Row("ensemble of the seeds", trains=False, ensemble=True),
    Row("query policy none", {"query_policy": "none"}, trains=False),
    Row("query policy surveillance", {"query_policy": "surveillance"}, trains=False),
    Row("category-aware retrieval", {"category_aware": True}, trains=False),
    Row("aQE re-ranking", {"rerank": "aqe"}, trains=False),
    Row("k-reciprocal re-ranking", {"rerank": "kreciprocal"}, trains=False),
    # the reference's steps, one at a time and together (docs/reference.md)
    Row("training captions colour brand type", {"car_caption_form": "attributes"}),
    Row("brand filled too", {"attribute_fields": ["colour", "brand", "type"]}),
    Row("augmentation on unpadded images", {"augment_padded_images": False}),
    Row("val captions completed", {"augment_val": True}),  # its val: other query texts, A votes
    Row("epoch 5 submitted", {"submit_epoch": 5}, trains=False),  # val chose the default's: A votes
    Row("the reference's steps", REFERENCE_STEPS),
)
ROWS = {row.name: row for row in CHAIN + CHOICES}

# `--rows defaults`: each default of a profile against its alternative (make confirm on a new world)
TRAINING_ALTERNATIVES: dict[str, Callable[[Any], Any]] = {
    "attribute_augmentation": lambda v: not v,
    "photometric_jitter_prob": lambda v: 0.0 if v else 0.8,
    "lr": lambda v: float(f"{v / 3:.2g}"),  # 3e-4 -> 1e-4
    "car_caption_form": lambda v: "sentence" if v == "attributes" else "attributes",
    "attribute_fields": lambda v: ["colour", "type"] if "brand" in v else ["colour", "brand", "type"],
    "augment_padded_images": lambda v: not v,
    "augment_val": lambda v: not v,
}
SCORING_ALTERNATIVES: dict[str, Callable[[Any], list[Any]]] = {
    "submit_epoch": lambda v: [0 if v else 5],
    "soup": lambda v: [m for m in ("greedy", "uniform", "wise") if m != v],
    "rerank": lambda v: [m for m in ("a3r", "aqe", "kreciprocal") if m != v],
    "query_policy": lambda v: [p for p in ("none", "strip_prefix", "surveillance") if p != v],
    "category_aware": lambda v: [not v],
}


def _shown(value: Any) -> str:
    if isinstance(value, list):
        return " ".join(value)
    return f"{value:g}" if isinstance(value, float) else str(value)


def default_rows(cfg: Config) -> dict[str, Row]:
    """The zero-shot row, the default, and each default's alternative as a row named `key value`."""
    rows = [Row(ZERO_SHOT, trains=False, against=""), Row(DEFAULT, against=ZERO_SHOT)]
    for key, other in TRAINING_ALTERNATIVES.items():
        value = other(getattr(cfg, key))
        rows.append(Row(f"{key} {_shown(value)}", {key: value}))
    for key, others in SCORING_ALTERNATIVES.items():
        for value in others(getattr(cfg, key)):
            rows.append(Row(f"{key} {_shown(value)}", {key: value}, trains=False))
    rows.append(ROWS["ensemble of the seeds"])
    return {row.name: row for row in rows}


def _slug(name: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in name.lower()).strip("-")


def row_paths(root: Path, base_run: Path, row: Row, seeds: Sequence[int], label: str) -> list[Path]:
    """A row's scored run folders: one per seed (the zero-shot row and an ensemble have one)."""
    if row.name == ZERO_SHOT:
        return [root / f"{base_run.name}-{ZERO_SHOT}"]
    if row.ensemble:
        return [root / f"{base_run.name}-{label}-ensemble"]
    return [root / f"{base_run.name}-{label}-{_slug(row.name)}-seed{s}" for s in seeds]


def run_rows(base_cfg: Config, base_run: Path, rows: Sequence[Row], seeds: Sequence[int], label: str,
             progress: bool = True, log: Callable[[str], None] = print) -> dict[str, list[Path]]:
    """Run every row (training rows first) and return its scored run folders (row_paths)."""
    root = base_cfg.path("runs_root")
    default_runs = row_paths(root, base_run, Row(DEFAULT), seeds, label)
    for row in sorted(rows, key=lambda r: (not r.trains, r.name != DEFAULT)):  # training rows first
        cfg = base_cfg.replace(**row.overrides)
        if row.name == ZERO_SHOT:
            run_study(cfg, base_run, [], label, progress=progress, log=log)  # scores the zero-shot run only
        elif row.ensemble:
            _ensemble(cfg, default_runs, row_paths(root, base_run, row, seeds, label)[0], log)
        elif row.trains:
            run_study(cfg, base_run, seeds, f"{label}-{_slug(row.name)}", progress=progress, log=log)
        else:
            for trained in default_runs:
                _rescore(cfg, trained, label, row, progress, log)
    return {row.name: row_paths(root, base_run, row, seeds, label) for row in rows}


def scored(folders: list[Path]) -> bool:
    return all((path / SCORES_FILE).is_file() for path in folders)


def _ensemble(cfg: Config, members: list[Path], out: Path, log: Callable[[str], None]) -> Path:
    if (out / SCORES_FILE).is_file():
        return out
    missing = [m for m in members if not (m / SCORES_FILE).is_file()]
    if missing:
        raise KitError(f"{missing[0]} has no scores: the default row must run first")
    log(f"[ensemble] fusing {len(members)} seeds -> {out}")
    out.mkdir(parents=True, exist_ok=True)
    return score_ensemble(cfg, members, out)


def _link(src: str, dst: str) -> None:
    """A hard link; one left by an interrupted rescore is kept, so the rescore resumes."""
    if os.path.exists(dst) and os.path.samefile(src, dst):
        return
    os.link(src, dst)


def _rescore(cfg: Config, trained: Path, label: str, row: Row, progress: bool, log) -> Path:
    """The trained seed's data and checkpoints (hard links), scored with the row's overrides."""
    out = trained.with_name(trained.name.replace(f"-{label}-{DEFAULT}-", f"-{label}-{_slug(row.name)}-"))
    if (out / SCORES_FILE).is_file():
        return out
    if not (trained / SCORES_FILE).is_file():
        raise KitError(f"{trained} has no scores: the default row must run first")
    seeded = cfg.replace(seed=runs.read_params(trained).seed, run_name=out.name)
    out.mkdir(parents=True, exist_ok=True)
    shutil.copytree(trained / "data", out / "data", dirs_exist_ok=True)
    shutil.copytree(trained / "checkpoints", out / "checkpoints", dirs_exist_ok=True, copy_function=_link)
    for name in ("metrics.jsonl",):
        shutil.copy2(trained / name, out / name)
    runs.write_params(seeded, out)
    log(f"[{row.name}] scoring {trained.name}'s checkpoints again -> {out}")
    make_soup(seeded, out, progress=progress)
    infer(seeded, out, progress=progress)
    return out


def per_query(folders: dict[str, list[Path]]) -> pd.DataFrame:
    """Every row's and seed's official AP by query: row, seed (0.. in the row's order), split, board,
    query, ap (what the intervals are computed from; the published -per-query.csv.gz)."""
    frames = []
    for row, paths in folders.items():
        for index, path in enumerate(paths):
            table = pd.read_csv(path / PER_QUERY_FILE, keep_default_na=False)
            frames.append(pd.DataFrame({"row": row, "seed": index, "split": table["split"],
                                        "board": table["board"], "query": table["query"],
                                        "ap": table["ap_official"].round(6)}))
    return pd.concat(frames, ignore_index=True)


def _matrix(aps: pd.DataFrame, row: str, split: str, board: str) -> np.ndarray:
    """seeds x queries official AP of a row on a split (and board)."""
    picked = aps[(aps["row"] == row) & (aps["split"] == split)]
    if board:
        picked = picked[picked["board"] == board]
    return picked.pivot(index="seed", columns="query", values="ap").to_numpy()


def table(rows: Sequence[Row], aps: pd.DataFrame) -> pd.DataFrame:
    """One line a row: mean ± std of val, A and B over the seeds; the change against its reference
    with its seed-and-query interval and MDE (lib.eval.paired)."""
    lines = []
    present = set(aps["row"])
    for row in rows:
        seeds = int(aps.loc[aps["row"] == row.name, "seed"].nunique())
        line: dict[str, Any] = {"row": row.name, "seeds": seeds,
                                "against": row.against if row.name != DEFAULT or row.against else ""}
        for column, split, board in BOARDS:
            per_seed = _matrix(aps, row.name, split, board).mean(axis=1)
            line[f"{column}_mean"] = float(np.mean(per_seed))
            line[f"{column}_std"] = float(np.std(per_seed, ddof=1)) if len(per_seed) > 1 else float("nan")
            if row.against and row.against in present:
                diff = paired_difference(_matrix(aps, row.against, split, board),
                                         _matrix(aps, row.name, split, board))
                line.update({f"{column}_delta": diff.delta, f"{column}_low": diff.low,
                             f"{column}_high": diff.high, f"{column}_mde": diff.mde})
        line["verdict"] = verdict(line, row.votes)
        lines.append(line)
    return pd.DataFrame(lines)


def seed_table(aps: pd.DataFrame) -> pd.DataFrame:
    """Each row's and seed's val, A and B official mAP@10 (the published -seeds.csv)."""
    out = []
    for (row, seed), group in aps.groupby(["row", "seed"], sort=False):
        line = {"row": row, "seed": seed}
        for column, split, board in BOARDS:
            picked = group[group["split"] == split]
            line[column] = float((picked[picked["board"] == board] if board else picked)["ap"].mean())
        out.append(line)
    return pd.DataFrame(out)


def verdict(line: dict[str, Any], votes: Sequence[str]) -> str:
    """The rule of docs/results.md on one row against the one it is compared with: on the boards that
    vote, an interval wholly above 0 is a gain, wholly below a loss, one holding 0 noise. "better": a
    gain and no loss; "worse": a loss and no gain; "val and A disagree"; "noise". B never votes."""
    if pd.isna(line.get("val_delta")):
        return ""
    if not votes:
        return "no vote: val and A chose it"
    signs = {1 if line[f"{b}_low"] > 0 else -1 if line[f"{b}_high"] < 0 else 0 for b in votes}
    if {1, -1} <= signs:
        return "val and A disagree"
    word = "better" if 1 in signs else "worse" if -1 in signs else "noise"
    return word + ("" if tuple(votes) == ("val", "A") else f" ({' and '.join(votes)} only)")


def markdown(frame: pd.DataFrame) -> str:
    """The results page's table: mean ± std, Δ [95 % interval over seeds and queries] against the
    row named, the smallest Δ the design detects on val and A (MDE), and the rule's verdict."""
    out = ["| row | val | A | B | Δ val | Δ A | Δ B | MDE val / A | against | verdict |",
           "|---|---|---|---|---|---|---|---|---|---|"]
    for line in frame.to_dict("records"):
        cells = [f"{line[f'{c}_mean']:.3f}" + (f" ± {line[f'{c}_std']:.3f}" if line["seeds"] > 1 else "")
                 for c, _, _ in BOARDS]
        deltas = [f"{line[f'{c}_delta']:+.3f} [{line[f'{c}_low']:+.3f}, {line[f'{c}_high']:+.3f}]"
                  if pd.notna(line.get(f"{c}_delta")) else "" for c, _, _ in BOARDS]
        mde = (f"{line['val_mde']:.3f} / {line['A_mde']:.3f}" if pd.notna(line.get("val_mde")) else "")
        out.append(f"| {line['row']} | " + " | ".join(cells + deltas + [mde]) + f" | {line['against']} | "
                   f"{line['verdict']} |")
    return "\n".join(out)


def table_paths(folder: Path, run_name: str, label: str) -> dict[str, Path]:
    """<folder>/<run>-<label>.csv, .md, -seeds.csv and -per-query.csv.gz, appended to the name: a run's
    name holds dots (lr0.0003), which Path.with_suffix would take for a suffix and cut."""
    stem = f"{run_name}-{label}"
    return {"csv": folder / f"{stem}.csv", "md": folder / f"{stem}.md", "seeds": folder / f"{stem}-seeds.csv",
            "per_query": folder / f"{stem}-per-query.csv.gz"}


def read_table(csv_text: str) -> pd.DataFrame:
    """A table written by write_tables, read back: empty cells are NaN for figures, "" for words."""
    frame = pd.read_csv(io.StringIO(csv_text), keep_default_na=False, na_values=[""])
    words = ["row", "against", "verdict"]
    frame[words] = frame[words].astype(object).where(frame[words].notna(), "")
    return frame


def write_tables(frame: pd.DataFrame, aps: pd.DataFrame, paths: dict[str, Path]) -> str:
    """`table`'s frame and the per-query APs as the four files (the gzip without a time stamp: the same
    tables, the same bytes); the Markdown."""
    csv_text = frame.to_csv(index=False, float_format="%.6f", lineterminator="\n")
    paths["csv"].parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(paths["csv"], csv_text)
    atomic_write_text(paths["seeds"], seed_table(aps).to_csv(index=False, float_format="%.4f",
                                                             lineterminator="\n"))
    data = aps.to_csv(index=False, lineterminator="\n").encode("utf-8")
    atomic_write_bytes(paths["per_query"], gzip.compress(data, mtime=0))
    text = markdown(read_table(csv_text))  # from the CSV's figures: the two files cannot disagree
    atomic_write_text(paths["md"], text + "\n")
    return text


def job_groups(rows: Sequence[Row], jobs: int) -> list[list[str]]:
    """Rows split over `jobs` processes of about equal work: the default and every row that scores its
    seeds again go to the first (they need its checkpoints), the other training rows to the least
    loaded (a fine-tuning counts 1, a scoring a quarter). The zero-shot row runs before them all."""
    groups: list[list[str]] = [[] for _ in range(jobs)]
    load = [0.0] * jobs
    for row in rows:
        if row.name == ZERO_SHOT:
            continue
        if row.name == DEFAULT or not row.trains:
            index = 0
        else:
            index = min(range(jobs), key=lambda i: (load[i], i))
        groups[index].append(row.name)
        load[index] += 1.0 if row.trains else 0.25
    return [group for group in groups if group]


def run_jobs(args: argparse.Namespace, base_run: Path, root: Path, rows: Sequence[Row]) -> None:
    """The rows in --jobs processes side by side (each deterministic: the split changes no figure),
    their output in <run>-<label>-job<i>.log; a job that fails stops the tables."""
    common = ["--run", str(base_run), "--seeds", *map(str, args.seeds), "--label", args.label,
              "--rows", args.rows, "--no-progress"]
    if any(row.name == ZERO_SHOT for row in rows):
        if main([*common, "--only", ZERO_SHOT]) != 0:
            raise KitError("the zero-shot row failed")
    procs = []
    for index, group in enumerate(job_groups(rows, args.jobs)):
        log = root / f"{base_run.name}-{args.label}-job{index}.log"
        print(f"[job {index}] {len(group)} rows -> {log}", flush=True)
        with open(log, "w", encoding="utf-8") as out:
            procs.append((index, log, subprocess.Popen(
                [sys.executable, "-m", "tools.study.ablation", *common, "--only", ",".join(group)],
                stdout=out, stderr=subprocess.STDOUT)))
    failed = [(index, log) for index, log, proc in procs if proc.wait() != 0]
    if failed:
        raise KitError(f"job {failed[0][0]} failed: see {failed[0][1]}")


TABLE_BLOCK = "<!-- table: {path} (written by make ablation --publish; do not edit) -->"
TABLE_END = "<!-- /table -->"


def table_block(path: str, text: str) -> str:
    return f"{TABLE_BLOCK.format(path=path)}\n{text}\n{TABLE_END}"


def update_table_blocks(docs: Path, table: Path) -> list[Path]:
    """Every page under `docs` that shows `table` (between its markers) gets the table's new text."""
    rel = table.resolve().relative_to(REPO_ROOT).as_posix()
    begin, text, changed = TABLE_BLOCK.format(path=rel), table.read_text(encoding="utf-8").rstrip("\n"), []
    for page in sorted(docs.glob("*.md")):
        content = page.read_text(encoding="utf-8")
        start = content.find(begin)
        if start < 0:
            continue
        stop = content.index(TABLE_END, start)
        atomic_write_text(page, content[:start] + table_block(rel, text) + content[stop + len(TABLE_END):])
        changed.append(page)
    return changed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.study.ablation",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("--run", required=True, help="a run whose notebooks 01 and 02 have run")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--label", default="ablation")
    parser.add_argument("--only", default="", help="comma-separated row names (default: every row): "
                        "only these run; two processes with their own rows share the cores")
    parser.add_argument("--publish", type=Path, default=None, metavar="FOLDER",
                        help="also write the tables there (docs/tables: the results page shows them)")
    parser.add_argument("--name", default="", help="the tables' name instead of the run's (e.g. world0)")
    parser.add_argument("--rows", choices=("ablation", "defaults"), default="ablation",
                        help="ablation: the chain and the choices; defaults: each default of the run's "
                             "profile against its alternative (make confirm)")
    parser.add_argument("--jobs", type=int, default=1,
                        help="processes side by side (2 on 2 cores: the rows split between them)")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    try:
        base_run = runs.find_run(args.run)
        base_cfg = runs.read_params(base_run)
        table_rows = ROWS if args.rows == "ablation" else default_rows(base_cfg)
        wanted = [n.strip() for n in args.only.split(",") if n.strip()] or list(table_rows)
        unknown = [n for n in wanted if n not in table_rows]
        if unknown:
            raise config_mod.ConfigError(f"--only: unknown rows {unknown}; rows: {', '.join(table_rows)}")
        if args.jobs > 1:
            run_jobs(args, base_run, base_cfg.path("runs_root"), [table_rows[n] for n in wanted])
        folders = run_rows(base_cfg, base_run, [table_rows[n] for n in wanted], args.seeds, args.label,
                           progress=not args.no_progress)  # after --jobs: every seed scored, nothing runs
    except KitError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    # --only runs just those rows (another process may be running the rest: two can share the cores);
    # the rows they are compared with join the tables when their seeds are scored
    root = base_cfg.path("runs_root")
    for name in {table_rows[n].against for n in wanted} - {"", *folders}:
        paths = row_paths(root, base_run, table_rows[name], args.seeds, args.label)
        if scored(paths):
            folders[name] = paths
        else:
            print(f"note: {name!r} is not scored yet: the rows compared with it have no change column")
    rows = [row for row in table_rows.values() if row.name in folders]
    aps = per_query(folders)
    frame = table(rows, aps)  # the bootstraps, once for every folder written
    for folder in [base_cfg.path("runs_root"), *([args.publish] if args.publish else [])]:
        paths = table_paths(Path(folder), args.name or base_run.name, args.label)
        text = write_tables(frame, aps, paths)
        print(f"tables: {', '.join(str(p) for p in paths.values())}")
        if args.publish and Path(folder) == args.publish and paths["md"].resolve().is_relative_to(REPO_ROOT):
            for page in update_table_blocks(REPO_ROOT / "docs", paths["md"]):
                print(f"updated the table in {page.relative_to(REPO_ROOT)}")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())

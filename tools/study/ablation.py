"""The ablation and the choices, measured as the competition chose: on val and board A, over seeds.

    python -m tools.study.ablation --run runs/<name> [--seeds 0 1 2] [--label ablation] [--only ROW,...]

Every row is three fine-tunings (seeds 0, 1, 2) of the same prepared data (the base run's), or,
for a row that changes only what happens after training (a soup, re-ranking, the query policy),
the default's three trained seeds scored again. Each row gives val, test A and test B official
mAP@10 as mean ± std over the seeds, and its change against a reference row with the paired
bootstrap interval over the queries (each query's AP averaged over the seeds first). The chain
(zero-shot → fine-tuned → + attribute augmentation → + jitter → + soup → + re-ranking) compares each
row with the one before; the choices compare with the default. B is reported, never used to
choose. Resumable: a seed that has its scores is not run again. Writes <run>-<label>.csv and .md.
"""
from __future__ import annotations

import argparse
import os
import shutil
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
from lib.soup.make import make_soup
from tools.study.seed_study import ZERO_SHOT, run_study

DEFAULT = "default"
BOARDS = (("val", "val", ""), ("A", "test", "A"), ("B", "test", "B"))  # column, split, board in per_query.csv


@dataclass(frozen=True)
class Row:
    """One line of the tables: what it changes, whether it trains, and what it is compared with."""

    name: str
    overrides: dict[str, Any] = field(default_factory=dict)
    trains: bool = True  # False: the default's trained seeds, scored again with the overrides
    against: str = DEFAULT


CHAIN = (
    Row(ZERO_SHOT, trains=False, against=""),
    Row("fine-tuned, no attribute augmentation, no jitter",
        {"attribute_augmentation": False, "photometric_jitter_prob": 0.0}, against=ZERO_SHOT),
    Row("+ attribute augmentation", {"photometric_jitter_prob": 0.0},
        against="fine-tuned, no attribute augmentation, no jitter"),
    Row(DEFAULT, against="+ attribute augmentation"),  # + the photometric jitter
    Row("+ greedy soup", {"soup": "greedy"}, trains=False),
    Row("+ A3R re-ranking", {"rerank": "a3r"}, trains=False),
)
CHOICES = (
    Row("lr 1e-4", {"lr": 1e-4}),
    Row("uniform soup", {"soup": "uniform"}, trains=False),
    Row("WiSE-FT (alpha on the grid)", {"soup": "wise"}, trains=False),
    Row("query policy none", {"query_policy": "none"}, trains=False),
    Row("query policy surveillance", {"query_policy": "surveillance"}, trains=False),
    Row("category-aware retrieval", {"category_aware": True}, trains=False),
    Row("aQE re-ranking", {"rerank": "aqe"}, trains=False),
    Row("k-reciprocal re-ranking", {"rerank": "kreciprocal"}, trains=False),
)
ROWS = {row.name: row for row in CHAIN + CHOICES}


def _slug(name: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in name.lower()).strip("-")


def run_rows(base_cfg: Config, base_run: Path, rows: Sequence[Row], seeds: Sequence[int], label: str,
             progress: bool = True, log: Callable[[str], None] = print) -> dict[str, list[Path]]:
    """Every row's scored run folders (one per seed; the zero-shot row has one)."""
    root = base_cfg.path("runs_root")
    folders: dict[str, list[Path]] = {}
    default_runs = [root / f"{base_run.name}-{label}-{DEFAULT}-seed{s}" for s in seeds]
    for row in sorted(rows, key=lambda r: (not r.trains, r.name != DEFAULT)):  # training rows first
        cfg = base_cfg.replace(**row.overrides)
        if row.name == ZERO_SHOT:
            folders[row.name] = [root / f"{base_run.name}-{ZERO_SHOT}"]
            run_study(cfg, base_run, [], label, progress=progress, log=log)  # scores the zero-shot run only
        elif row.trains:
            run_study(cfg, base_run, seeds, f"{label}-{_slug(row.name)}", progress=progress, log=log)
            folders[row.name] = [root / f"{base_run.name}-{label}-{_slug(row.name)}-seed{s}" for s in seeds]
        else:
            folders[row.name] = [_rescore(cfg, trained, label, row, progress, log)
                                 for trained in default_runs]
    return folders


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
    shutil.copytree(trained / "checkpoints", out / "checkpoints", dirs_exist_ok=True, copy_function=os.link)
    for name in ("metrics.jsonl",):
        shutil.copy2(trained / name, out / name)
    runs.write_params(seeded, out)
    log(f"[{row.name}] scoring {trained.name}'s checkpoints again -> {out}")
    make_soup(seeded, out, progress=progress)
    infer(seeded, out, progress=progress)
    return out


def _per_query(folders: list[Path]) -> pd.DataFrame:
    """Each query's official AP averaged over the seeds (split, board, query as the index)."""
    tables = [pd.read_csv(f / PER_QUERY_FILE, keep_default_na=False).set_index(["split", "board", "query"])
              for f in folders]
    return sum(t["ap_official"] for t in tables) / len(tables)


def _board(ap: pd.Series, split: str, board: str) -> np.ndarray:
    picked = ap.xs(split, level="split")
    return picked.xs(board, level="board").to_numpy() if board else picked.to_numpy()


def table(rows: Sequence[Row], folders: dict[str, list[Path]]) -> pd.DataFrame:
    """One line a row: mean ± std of val, A and B over the seeds; the change against its reference."""
    aps = {name: _per_query(paths) for name, paths in folders.items()}
    lines = []
    for row in rows:
        line: dict[str, Any] = {"row": row.name, "seeds": len(folders[row.name]),
                                "against": row.against if row.name != DEFAULT or row.against else ""}
        for column, split, board in BOARDS:
            per_seed = [_board(_per_query([f]), split, board).mean() for f in folders[row.name]]
            line[f"{column}_mean"] = float(np.mean(per_seed))
            line[f"{column}_std"] = float(np.std(per_seed, ddof=1)) if len(per_seed) > 1 else float("nan")
            if row.against and row.against in aps:
                diff = paired_difference(_board(aps[row.against], split, board),
                                         _board(aps[row.name], split, board))
                line[f"{column}_delta"], line[f"{column}_low"], line[f"{column}_high"] = (
                    diff.delta, diff.low, diff.high)
        lines.append(line)
    return pd.DataFrame(lines)


def markdown(frame: pd.DataFrame) -> str:
    """The results page's table: mean ± std, and Δ [95 % interval] against the row named."""
    out = ["| row | val | A | B | Δ val | Δ A | Δ B | against |", "|---|---|---|---|---|---|---|---|"]
    for line in frame.to_dict("records"):
        cells = [f"{line[f'{c}_mean']:.3f}" + (f" ± {line[f'{c}_std']:.3f}" if line["seeds"] > 1 else "")
                 for c, _, _ in BOARDS]
        deltas = [f"{line[f'{c}_delta']:+.3f} [{line[f'{c}_low']:+.3f}, {line[f'{c}_high']:+.3f}]"
                  if pd.notna(line.get(f"{c}_delta")) else "" for c, _, _ in BOARDS]
        out.append(f"| {line['row']} | " + " | ".join(cells + deltas) + f" | {line['against']} |")
    return "\n".join(out)


def table_paths(runs_root: Path, run_name: str, label: str) -> tuple[Path, Path]:
    """<runs_root>/<run>-<label>.csv and .md, appended to the name: a run's name holds dots
    (lr0.0003), which Path.with_suffix would take for a suffix and cut."""
    stem = f"{run_name}-{label}"
    return runs_root / f"{stem}.csv", runs_root / f"{stem}.md"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.study.ablation",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("--run", required=True, help="a run whose notebooks 01 and 02 have run")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--label", default="ablation")
    parser.add_argument("--only", default="", help="comma-separated row names (default: every row)")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    try:
        base_run = runs.find_run(args.run)
        base_cfg = runs.read_params(base_run)
        wanted = [n.strip() for n in args.only.split(",") if n.strip()] or list(ROWS)
        unknown = [n for n in wanted if n not in ROWS]
        if unknown:
            raise config_mod.ConfigError(f"--only: unknown rows {unknown}; rows: {', '.join(ROWS)}")
        needed = {DEFAULT, *wanted, *(ROWS[n].against for n in wanted if ROWS[n].against)}
        rows = [ROWS[n] for n in ROWS if n in needed]
        folders = run_rows(base_cfg, base_run, rows, args.seeds, args.label, progress=not args.no_progress)
    except KitError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    frame = table(rows, folders)
    csv_path, md_path = table_paths(base_cfg.path("runs_root"), base_run.name, args.label)
    frame.to_csv(csv_path, index=False, float_format="%.4f")
    text = markdown(frame)
    md_path.write_text(text + "\n", encoding="utf-8")
    print(text)
    print(f"tables: {csv_path}, {md_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

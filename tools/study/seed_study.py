"""Fine-tune again under other seeds, from one prepared run: is a gain larger than the seeds' spread?

One run's test gain can be luck. On the demo, three fine-tuning seeds of the same recipe spread
test mAP@10 over 0.04, as much as the gain fine-tuning was credited with. This reruns 03_train and
04_infer for each seed, and 04_infer once for the zero-shot foundation model. The data, the
augmented captions and the foundation model stay those of `--run`, and so do its parameters (its
params.yaml), but for the overrides under study. It tabulates val and test per seed, with mean and
standard deviation, and the gain over zero-shot. With `soup=greedy` (uniform, wise) each seed's
soup is made after training and scored instead of its best epoch (lib.soup.make).

    python -m tools.study.seed_study --run runs/latest --seeds 0 1 2 [--label jitter] [key=value ...]

Each seed gets its own run directory `<runs_root>/<run>-<label>-seed<N>/`. A seed that already has its
scores is not run again, so an interrupted study goes on where it stopped.
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import pandas as pd

from lib import config as config_mod
from lib import runs, steps
from lib.augment.attribute_augmentation import augment_run
from lib.config import Config
from lib.errors import KitError
from lib.eval.infer import SCORES_FILE, infer
from lib.pipeline.fine_tune import fine_tune
from lib.soup.make import make_soup

COLUMNS = {  # column -> (split, key in scores.json); choose on val and A, report B
    "val_official": ("val", "map10_official"), "val_standard": ("val", "map10_standard"),
    "A_official": ("test_A", "map10_official"), "A_standard": ("test_A", "map10_standard"),
    "B_official": ("test_B", "map10_official"), "B_standard": ("test_B", "map10_standard"),
    "test_official": ("test", "map10_official"), "test_standard": ("test", "map10_standard"),
    "test_car_official": ("test", "car_map10_official"),
    "test_person_official": ("test", "person_map10_official"),
}
ZERO_SHOT = "zero-shot"


def scores_row(name: str, scores: dict) -> dict:
    """One table row from a scores.json; test columns stay empty on data without test answers."""
    row = {"run": name, "checkpoint": scores.get("checkpoint", "")}
    for column, (split, key) in COLUMNS.items():
        row[column] = scores.get(split, {}).get(key, float("nan"))
    return row


def _prepared_copy(base_run: Path, run_dir: Path, cfg: Config) -> None:
    """A new run directory holding the base run's prepared tables (01/02 outputs) and its own
    params.yaml (the parameters it runs with), nothing else."""
    if not (base_run / "data" / "train.csv").is_file():
        raise KitError(f"{base_run / 'data' / 'train.csv'} is missing: --run must be a run whose "
                       f"notebooks 01 and 02 have run (e.g. runs/latest after make reproduce)")
    run_dir.mkdir(parents=True, exist_ok=True)
    shutil.copytree(base_run / "data", run_dir / "data", dirs_exist_ok=True)
    runs.write_params(cfg, run_dir)
    base = runs.read_params(base_run)
    captions = [key for key, step in steps.AFFECTS.items() if step == "02_augment"]
    if any(getattr(base, key) != getattr(cfg, key) for key in captions):
        augment_run(cfg, run_dir, progress=False)  # the captions this recipe trains on, not the base run's


def _scores(run_dir: Path) -> dict | None:
    path = run_dir / SCORES_FILE
    return json.loads(path.read_text()) if path.is_file() else None


def run_study(cfg: Config, base_run: Path, seeds: Sequence[int], label: str = "study",
              progress: bool = True, log: Callable[[str], None] = print) -> pd.DataFrame:
    """Zero-shot row, then one row per seed (fine-tuned with cfg, seed replaced), then mean and std.

    `cfg`: the base run's parameters with the overrides under study (run_name and resume are set here).
    """
    base_run = Path(base_run).resolve()
    root = cfg.path("runs_root")
    rows = []
    zero_dir = root / f"{base_run.name}-{ZERO_SHOT}"
    if _scores(zero_dir) is None:
        _prepared_copy(base_run, zero_dir, cfg.replace(run_name=zero_dir.name))
        log(f"[{ZERO_SHOT}] scoring the foundation model -> {zero_dir}")
        infer(cfg, zero_dir, progress=progress)
    rows.append(scores_row(ZERO_SHOT, _scores(zero_dir)))
    for seed in seeds:
        run_dir = root / f"{base_run.name}-{label}-seed{seed}"
        seeded = cfg.replace(seed=int(seed), run_name=run_dir.name)
        if _scores(run_dir) is None:
            if not (run_dir / "checkpoints").is_dir():
                _prepared_copy(base_run, run_dir, seeded)
            log(f"[seed {seed}] fine-tuning -> {run_dir}")
            # resume="latest": an interrupted seed goes on where it stopped
            fine_tune(seeded, run_dir, progress=progress, resume="latest")
            make_soup(seeded, run_dir, progress=progress)  # soup=none (the default): nothing
            infer(seeded, run_dir, progress=progress)
        else:
            log(f"[seed {seed}] already scored: {run_dir / SCORES_FILE}")
        rows.append(scores_row(f"seed {seed}", _scores(run_dir)))
    return summarise(pd.DataFrame(rows))


def summarise(table: pd.DataFrame) -> pd.DataFrame:
    """Append mean, std (n-1) and the mean's gain over the zero-shot row for the seed rows."""
    seeds = table[table["run"] != ZERO_SHOT]
    numeric = list(COLUMNS)
    extra = [{"run": "mean", "checkpoint": "", **seeds[numeric].mean().to_dict()},
             {"run": "std", "checkpoint": "", **seeds[numeric].std(ddof=1).to_dict()}]
    zero = table[table["run"] == ZERO_SHOT]
    if len(zero):
        extra.append({"run": "mean - zero-shot", "checkpoint": "",
                      **(seeds[numeric].mean() - zero[numeric].iloc[0]).to_dict()})
    return pd.concat([table, pd.DataFrame(extra)], ignore_index=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.study.seed_study",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("--run", required=True, help="a run whose notebooks 01 and 02 have run (its data/ "
                                                     "and params.yaml)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--label", default="study", help="names the seed runs: <run>-<label>-seed<N>")
    parser.add_argument("--no-progress", action="store_true")
    parser.add_argument("overrides", nargs="*", help="key=value parameter overrides (the recipe under study)")
    args = parser.parse_args(argv)
    try:
        base_run = runs.find_run(args.run)
        cfg = runs.read_params(base_run).replace(**config_mod.parse_overrides(args.overrides))
        table = run_study(cfg, base_run, args.seeds, args.label, progress=not args.no_progress)
    except KitError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    out = cfg.path("runs_root") / f"{base_run.name}-{args.label}.csv"
    table.to_csv(out, index=False, float_format="%.4f")
    with pd.option_context("display.width", 200, "display.float_format", "{:.3f}".format):
        print(table.to_string(index=False))
    print(f"table: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

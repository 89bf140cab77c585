"""`make confirm`: every demo default once more, on a world no choice has seen.

    python -m tools.study.confirm [--world 1] [--seeds 0 1 2] [--jobs 2]

The demo generator makes a whole synthetic world from `demo_seed`: its own train, val and test
images and captions, its own corpus and so its own foundation model, and its own board split. World
0 is the deciding world: every default was chosen on it, and its test answers were looked at
(docs/results.md). World 1 serves only this command. It runs 01_prepare and 02_augment into
runs/demo/world1 (data under data/demo-world1, foundation pretrained there), then each default of
the demo profile against its alternative (tools.study.ablation --rows defaults: three seeds, two
processes side by side), and publishes the tables as docs/tables/world1-confirm.{md,csv} with
per-seed and per-query files. A default holds when no alternative beats it there by the same rule
(val and A, seed-aware intervals).
Resumable: finished seeds are not run again.
"""
from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

from lib import steps
from lib.paths import REPO_ROOT, portable
from tools.study import ablation

PUBLISH = REPO_ROOT / "docs" / "tables"
LABEL = "confirm"
PREPARE = ["01_prepare", "02_augment"]


def world_overrides(world: int) -> list[str]:
    """A world's own data, foundation and run folder (runs/demo/world<N>)."""
    data = f"data/demo-world{world}"
    return [f"demo_seed={world}", f"data_root={data}", f"pretrained={data}/foundation/foundation.pt",
            f"run_name=world{world}"]


def prepare_world(world: int) -> Path:
    """runs/demo/world<N> with 01 and 02 done (made, or continued when cut off)."""
    run_dir = REPO_ROOT / "runs" / "demo" / f"world{world}"
    if run_dir.is_dir() and set(PREPARE) <= set(steps.completed(run_dir, PREPARE)):
        print(f"[confirm] world {world}: {portable(run_dir)} is prepared")
        return run_dir
    if run_dir.is_dir():
        command = ["--resume", str(run_dir)]
    else:
        command = ["--profile", "demo", "--notebooks", ",".join(PREPARE), *world_overrides(world)]
    print(f"[confirm] world {world}: preparing {portable(run_dir)}", flush=True)
    code = subprocess.call([sys.executable, "-m", "lib.pipeline", *command], cwd=REPO_ROOT)
    if code != 0:
        raise SystemExit(code)
    return run_dir


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.study.confirm", description=__doc__.split("\n")[0])
    parser.add_argument("--world", type=int, default=1, help="the world's demo_seed (not 0: it decided)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--only", default="", help="comma-separated ablation rows (default: every row)")
    args = parser.parse_args(argv)
    if args.world == 0:
        print("error: world 0 decided the defaults; confirm them on another (--world 1)", file=sys.stderr)
        return 2
    run_dir = prepare_world(args.world)
    return ablation.main(["--run", str(run_dir), "--rows", "defaults", "--label", LABEL,
                          "--seeds", *map(str, args.seeds),
                          "--jobs", str(args.jobs), "--publish", str(PUBLISH), "--name", f"world{args.world}",
                          "--no-progress", *(["--only", args.only] if args.only else [])])


if __name__ == "__main__":
    sys.exit(main())

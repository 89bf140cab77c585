"""`make rehearsal`: the competition profile's code path at the competition's sizes, on a CPU.

    python -m tools.rehearsal [--root data/rehearsal] [--steps 40] [key=value ...]

Before renting GPUs, check the environment on the data's real sizes: the demo generator lays out a
synthetic dataset in the organisers' formats at the competition's counts (126,117 train lines,
10,000 val, a 17,611-image test gallery and 17,611 queries), then the pipeline runs the
competition profile on it (`python -m lib.pipeline --profile competition`) with the tiny model in
place of ViT-bigG-14. Only what a CPU needs changes, each override printed:
- model kit-tiny-vit and the demo's shipped foundation model as the pretrained file (with its
  sha256, as laion2b's would be given offline);
- max_steps (default 40): training stops in epoch 1, so submit_epoch is 1 (the profile's 5 would be
  refused: the run never reaches it);
- no_gain_over_zero_shot warn: 40 steps at the reference's lr 4e-7 teach the model nothing.
Everything else (batch 25, workers 8, attribute augmentation of every field on unpadded images, the
val captions completed, strip_prefix, the submission and its check) is the profile's. At the end,
each step's seconds and peak memory (from the run's pipeline.json) and the run folder.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

from lib.demo.dataset import make_demo_dataset
from lib.demo.foundation import SHIPPED_DIR
from lib.paths import REPO_ROOT, portable
from lib.runs import find_run

REAL_SIZES = {"train_size": 126_117, "val_size": 10_000, "test_size": 17_611}  # spec/competition.md
CORPUS_SIZE = 2  # the generator's minimum: nothing is pretrained, the shipped foundation stands in
RUNS_ROOT = "runs/rehearsal"
FOUNDATION = SHIPPED_DIR / "demo-seed0.pt"


def overrides(root: Path, steps: int) -> list[str]:
    """The competition profile's parameters a CPU rehearsal changes (see the module docstring)."""
    digest = json.loads(FOUNDATION.with_suffix(".json").read_text())["sha256"]
    return [f"data_root={portable(root)}", f"runs_root={RUNS_ROOT}", "model=kit-tiny-vit",
            f"pretrained={portable(FOUNDATION)}", f"pretrained_sha256={digest}", f"max_steps={steps}",
            "submit_epoch=1", "no_gain_over_zero_shot=warn"]


def step_table(run_dir: Path) -> str:
    """Each step's seconds and peak memory, as the pipeline recorded them."""
    steps = json.loads((run_dir / "pipeline.json").read_text())["steps"]
    lines = ["| step | seconds | peak memory |", "|---|---|---|"]
    for name, step in steps.items():
        memory = step.get("peak_memory_bytes")
        lines.append(f"| {name} | {step.get('seconds', 0):.0f} | "
                     + (f"{memory / 1e9:.1f} GB |" if memory else "– |"))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.rehearsal", description=__doc__.split("\n")[0])
    parser.add_argument("--root", type=Path, default=REPO_ROOT / "data" / "rehearsal",
                        help="where the synthetic dataset goes (data/rehearsal: about 1 GB)")
    parser.add_argument("--steps", type=int, default=40, help="training steps (max_steps; default 40)")
    parser.add_argument("--sizes", default="", help="train,val,test counts instead of the competition's "
                                                    "(a quick try: 2000,500,500)")
    parser.add_argument("extra", nargs="*", help="further key=value overrides of the competition profile")
    args = parser.parse_args(argv)
    sizes = dict(REAL_SIZES)
    if args.sizes:
        try:
            sizes = dict(zip(REAL_SIZES, (int(n) for n in args.sizes.split(",")), strict=True))
        except ValueError:
            print(f"error: --sizes takes three counts, train,val,test; got {args.sizes!r}", file=sys.stderr)
            return 2
    root = args.root if args.root.is_absolute() else Path.cwd() / args.root
    print(f"[rehearsal] the synthetic dataset at {sizes['train_size']:,} train, {sizes['val_size']:,} val, "
          f"{sizes['test_size']:,} test lines -> {portable(root)}", flush=True)
    make_demo_dataset(root, seed=0, corpus_size=CORPUS_SIZE, **sizes)
    changed = overrides(root, args.steps) + list(args.extra)
    print("[rehearsal] the competition profile with: " + " ".join(changed), flush=True)
    code = subprocess.call([sys.executable, "-m", "lib.pipeline", "--profile", "competition", *changed],
                           cwd=REPO_ROOT)
    run_dir = find_run(str(REPO_ROOT / RUNS_ROOT / "latest"))
    print(f"[rehearsal] {'done' if code == 0 else 'stopped'}: {portable(run_dir)}")
    if (run_dir / "pipeline.json").is_file():
        print(step_table(run_dir))
    return code


if __name__ == "__main__":
    sys.exit(main())

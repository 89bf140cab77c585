"""Fine-tuning as the pipeline runs it: lib.train's loop with lib.eval's val evaluator (lib.train
never imports lib.eval). Under torchrun every process starts here, so each builds the same evaluator:

    torchrun --nproc_per_node=8 -m lib.pipeline.fine_tune --run-dir runs/competition/<name> [--resume latest]
"""
from __future__ import annotations

import os
import sys

from lib.config import Config
from lib.eval.scoring import run_val_evaluator
from lib.train import launch
from lib.train.state import TrainResult

ENTRY = __spec__.name  # this module's name, also when it runs as `-m` (then __name__ is "__main__")


def fine_tune(cfg: Config, run_dir: str | os.PathLike, *, resume: str = "", progress: bool = True,
              processes: int | None = None) -> TrainResult:
    """Train the run with val mAP@10 evaluated before the first step and after each epoch."""
    return launch.launch(cfg, run_dir, evaluator_factory=run_val_evaluator, entry=ENTRY, resume=resume,
                         progress=progress, processes=processes)


def main(argv: list[str] | None = None) -> int:
    return launch.main(argv, evaluator_factory=run_val_evaluator, prog=f"python -m {ENTRY}")


if __name__ == "__main__":
    sys.exit(main())

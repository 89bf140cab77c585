"""What a training run writes as it goes: out.log, metrics.jsonl (a row per evaluation; epoch 0 is the
starting point) and TensorBoard events when tensorboard is installed."""
from __future__ import annotations

import contextlib
import datetime as dt
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import torch


class RunLog:
    """out.log, metrics.jsonl and TensorBoard of one run; on ranks other than 0, does nothing."""

    def __init__(self, run_dir: Path, enabled: bool = True, echo=print):
        self.enabled, self.echo = enabled, echo
        self.log_path, self.metrics_path = run_dir / "out.log", run_dir / "metrics.jsonl"
        self.tb = None
        if enabled:
            run_dir.mkdir(parents=True, exist_ok=True)
            with contextlib.suppress(ImportError):  # optional, as in open_clip: not a requirement of the kit
                from torch.utils.tensorboard import SummaryWriter

                self.tb = SummaryWriter(str(run_dir / "tensorboard"))

    def line(self, text: str, echo: bool = False) -> None:
        if not self.enabled:
            return
        stamp = dt.datetime.now().strftime("%Y-%m-%d %H:%M:%S")
        with self.log_path.open("a", encoding="utf-8") as f:
            f.write(f"{stamp} | {text}\n")
        if echo:
            self.echo(text)

    def scalars(self, values: dict[str, float], step: int, prefix: str) -> None:
        if self.tb is not None:
            for key, value in values.items():
                if isinstance(value, (int, float)) and not isinstance(value, bool):
                    self.tb.add_scalar(f"{prefix}/{key}", value, step)

    def metrics(self, row: dict[str, Any]) -> None:
        if not self.enabled:
            return
        with self.metrics_path.open("a", encoding="utf-8") as f:
            f.write(json.dumps(_jsonable(row)) + "\n")
        self.scalars({k: v for k, v in row.items() if k not in ("epoch", "step")}, row["step"], "val")

    def truncate_after(self, step: int) -> None:
        """On resume: forget evaluations the resumed run will redo (those after its checkpoint)."""
        if not self.enabled or not self.metrics_path.is_file():
            return
        kept = [r for r in read_metrics(self.metrics_path) if r["step"] <= step]
        self.metrics_path.write_text("".join(json.dumps(r) + "\n" for r in kept), encoding="utf-8")

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (np.generic, torch.Tensor)):
        return value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def read_metrics(path: Path) -> list[dict[str, Any]]:
    if not Path(path).is_file():
        return []
    return [json.loads(line) for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]

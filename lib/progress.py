"""Progress of long work: a tqdm bar where the work runs and, under the pipeline, a line every few
seconds in its terminal. A notebook's kernel has no terminal, so the pipeline names a file in
KIT_PROGRESS_LOG: each bar appends a line to it (at its end, and every tenth of its running time
within EVERY_S..LONGEST_S), as does `note`; the pipeline prints them. Elsewhere nothing is written.
"""
from __future__ import annotations

import os
import time
from typing import Any

from tqdm import tqdm

LOG_ENV = "KIT_PROGRESS_LOG"
EVERY_S = 5.0
LONGEST_S = 60.0
LINE_FORMAT = "{desc}: {n_fmt}/{total_fmt} {unit} ({percentage:.0f} %), {rate_fmt}, {remaining} left{postfix}"
OPEN_FORMAT = "{desc}: {n_fmt} {unit}, {rate_fmt}{postfix}"  # no total: no share, no time left


def note(text: str) -> None:
    """A line for the pipeline's terminal (nothing outside the pipeline)."""
    path = os.environ.get(LOG_ENV)
    if path:
        with open(path, "a", encoding="utf-8") as f:
            f.write(text.rstrip("\n") + "\n")


class _Nowhere:
    """A file that drops what it is given: a bar the notebook should not show still reports its lines."""

    def write(self, text: str) -> int:
        return len(text)

    def flush(self) -> None:
        pass


class _Bar(tqdm):
    """tqdm that also reports to the progress log, at most every EVERY_S seconds and once at the end."""

    def __init__(self, *args: Any, **kwargs: Any):
        self._reported_at = -EVERY_S  # set before tqdm's __init__, which may already display
        self._reported_n = -1
        self._started_at = time.monotonic()
        super().__init__(*args, **kwargs)

    def display(self, msg: str | None = None, pos: int | None = None) -> bool | None:
        shown = super().display(msg, pos)
        now = time.monotonic()
        due = now - self._reported_at >= report_interval(now - self._started_at)
        if self.n and due:  # 0 of N says nothing yet
            self._report()
        return shown

    def close(self) -> None:
        if not self.disable and self.n != self._reported_n:
            self._report()
        super().close()

    def _report(self) -> None:
        self._reported_at, self._reported_n = time.monotonic(), self.n
        meter = {**self.format_dict, "bar_format": LINE_FORMAT if self.total else OPEN_FORMAT, "ncols": None}
        note(" ".join(self.format_meter(**meter).split()))


def report_interval(elapsed_s: float) -> float:
    """Seconds between two lines of a bar that has run `elapsed_s`: a tenth of that, in EVERY_S..LONGEST_S."""
    return min(LONGEST_S, max(EVERY_S, elapsed_s / 10))


def bar(total: int | None = None, desc: str = "", unit: str = "it", show: bool = True, report: bool = True,
        **kwargs: Any) -> tqdm:
    """A progress bar over `total` items: shown where the work runs when `show`, reported to the
    pipeline's terminal when `report` (even when not shown: the quick review's notebook holds no timings)."""
    if not report or not os.environ.get(LOG_ENV):
        return tqdm(total=total, desc=desc, unit=unit, disable=not show, **kwargs)
    return _Bar(total=total, desc=desc or "progress", unit=unit, file=None if show else _Nowhere(), **kwargs)


def write(text: str) -> None:
    """A line where the work runs, without breaking a bar that is being drawn, and to the terminal."""
    tqdm.write(text)
    note(text)

"""One notebook of the pipeline, executed by papermill into a run, with its progress in the terminal
(and in `<run>/logs/<step>.log`, with the kernel's stderr). A failed cell, a cell over its time limit,
a full disk: one line, and the executed notebook is kept.
"""
from __future__ import annotations

import contextlib
import datetime as dt
import errno
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import nbformat
import papermill as pm
from nbclient.exceptions import CellTimeoutError, DeadKernelError
from papermill.exceptions import PapermillExecutionError

from lib import progress, steps
from lib.errors import KitError
from lib.files import DiskFull
from lib.paths import REPO_ROOT, portable

NOTEBOOK_DIR = REPO_ROOT / "notebooks"
PAGE_BYTES = os.sysconf("SC_PAGE_SIZE")
KERNEL_QUIET = ["--IPKernelApp.log_level=ERROR"]  # no transport warning from each kernel in the terminal
Log = Callable[[str], None]


class NotebookFailed(KitError, RuntimeError):
    """A pipeline notebook raised; the executed copy is kept for reading."""


@contextlib.contextmanager
def kernel_env(progress_file: Path) -> Iterator[None]:
    """A pipeline kernel's environment (restored afterwards): `lib` importable, no model hub, progress
    to `progress_file`, the run marked as the pipeline's (not a hand run), the inline figure backend."""
    saved = dict(os.environ)
    paths = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    python_path = os.pathsep.join([str(REPO_ROOT), *[p for p in paths if p != str(REPO_ROOT)]])
    os.environ.update({"PYTHONPATH": python_path, progress.LOG_ENV: str(progress_file),
                       steps.PIPELINE_ENV: "1", "TQDM_MININTERVAL": "1"})
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.pop("MPLBACKEND", None)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


def tree_memory_bytes(root_pid: int, proc: Path = Path("/proc")) -> int:
    """Resident memory of every process below `root_pid` (kernel, loader workers, torchrun's) from /proc."""
    children: dict[int, list[int]] = {}
    for stat in proc.glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue  # a process that ended while we looked
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    total, todo = 0, list(children.get(root_pid, []))
    while todo:
        pid = todo.pop()
        todo += children.get(pid, [])
        try:
            total += int((proc / str(pid) / "statm").read_text().split()[1]) * PAGE_BYTES
        except (OSError, IndexError, ValueError):
            continue
    return total


class _Terminal:
    """A notebook's progress lines (lib.progress), printed with the step's name as they arrive and kept
    in the step's log, and the most memory its kernel's processes held (`peak_bytes`, sampled each 0.5 s)."""

    def __init__(self, name: str, log_path: Path, log: Log):
        self.name, self.log_path, self.log = name, log_path, log
        self.progress_file = log_path.with_name(f".{log_path.stem}.progress")
        log_path.parent.mkdir(parents=True, exist_ok=True)
        self.progress_file.write_text("", encoding="utf-8")
        self._stop, self._offset, self.peak_bytes = threading.Event(), 0, 0
        self._thread = threading.Thread(target=self._follow, daemon=True)

    def __enter__(self) -> _Terminal:
        self._append(f"--- {dt.datetime.now().isoformat(timespec='seconds')} {self.name}")
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._drain()
        self.progress_file.unlink(missing_ok=True)

    def _append(self, text: str) -> None:
        with self.log_path.open("a", encoding="utf-8") as f:
            f.write(text + "\n")

    def _follow(self) -> None:
        while not self._stop.wait(0.5):
            self._drain()
            self.peak_bytes = max(self.peak_bytes, tree_memory_bytes(os.getpid()))

    def _drain(self) -> None:
        try:
            with self.progress_file.open("rb") as f:
                f.seek(self._offset)
                chunk = f.read()
        except OSError:
            return
        complete = chunk[: chunk.rfind(b"\n") + 1]  # a line being written waits for its end
        self._offset += len(complete)
        for line in complete.decode("utf-8", errors="replace").splitlines():
            self.log(f"[{self.name}] {line}")
            self._append(line)


@contextlib.contextmanager
def stderr_to(path: Path) -> Iterator[None]:
    """File descriptor 2, which a kernel inherits, appended to `path`: a kernel's own talk is for the log."""
    sys.stderr.flush()
    saved = os.dup(2)
    with open(path, "a", encoding="utf-8") as log:
        os.dup2(log.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)


def final_stream_states(path: Path) -> None:
    """Keep what a terminal would show of each cell's output: streams merged, bars at their last state."""
    nb = nbformat.read(path, as_version=4)
    for cell in nb.cells:
        if cell.cell_type != "code" or not cell.get("outputs"):
            continue
        merged: list = []
        for output in cell.outputs:
            if (output.output_type == "stream" and merged and merged[-1].output_type == "stream"
                    and merged[-1].name == output.name):
                merged[-1].text += output.text
            else:
                merged.append(output)
        for output in merged:
            if output.output_type == "stream":
                output.text = carriage_returns_applied(output.text)
        cell.outputs = [o for o in merged if o.output_type != "stream" or o.text.strip()]
    nbformat.write(nb, path)


def carriage_returns_applied(text: str) -> str:
    """Each line as a terminal leaves it (a carriage return overwrites from the line's start); a line
    that a carriage return left blank (a bar cleared for a message) is dropped."""
    lines = []
    for line in text.split("\n"):
        shown = ""
        for part in line.split("\r"):
            shown = part + shown[len(part):]
        if shown.strip() or "\r" not in line:
            lines.append(shown.rstrip())
    return "\n".join(lines)


def run_notebook(name: str, out_dir: Path, parameters: dict[str, Any], timeout_s: int | None = None,
                 log: Log = print, log_path: Path | None = None, stats: dict[str, Any] | None = None) -> Path:
    """Execute one notebook with papermill into out_dir/<name>.ipynb (via a partial file that replaces
    it at the end), showing its progress; on failure raise with the cell's error. `log_path` defaults
    to `<out_dir>/logs/<name>.log`; `stats` gets the step's `seconds` and `peak_memory_bytes`."""
    source = NOTEBOOK_DIR / f"{name}.ipynb"
    declared = pm.inspect_notebook(str(source))  # pass each notebook only the parameters it declares
    parameters = {key: value for key, value in parameters.items() if key in declared}
    target = out_dir / f"{name}.ipynb"
    partial = out_dir / f".{name}.partial.ipynb"
    log_path = log_path or out_dir / "logs" / f"{name}.log"
    start = time.monotonic()
    log(f"[{name}] running -> {portable(target)} (these lines also go to {portable(log_path)})")
    try:
        with (_Terminal(name, log_path, log) as terminal, kernel_env(terminal.progress_file),
              stderr_to(log_path)):
            pm.execute_notebook(str(source), str(partial), parameters=parameters, cwd=str(NOTEBOOK_DIR),
                                kernel_name="python3", execution_timeout=timeout_s, progress_bar=False,
                                log_output=False, stdout_file=None, stderr_file=None,
                                extra_arguments=KERNEL_QUIET)
    except (PapermillExecutionError, DeadKernelError, CellTimeoutError) as err:
        _keep(partial, target)  # the failed notebook, whole, for reading
        if isinstance(err, PapermillExecutionError):
            what = f"{name} failed in cell {err.exec_count}: {err.ename}: {err.evalue}\n"
        elif isinstance(err, DeadKernelError):
            what = f"{name}: its kernel died (killed, or out of memory: see dmesg); "
        else:
            what = f"{name}: a cell ran longer than --cell-timeout {timeout_s} s and was stopped; "
        raise NotebookFailed(f"{what}the executed notebook is kept: {portable(target)}") from None
    except OSError as err:
        if err.errno == errno.ENOSPC:
            raise DiskFull(target) from None
        raise
    _keep(partial, target)
    seconds = time.monotonic() - start
    if stats is not None:
        stats.update(seconds=round(seconds, 1), peak_memory_bytes=terminal.peak_bytes)
    log(f"[{name}] done in {seconds:.0f} s" + (f", at most {terminal.peak_bytes / 1e9:.1f} GB of memory "
                                               "(the kernel and its workers)" if terminal.peak_bytes else ""))
    return target


def _keep(partial: Path, target: Path) -> None:
    if partial.exists():
        final_stream_states(partial)
        os.replace(partial, target)

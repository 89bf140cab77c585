"""lib.pipeline.notebooks: a failing notebook is named with its cell's error and kept; the stored
notebook keeps each progress bar's last state; the kernel's environment; a notebook runs as Jupyter
runs it, from notebooks/ without PYTHONPATH."""
from __future__ import annotations

import json
import os

import pytest

from lib.pipeline import notebooks


def _notebook(path, source: str) -> None:
    cell = {"cell_type": "code", "execution_count": None, "id": "x", "metadata": {}, "outputs": [],
            "source": source}
    params = {**cell, "id": "p", "metadata": {"tags": ["parameters"]}, "source": "run_dir = ''"}
    kernel = {"display_name": "Python 3", "language": "python", "name": "python3"}
    path.write_text(json.dumps({"cells": [params, cell], "metadata": {"kernelspec": kernel},
                                "nbformat": 4, "nbformat_minor": 5}))


@pytest.mark.slow
def test_a_failing_notebook_is_named_with_its_error_and_kept(tmp_path, monkeypatch):
    monkeypatch.setattr(notebooks, "NOTEBOOK_DIR", tmp_path)
    _notebook(tmp_path / "01_prepare.ipynb", "raise ValueError('the labels are broken')")
    (tmp_path / "run").mkdir()
    with pytest.raises(notebooks.NotebookFailed) as err:
        notebooks.run_notebook("01_prepare", tmp_path / "run", {"run_dir": "x"}, timeout_s=60,
                              log=lambda *_: None)
    message = str(err.value)
    assert "01_prepare failed in cell" in message and "ValueError: the labels are broken" in message
    assert (tmp_path / "run" / "01_prepare.ipynb").is_file() and str(tmp_path / "run") in message


@pytest.mark.parametrize("text, shown", [
    ("\r  0%|   | 0/3\r 67%|## | 2/3\r100%|###| 3/3\n", "100%|###| 3/3\n"),  # a bar: its last state
    ("\r 20%|#  | 1/5\r" + " " * 14 + "\r", ""),  # cleared for a message: the line goes
    ("abcdef\rXY\n", "XYcdef\n"),  # a shorter overwrite leaves the rest, as a terminal does
    ("first\n\nlast\n", "first\n\nlast\n"),  # printed blank lines stay
])
def test_carriage_returns_are_applied_as_a_terminal_would(text, shown):
    assert notebooks.carriage_returns_applied(text) == shown


def test_the_stored_notebook_keeps_each_bars_last_state(tmp_path):
    import nbformat

    nb = nbformat.v4.new_notebook()
    stream = nbformat.v4.new_output
    cell = nbformat.v4.new_code_cell("train()")
    cell.outputs = [stream("stream", name="stderr", text="\r  0%| 0/2"),
                    stream("stream", name="stderr", text="\r 50%| 1/2"),
                    stream("stream", name="stdout", text="epoch 1 done\n"),
                    stream("stream", name="stderr", text="\r100%| 2/2\r        \r"),
                    stream("stream", name="stderr", text="\r100%| 2/2\n")]
    nb.cells = [cell]
    path = tmp_path / "x.ipynb"
    nbformat.write(nb, path)
    notebooks.final_stream_states(path)
    outputs = nbformat.read(path, as_version=4).cells[0].outputs
    assert [(o.name, o.text) for o in outputs] == [("stderr", " 50%| 1/2"), ("stdout", "epoch 1 done\n"),
                                                   ("stderr", "100%| 2/2\n")]


def test_a_kernel_starts_with_the_pipelines_environment_and_it_is_restored(tmp_path, monkeypatch):
    from lib import progress, steps

    monkeypatch.setenv("PYTHONPATH", "/elsewhere")
    monkeypatch.delenv(steps.PIPELINE_ENV, raising=False)
    with notebooks.kernel_env(tmp_path / "p"):
        assert os.environ["PYTHONPATH"].split(os.pathsep) == [str(notebooks.REPO_ROOT), "/elsewhere"]
        assert os.environ[progress.LOG_ENV] == str(tmp_path / "p") and os.environ[steps.PIPELINE_ENV] == "1"
    assert os.environ["PYTHONPATH"] == "/elsewhere" and steps.PIPELINE_ENV not in os.environ


@pytest.mark.slow
@pytest.mark.notebook
def test_a_notebook_runs_as_jupyter_runs_it_from_notebooks_without_pythonpath(smoke_notebook, tmp_path):
    """Jupyter starts the kernel in notebooks/ with the environment's own paths: `import lib` must work
    there (the kit is installed into its environment by make setup), with no PYTHONPATH."""
    import shutil

    import nbformat
    from nbclient import NotebookClient

    run_dir = tmp_path / "run"  # a copy: this hand run is recorded in the run it works in
    shutil.copytree(smoke_notebook("04_infer").parent, run_dir)
    nb = nbformat.read(notebooks.NOTEBOOK_DIR / "04_infer.ipynb", as_version=4)
    params = next(c for c in nb.cells if "parameters" in c.metadata.get("tags", []))
    params.source = f"run_dir = {str(run_dir)!r}\noverrides = {{}}\ncheckpoint = ''"
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH",)}
    saved = dict(os.environ)
    try:
        os.environ.clear()
        os.environ.update(env)
        NotebookClient(nb, timeout=600, kernel_name="python3",
                       resources={"metadata": {"path": str(notebooks.NOTEBOOK_DIR)}}).execute()
    finally:
        os.environ.clear()
        os.environ.update(saved)
    shown = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.outputs)
    assert "submission OK" in shown and "ModuleNotFoundError" not in shown


@pytest.mark.slow
def test_a_kernel_that_dies_is_one_line_and_its_notebook_is_kept(tmp_path, monkeypatch):
    monkeypatch.setattr(notebooks, "NOTEBOOK_DIR", tmp_path)
    _notebook(tmp_path / "03_train.ipynb", "import os\nos._exit(9)  # as the kernel out of memory is killed")
    (tmp_path / "run").mkdir()
    with pytest.raises(notebooks.NotebookFailed, match="03_train: its kernel died"):
        notebooks.run_notebook("03_train", tmp_path / "run", {"run_dir": "x"}, timeout_s=60,
                               log=lambda *_: None)
    assert (tmp_path / "run" / "03_train.ipynb").is_file()


def test_a_kernels_memory_is_the_sum_over_its_process_tree(tmp_path, monkeypatch):
    """/proc/<pid>/stat's fourth field is the parent, statm's second the resident pages."""
    monkeypatch.setattr(notebooks, "PAGE_BYTES", 4096)
    tree = {10: (1, 100), 11: (10, 50), 12: (11, 7), 13: (1, 999)}  # pid: (parent, pages)
    for pid, (parent, pages) in tree.items():
        (tmp_path / str(pid)).mkdir()
        (tmp_path / str(pid) / "stat").write_text(f"{pid} (python (kernel)) S {parent} 0 0\n")
        (tmp_path / str(pid) / "statm").write_text(f"5000 {pages} 10 0 0 0 0\n")
    assert notebooks.tree_memory_bytes(10, proc=tmp_path) == (50 + 7) * 4096  # below 10, not 10 itself
    assert notebooks.tree_memory_bytes(1, proc=tmp_path) == (100 + 50 + 7 + 999) * 4096
    assert notebooks.tree_memory_bytes(12, proc=tmp_path) == 0

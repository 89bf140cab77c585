"""lib.pipeline: a refusal is one line and exit 1 (a bug keeps its traceback); a failing notebook is
named with its cell's error, and its executed copy is kept."""
from __future__ import annotations

import json
import os

import pytest

from lib import pipeline


def test_the_steps_in_order():
    assert pipeline.pipeline_notebooks() == ["01_prepare", "02_augment", "03_train", "04_infer"]


@pytest.mark.parametrize("argv, says", [
    (["lr=-1"], "lr=-1.0 is out of range: it must be > 0"),
    (["learning_rate=1"], "unknown parameter(s) learning_rate"),
    (["--profile", "nope"], "no profile 'nope'"),
    (["augment=false"], "augment is now attribute_augmentation"),
])
def test_a_refusal_is_one_line_without_traceback(argv, says, capsys):
    assert pipeline.main(argv) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and says in err and "Traceback" not in err


def test_a_bug_keeps_its_traceback(monkeypatch):
    def broken(*args, **kwargs):
        raise ZeroDivisionError("a bug")

    monkeypatch.setattr(pipeline.preflight, "check", broken)
    with pytest.raises(ZeroDivisionError):
        pipeline.main([])


def _notebook(path, source: str) -> None:
    cell = {"cell_type": "code", "execution_count": None, "id": "x", "metadata": {}, "outputs": [],
            "source": source}
    params = {**cell, "id": "p", "metadata": {"tags": ["parameters"]}, "source": "run_dir = ''"}
    kernel = {"display_name": "Python 3", "language": "python", "name": "python3"}
    path.write_text(json.dumps({"cells": [params, cell], "metadata": {"kernelspec": kernel},
                                "nbformat": 4, "nbformat_minor": 5}))


@pytest.mark.slow
def test_a_failing_notebook_is_named_with_its_error_and_kept(tmp_path, monkeypatch):
    monkeypatch.setattr(pipeline, "NOTEBOOK_DIR", tmp_path)
    _notebook(tmp_path / "01_prepare.ipynb", "raise ValueError('the labels are broken')")
    (tmp_path / "run").mkdir()
    with pytest.raises(pipeline.NotebookFailed) as err:
        pipeline.run_notebook("01_prepare", tmp_path / "run", {"run_dir": "x"}, timeout_s=60,
                              log=lambda *_: None)
    message = str(err.value)
    assert "01_prepare failed in cell" in message and "ValueError: the labels are broken" in message
    assert (tmp_path / "run" / "01_prepare.ipynb").is_file() and str(tmp_path / "run") in message


def test_every_notebook_parameter_is_visible_to_papermill():
    """papermill reads a parameters cell line by line: a line it cannot parse (an '=' in a comment)
    drops that parameter, and a value passed to it is then only warned about."""
    import nbformat
    import papermill as pm

    for name in (*pipeline.pipeline_notebooks(), "05_quick_review"):
        path = pipeline.NOTEBOOK_DIR / f"{name}.ipynb"
        cells = nbformat.read(path, as_version=4).cells
        cell = next(c for c in cells if "parameters" in c.metadata.get("tags", []))
        assigned = [line.split("=")[0].strip() for line in cell.source.splitlines()
                    if line and line[0].isalpha()]
        assert list(pm.inspect_notebook(str(path))) == assigned, name


@pytest.mark.parametrize("text, shown", [
    ("\r  0%|   | 0/3\r 67%|## | 2/3\r100%|###| 3/3\n", "100%|###| 3/3\n"),  # a bar: its last state
    ("\r 20%|#  | 1/5\r" + " " * 14 + "\r", ""),  # cleared for a message: the line goes
    ("abcdef\rXY\n", "XYcdef\n"),  # a shorter overwrite leaves the rest, as a terminal does
    ("first\n\nlast\n", "first\n\nlast\n"),  # printed blank lines stay
])
def test_carriage_returns_are_applied_as_a_terminal_would(text, shown):
    assert pipeline.carriage_returns_applied(text) == shown


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
    pipeline.final_stream_states(path)
    outputs = nbformat.read(path, as_version=4).cells[0].outputs
    assert [(o.name, o.text) for o in outputs] == [("stderr", " 50%| 1/2"), ("stdout", "epoch 1 done\n"),
                                                   ("stderr", "100%| 2/2\n")]


def test_a_kernel_starts_with_the_pipelines_environment_and_it_is_restored(tmp_path, monkeypatch):
    from lib import progress, steps

    monkeypatch.setenv("PYTHONPATH", "/elsewhere")
    monkeypatch.delenv(steps.PIPELINE_ENV, raising=False)
    with pipeline.kernel_env(tmp_path / "p"):
        assert os.environ["PYTHONPATH"].split(os.pathsep) == [str(pipeline.REPO_ROOT), "/elsewhere"]
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
    nb = nbformat.read(pipeline.NOTEBOOK_DIR / "04_infer.ipynb", as_version=4)
    params = next(c for c in nb.cells if "parameters" in c.metadata.get("tags", []))
    params.source = f"run_dir = {str(run_dir)!r}\noverrides = {{}}\ncheckpoint = ''"
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH",)}
    saved = dict(os.environ)
    try:
        os.environ.clear()
        os.environ.update(env)
        NotebookClient(nb, timeout=600, kernel_name="python3",
                       resources={"metadata": {"path": str(pipeline.NOTEBOOK_DIR)}}).execute()
    finally:
        os.environ.clear()
        os.environ.update(saved)
    shown = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.outputs)
    assert "submission OK" in shown and "ModuleNotFoundError" not in shown

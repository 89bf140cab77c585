"""lib.pipeline: a refusal is one line and exit 1 (a bug keeps its traceback); a failing notebook is
named with its cell's error, and its executed copy is kept."""
from __future__ import annotations

import json

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

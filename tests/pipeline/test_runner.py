"""lib.pipeline.runner: a refusal is one line and exit 1 (a bug keeps its traceback); every notebook
parameter is visible to papermill. (What it decides on resume: tests/test_mistakes.py.)"""
from __future__ import annotations

import pytest

from lib.pipeline import notebooks, runner


def test_the_steps_in_order():
    assert runner.pipeline_notebooks() == ["01_prepare", "02_augment", "03_train", "04_infer"]


@pytest.mark.parametrize("argv, says", [
    (["lr=-1"], "lr=-1.0 is out of range: it must be > 0"),
    (["learning_rate=1"], "unknown parameter(s) learning_rate"),
    (["--profile", "nope"], "no profile 'nope'"),
    (["augment=false"], "augment is now attribute_augmentation"),
])
def test_a_refusal_is_one_line_without_traceback(argv, says, capsys):
    assert runner.main(argv) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and says in err and "Traceback" not in err


def test_a_bug_keeps_its_traceback(monkeypatch):
    def broken(*args, **kwargs):
        raise ZeroDivisionError("a bug")

    monkeypatch.setattr(runner.preflight, "check", broken)
    with pytest.raises(ZeroDivisionError):
        runner.main([])


def test_every_notebook_parameter_is_visible_to_papermill():
    """papermill reads a parameters cell line by line: a line it cannot parse (an '=' in a comment)
    drops that parameter, and a value passed to it is then only warned about."""
    import nbformat
    import papermill as pm

    for name in (*runner.pipeline_notebooks(), "05_quick_review"):
        path = notebooks.NOTEBOOK_DIR / f"{name}.ipynb"
        cells = nbformat.read(path, as_version=4).cells
        cell = next(c for c in cells if "parameters" in c.metadata.get("tags", []))
        assigned = [line.split("=")[0].strip() for line in cell.source.splitlines()
                    if line and line[0].isalpha()]
        assert list(pm.inspect_notebook(str(path))) == assigned, name

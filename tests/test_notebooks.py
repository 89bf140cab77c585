"""The pipeline notebooks, executed end to end by papermill on the smoke profile."""
import json

import nbformat
import pandas as pd
import pytest

pytestmark = pytest.mark.notebook


def _outputs_text(path) -> str:
    nb = nbformat.read(path, as_version=4)
    return "\n".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []))


def test_01_prepare_writes_checked_tables(smoke_notebook, smoke_workspace):
    executed = smoke_notebook("01_prepare")
    run_dir = smoke_workspace["run_dir"]
    assert "prepared tables OK" in _outputs_text(executed)
    train = pd.read_csv(run_dir / "data" / "train.csv", keep_default_na=False)
    assert {"filepath", "title", "image", "kind", "colour", "brand", "type"} <= set(train.columns)
    vocab = json.loads((run_dir / "data" / "vocabulary.json").read_text())
    assert vocab["types"] and vocab["colours"] and vocab["brands"]
    gt_lines = (run_dir / "data" / "val_gt.txt").read_text(encoding="utf-8").splitlines()
    assert len(gt_lines) == len(pd.read_csv(run_dir / "data" / "val.csv"))

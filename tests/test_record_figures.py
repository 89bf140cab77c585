"""lib.record_figures: the README's figures of the record are the record's own, and only it writes them."""
import json
import shutil

import pandas as pd
import pytest

from lib import record_figures
from lib.errors import KitError
from lib.paths import REPO_ROOT

RECORD = REPO_ROOT / "best-result-review"


def test_the_readme_holds_exactly_what_the_committed_record_says():
    readme = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    assert record_figures.block(RECORD) in readme, "README's record block is stale: make promote rewrites it"


def test_the_block_is_read_from_the_files_and_replaced_between_the_markers(tmp_path):
    record = tmp_path / "record"
    shutil.copytree(RECORD, record)
    scores = json.loads((record / "scores.json").read_text())
    scores["val"]["map10_official"] = 0.98765
    (record / "scores.json").write_text(json.dumps(scores))
    agreement = pd.DataFrame([{"field": "type", "filled": 10, "accuracy": 0.5, "majority_value": "Sedan",
                               "majority_accuracy": 0.25, "chance": 1 / 6}])
    agreement.to_csv(record / record_figures.AGREEMENT_FILE, index=False)
    text = record_figures.block(record)
    assert "0.988 / " in text and "type right 50.0% of 10 fills" in text and "Sedan: 25.0%" in text
    readme = tmp_path / "README.md"
    readme.write_text(f"# x\n{record_figures.RECORD_BEGIN}\nold figures\n{record_figures.RECORD_END}\ntail\n")
    record_figures.update_readme(readme, record)
    assert readme.read_text() == f"# x\n{text}\ntail\n"
    readme.write_text("no markers")
    with pytest.raises(KitError, match="no record block"):
        record_figures.update_readme(readme, record)

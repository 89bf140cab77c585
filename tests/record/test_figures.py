"""lib.record.figures: the results page's figures of the record are the record's own, and only it
writes them; the re-ranking page's table is the record's 04_infer."""
import json
import shutil
from html.parser import HTMLParser

import pandas as pd
import pytest

from lib.errors import KitError
from lib.paths import REPO_ROOT
from lib.record import figures as record_figures

RECORD = REPO_ROOT / "best-result-review"


def test_the_results_page_holds_exactly_what_the_committed_record_says():
    page, _, _, render = record_figures.PAGES[0]
    assert render(RECORD) in (REPO_ROOT / page).read_text(encoding="utf-8"), f"{page}'s record is stale"


def test_the_rerank_page_holds_exactly_what_the_committed_records_rescore_says():
    page, begin, end, render = record_figures.PAGES[1]
    text = (REPO_ROOT / page).read_text(encoding="utf-8")
    assert begin in text and end in text, f"{page} lost its rerank markers"
    if (RECORD / record_figures.RESCORE_FILE).exists():  # records promoted before rescore.csv: see below
        assert render(RECORD) in text, f"{page}'s re-ranking table is stale"


def test_the_rerank_block_is_rendered_from_rescore_csv(tmp_path):
    rows = [("first stage", "val", 0.3164, None, None, None),
            ("first stage", "test_A", 0.25, None, None, None),
            ("first stage", "test_B", 0.2, None, None, None),
            ("a3r", "val", 0.3051, -0.0113, -0.0181, -0.0049), ("a3r", "test_A", 0.26, 0.01, 0.0, 0.02),
            ("a3r", "test_B", 0.2, 0.0, -0.0004, 0.0006)]
    pd.DataFrame(rows, columns=["variant", "split", "map10_official", "delta", "low", "high"]).to_csv(
        tmp_path / record_figures.RESCORE_FILE, index=False)
    text = record_figures.rerank_block(tmp_path)
    assert text.splitlines()[3:5] == [
        "| first stage | 0.316 | 0.250 | 0.200 | | | |",
        "| `a3r` (embedded) | 0.305 | 0.260 | 0.200 | −0.011 [−0.018, −0.005] | +0.010 [+0.000, +0.020] "
        "| +0.000 [−0.000, +0.001] |"]
    page = tmp_path / "reranking.md"
    page.write_text(f"head\n{record_figures.RERANK_BEGIN}\nold\n{record_figures.RERANK_END}\ntail\n")
    record_figures.update_page(page, tmp_path, record_figures.RERANK_BEGIN, record_figures.RERANK_END,
                               record_figures.rerank_block)
    assert page.read_text() == f"head\n{text}\ntail\n"


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
    readme = tmp_path / "results.md"
    readme.write_text(f"# x\n{record_figures.RECORD_BEGIN}\nold figures\n{record_figures.RECORD_END}\ntail\n")
    record_figures.update_page(readme, record)
    assert readme.read_text() == f"# x\n{text}\ntail\n"
    readme.write_text("no markers")
    with pytest.raises(KitError, match="has no block"):
        record_figures.update_page(readme, record)


class _HtmlTable(HTMLParser):
    """The rows of the HTML tables in a notebook output (pandas Styler), cells as text."""

    def __init__(self) -> None:
        super().__init__()
        self.rows: list[list[str]] = []
        self._cell: str | None = None

    def handle_starttag(self, tag, attrs):
        if tag == "tr":
            self.rows.append([])
        elif tag in ("td", "th"):
            self._cell = ""

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None:
            self.rows[-1].append(self._cell.strip())
            self._cell = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell += data


def _cell_table(notebook: dict, cell_id: str) -> list[list[str]]:
    cell = next(c for c in notebook["cells"] if c.get("id") == cell_id)
    html = next("".join(o["data"]["text/html"]) for o in cell["outputs"] if "text/html" in o.get("data", {}))
    parser = _HtmlTable()
    parser.feed(html)
    return [row for row in parser.rows if row]


def _readme_rerank_rows() -> list[list[str]]:
    lines = (REPO_ROOT / "docs" / "reranking.md").read_text(encoding="utf-8").splitlines()
    start = lines.index("| setting | val | test A | test B | Δ val | Δ A | Δ B |")
    rows = []
    for line in lines[start + 2:]:
        if not line.startswith("|"):
            break
        rows.append([c.strip() for c in line.strip("|").split("|")])
    return rows


def _num(text: str) -> float:
    return float(text.replace("−", "-"))


def _close(readme: list[float], notebook: list[float]) -> bool:
    """The page's 3 decimals against the notebook's 4 (its Styler's precision): within half a unit."""
    return all(abs(a - b) <= 5e-4 + 1e-9 for a, b in zip(readme, notebook, strict=True))


def test_the_rerank_page_table_is_the_records_04_side_by_side():
    notebook = json.loads((RECORD / "04_infer.ipynb").read_text(encoding="utf-8"))
    scores = {row[0]: [float(x) for x in row[1:]] for row in _cell_table(notebook, "compare3")[2:]}
    deltas = {}  # variant -> split -> (delta, low, high); the variant cell spans its splits' rows
    variant = ""
    for row in _cell_table(notebook, "compare5")[2:]:
        if len(row) == 6:
            variant, row = row[0], row[1:]
        deltas.setdefault(variant, {})[row[0]] = tuple(float(x) for x in row[1:4])
    readme = _readme_rerank_rows()
    assert len(readme) == len(scores), "docs/reranking.md's table has another number of rows than 04's"
    for cells, (name, (val, _test, board_a, board_b)) in zip(readme, scores.items(), strict=True):
        assert _close([_num(c) for c in cells[1:4]], [val, board_a, board_b]), name
        for cell, split in zip(cells[4:7], ("val", "test_A", "test_B"), strict=True):
            if name == "first stage":
                assert cell == ""
                continue
            delta, low, high = (_num(x.strip("[],")) for x in cell.split())
            expected = deltas[name][split]
            assert _close([delta, low, high], expected), (name, split)

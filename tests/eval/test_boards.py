"""lib.eval.boards: a fixed, stratified half of the test queries is board A, the rest B."""
from collections import Counter

import numpy as np
import pandas as pd

from lib.eval.boards import split_boards
from lib.paths import REPO_ROOT


def test_each_kind_is_split_in_half_and_the_split_is_fixed():
    kinds = ["car"] * 7 + ["person"] * 10
    boards = split_boards(kinds)
    assert boards.tolist() == split_boards(kinds).tolist()  # the same every time
    counts = Counter(zip(kinds, boards.tolist()))
    assert counts == {("car", "A"): 4, ("car", "B"): 3, ("person", "A"): 5, ("person", "B"): 5}
    assert boards.tolist() != split_boards(kinds, seed=1).tolist()
    # which queries: pinned, since every figure on boards A and B depends on it (seed 2023, numpy's
    # PCG64 permutation of each kind's positions, cars first)
    assert "".join(boards) == "AAABBAB" + "BABBBAAABA"


def test_the_records_boards_are_this_split_of_its_test_queries():
    """The record's per_query.csv: every test query on the board split_boards gives its kind."""
    table = pd.read_csv(REPO_ROOT / "best-result-review" / "per_query.csv", keep_default_na=False)
    test = table[table["split"] == "test"].sort_values("query")
    assert len(test) == 2000 and test["board"].tolist() == split_boards(test["kind"]).tolist()


def test_the_split_is_not_a_block_of_the_file_order():
    boards = split_boards(["person"] * 200)
    first_half_a = (boards[:100] == "A").mean()
    assert 0.3 < first_half_a < 0.7 and set(np.unique(boards)) == {"A", "B"}

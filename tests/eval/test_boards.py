"""lib.eval.boards: a fixed, stratified half of the test queries is board A, the rest B."""
from collections import Counter

import numpy as np

from lib.eval.boards import split_boards


def test_each_kind_is_split_in_half_and_the_split_is_fixed():
    kinds = ["car"] * 7 + ["person"] * 10
    boards = split_boards(kinds)
    assert boards.tolist() == split_boards(kinds).tolist()  # the same every time
    counts = Counter(zip(kinds, boards.tolist()))
    assert counts == {("car", "A"): 4, ("car", "B"): 3, ("person", "A"): 5, ("person", "B"): 5}
    assert boards.tolist() != split_boards(kinds, seed=1).tolist()


def test_the_split_is_not_a_block_of_the_file_order():
    boards = split_boards(["person"] * 200)
    first_half_a = (boards[:100] == "A").mean()
    assert 0.3 < first_half_a < 0.7 and set(np.unique(boards)) == {"A", "B"}

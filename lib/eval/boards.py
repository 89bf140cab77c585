"""The demo test's two boards, as the competition had them: A to choose on, B to report
(docs/results.md). The test queries are split once, by a fixed seed, into halves stratified by kind
(A takes the extra query of an odd count); every query still ranks the whole gallery."""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

BOARD_SEED = 2023
BOARDS = ("A", "B")


def split_boards(kinds: Sequence[str], seed: int = BOARD_SEED) -> np.ndarray:
    """The board of each query ("A" or "B"), in query order: a seeded half of each kind is A."""
    kinds = np.asarray(list(kinds))
    board = np.full(len(kinds), "B", dtype="<U1")
    rng = np.random.default_rng(seed)
    for kind in sorted(set(kinds.tolist())):
        members = np.flatnonzero(kinds == kind)
        chosen = rng.permutation(members)[: (len(members) + 1) // 2]
        board[chosen] = "A"
    return board

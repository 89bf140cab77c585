"""mAP@10 as the organisers compute it, the standard AP@10 beside it, and recall@k.

With P(r) = hits in the top r / r, summed over the ranks that hit: official AP (the organisers'
script) divides by the hits in the top 10, ignoring relevant images never retrieved, so a list cut
after its confident hits scores higher (report it, do not optimise it alone); standard AP@10 divides
by min(10, relevant images); recall@k: a relevant image in the top k (a hit rate). Relevance is a
list of sets in query order, never a dict keyed by text: a text can be asked twice.
CLI (`python -m lib.eval.metrics --gt GT --submission SUB`): a table, then a JSON line; like the
organisers' script it refuses (exit 1) texts that differ from the ground truth's, in order or number.
"""
from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Collection, Sequence
from pathlib import Path

import numpy as np

from lib.data.relevance import read_ground_truth
from lib.errors import KitError
from lib.eval.submission import read_submission

K = 10
RECALL_KS = (1, 5, 10)
SUMMARY_KEYS = ("map10_official", "map10_standard", "queries") + tuple(f"recall@{k}" for k in RECALL_KS)


class MetricsError(KitError, ValueError):
    """Predictions and ground truth that cannot be scored together (the message says why)."""


Predictions = Sequence[Sequence[str]]
Relevance = Sequence[Collection[str]]


def hits_matrix(predictions: Predictions, relevant: Relevance, k: int = K) -> np.ndarray:
    """Boolean (queries x k): is the name at each rank relevant (and not already counted)?"""
    if len(predictions) != len(relevant):
        raise MetricsError(f"{len(predictions)} prediction lists for {len(relevant)} relevance sets")
    hits = np.zeros((len(predictions), k), dtype=bool)
    for q, (names, rel) in enumerate(zip(predictions, relevant)):
        if isinstance(names, str):
            raise MetricsError(f"query {q}: predictions must be a list of names, got the string {names!r}")
        rel = rel if isinstance(rel, (set, frozenset)) else set(rel)
        seen: set[str] = set()
        for r, name in enumerate(names[:k]):
            hits[q, r] = name in rel and name not in seen
            seen.add(name)
    return hits


def ap_from_hits(hits: np.ndarray, n_relevant: Sequence[int] | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(official AP, standard AP@k) per query from a hits matrix and the number of relevant images."""
    hits = np.asarray(hits, dtype=bool)
    if hits.ndim != 2:
        raise MetricsError(f"hits must be a 2-d matrix (queries x k), got shape {hits.shape}")
    n, k = hits.shape
    n_relevant = np.asarray(n_relevant, dtype=np.int64).reshape(-1)
    if n_relevant.shape != (n,):
        raise MetricsError(f"{n_relevant.size} relevant counts for {n} queries")
    n_hits = hits.sum(axis=1)
    if np.any(n_hits > n_relevant):
        q = int(np.argmax(n_hits > n_relevant))
        raise MetricsError(f"query {q}: {n_hits[q]} hits but only {n_relevant[q]} relevant images")
    precision = np.cumsum(hits, axis=1) / np.arange(1, k + 1)
    total = (precision * hits).sum(axis=1)
    official = np.divide(total, n_hits, out=np.zeros(n), where=n_hits > 0)
    denominator = np.minimum(n_relevant, k)
    standard = np.divide(total, denominator, out=np.zeros(n), where=denominator > 0)
    return official, standard


def per_query(predictions: Predictions, relevant: Relevance, k: int = K) -> dict[str, np.ndarray]:
    """Per-query arrays, in query order: ap_official, ap_standard, recall@1/5/10 (0/1 floats), n_hits,
    n_relevant; `summary` averages them over a subset."""
    hits = hits_matrix(predictions, relevant, k)
    n_relevant = np.array([len(set(r)) for r in relevant], dtype=np.int64)
    official, standard = ap_from_hits(hits, n_relevant)
    scores = {"ap_official": official, "ap_standard": standard}
    for r in RECALL_KS:
        scores[f"recall@{r}"] = hits[:, : min(r, k)].any(axis=1).astype(float)
    scores["n_hits"] = hits.sum(axis=1)
    scores["n_relevant"] = n_relevant
    return scores


def summary(scores: dict[str, np.ndarray], mask: np.ndarray | None = None) -> dict[str, float | int]:
    """Means of `per_query` arrays (over the queries where `mask` is True, when given)."""
    pick = slice(None) if mask is None else np.asarray(mask, dtype=bool)
    official = np.asarray(scores["ap_official"])[pick]
    if official.size == 0:
        raise MetricsError("no queries to score")
    out: dict[str, float | int] = {
        "map10_official": float(official.mean()),
        "map10_standard": float(np.asarray(scores["ap_standard"])[pick].mean()),
        "queries": int(official.size),
    }
    for r in RECALL_KS:
        out[f"recall@{r}"] = float(np.asarray(scores[f"recall@{r}"])[pick].mean())
    return out


def evaluate(predictions: list[list[str]], relevant: list[set[str]]) -> dict[str, float | int]:
    """map10_official, map10_standard, recall@1, recall@5, recall@10 and queries (the count)."""
    return summary(per_query(predictions, relevant))


def check_same_queries(expected: Sequence[str], got: Sequence[str], what: str = "submission") -> None:
    """Refuse texts that differ from the ground truth's, in another order, or not as many."""
    for q, (want, have) in enumerate(zip(expected, got)):
        if want != have:
            raise MetricsError(
                f"{what} query {q} (0-based) differs from the ground truth: expected {want!r}, got {have!r}"
                " (texts must be exactly those of the ground truth, in the same order)"
            )
    if len(expected) != len(got):
        q = min(len(expected), len(got))
        nxt = f"expected {expected[q]!r}" if q < len(expected) else f"got extra {got[q]!r}"
        raise MetricsError(
            f"{what} has {len(got)} queries, the ground truth {len(expected)}; first difference at "
            f"query {q} (0-based): {nxt}"
        )


def evaluate_files(gt_path: str | Path, submission_path: str | Path) -> dict[str, float | int]:
    """Score a submission JSON against an official GT file (refusing misaligned texts)."""
    truth = read_ground_truth(gt_path)
    texts, names = read_submission(submission_path)
    check_same_queries([text for text, _ in truth], texts)
    return evaluate(names, [set(rel) for _, rel in truth])


def format_table(scores: dict[str, float | int]) -> str:
    rows = [("queries", str(scores["queries"]))]
    rows += [(key, f"{scores[key]:.4f}") for key in SUMMARY_KEYS if key != "queries"]
    return "\n".join(f"{name:<16}{value:>10}" for name, value in rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lib.eval.metrics", description=__doc__.splitlines()[0])
    parser.add_argument("--gt", required=True, help="official ground truth: text$img1$img2... per line")
    parser.add_argument("--submission", required=True, help='submission JSON {"results": [...]}')
    args = parser.parse_args(argv)
    try:
        scores = evaluate_files(args.gt, args.submission)
    except (KitError, OSError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(format_table(scores))
    print(json.dumps({key: scores[key] for key in SUMMARY_KEYS}))
    return 0


if __name__ == "__main__":
    sys.exit(main())

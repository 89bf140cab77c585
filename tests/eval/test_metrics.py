"""mAP@10 (official and standard) and recall@k on cases whose values are worked out by hand."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from lib.eval import metrics
from lib.eval.metrics import MetricsError, evaluate, per_query
from lib.paths import REPO_ROOT

MISS = [f"miss{i}" for i in range(10)]


def ranked(hit_ranks: list[int], prefix: str = "hit") -> tuple[list[str], set[str]]:
    """10 predictions with a relevant name at each 1-based rank in hit_ranks, the rest misses."""
    names = [f"{prefix}{r}" if r in hit_ranks else MISS[r - 1] for r in range(1, 11)]
    return names, {f"{prefix}{r}" for r in hit_ranks}


def test_hits_at_ranks_1_and_3_with_5_relevant():
    names, rel = ranked([1, 3])
    rel |= {"other1", "other2", "other3"}  # 5 relevant, 2 of them retrieved
    scores = per_query([names], [rel])
    # official: (1/1 + 2/3) / 2 hits = 0.8333...; standard: (1/1 + 2/3) / min(10, 5) = 0.3333...
    assert scores["ap_official"][0] == pytest.approx((1 + 2 / 3) / 2)
    assert scores["ap_standard"][0] == pytest.approx((1 + 2 / 3) / 5)
    # recall@1: rank 1 hits -> 1; @5 and @10 too
    assert [scores[f"recall@{k}"][0] for k in (1, 5, 10)] == [1, 1, 1]


def test_single_late_hit():
    names, rel = ranked([4])
    scores = per_query([names], [rel])
    # official: (1/4) / 1 = 0.25; standard with 1 relevant: (1/4) / 1 = 0.25
    assert scores["ap_official"][0] == pytest.approx(0.25)
    assert scores["ap_standard"][0] == pytest.approx(0.25)
    # recall@1 = 0 (rank 1 misses), recall@5 = 1 (rank 4), recall@10 = 1
    assert [scores[f"recall@{k}"][0] for k in (1, 5, 10)] == [0, 1, 1]


def test_query_without_hits_scores_zero_and_counts_in_the_mean():
    hit_names, hit_rel = ranked([1])  # official 1, standard 1
    result = evaluate([hit_names, list(MISS)], [hit_rel, {"somewhere-else"}])
    # means over 2 queries: (1 + 0) / 2
    assert result["map10_official"] == pytest.approx(0.5)
    assert result["map10_standard"] == pytest.approx(0.5)
    assert result["recall@10"] == pytest.approx(0.5)
    assert result["queries"] == 2


def test_query_with_no_relevant_image_scores_zero_and_counts():
    result = evaluate([list(MISS), ranked([1])[0]], [set(), ranked([1])[1]])
    assert result["map10_standard"] == pytest.approx(0.5)
    assert result["map10_official"] == pytest.approx(0.5)


def test_repeated_texts_are_separate_queries_with_their_own_relevant_sets():
    # The same text asked twice; the same 10 predictions; different relevant sets.
    names = [f"img{i}" for i in range(1, 11)]
    relevant = [{"img1", "img2"}, {"img5"}]
    scores = per_query([names, names], relevant)
    # query 0: hits at 1, 2 -> official (1 + 2/2)/2 = 1, standard (1 + 1)/2 = 1
    # query 1: hit at 5     -> official (1/5)/1 = 0.2, standard (1/5)/1 = 0.2
    assert scores["ap_official"].tolist() == pytest.approx([1.0, 0.2])
    assert scores["ap_standard"].tolist() == pytest.approx([1.0, 0.2])
    assert evaluate([names, names], relevant)["map10_official"] == pytest.approx(0.6)


def test_relevant_set_larger_than_10():
    names = [f"img{i}" for i in range(1, 11)]
    relevant = {f"img{i}" for i in range(1, 31)} - {"img2"}  # 29 relevant; ranks 1, 3..10 hit
    scores = per_query([names], [relevant])
    # precision at hits: rank 1 -> 1/1, rank r>=3 -> (r-1)/r
    total = 1 + sum((r - 1) / r for r in range(3, 11))
    assert scores["ap_official"][0] == pytest.approx(total / 9)  # 9 hits
    assert scores["ap_standard"][0] == pytest.approx(total / 10)  # min(10, 29) = 10
    perfect = per_query([names], [{f"img{i}" for i in range(1, 31)}])
    assert perfect["ap_official"][0] == pytest.approx(1.0) and perfect["ap_standard"][0] == pytest.approx(1.0)


def test_truncating_after_the_confident_hit_games_the_official_score_only():
    names, rel = ranked([1, 5])
    rel |= {"other"}  # 3 relevant
    full = per_query([names], [rel])
    cut = per_query([names[:1]], [rel])
    # full: official (1 + 2/5)/2 = 0.7, standard (1 + 2/5)/3 = 0.4667
    # cut to 1 name: official 1/1 = 1.0, standard 1/3 = 0.3333
    assert full["ap_official"][0] == pytest.approx(0.7) and cut["ap_official"][0] == pytest.approx(1.0)
    assert full["ap_standard"][0] == pytest.approx(1.4 / 3) and cut["ap_standard"][0] == pytest.approx(1 / 3)


def test_a_repeated_name_takes_a_rank_but_scores_once():
    names = ["a", "a"] + MISS[:8]
    scores = per_query([names], [{"a", "b"}])
    # hit at rank 1 only: official 1/1 = 1, standard 1/min(10, 2) = 0.5
    assert scores["ap_official"][0] == pytest.approx(1.0)
    assert scores["ap_standard"][0] == pytest.approx(0.5)


def test_official_is_at_least_standard_on_random_cases():
    rng = np.random.default_rng(0)
    gallery = [f"g{i}" for i in range(40)]
    predictions, relevant = [], []
    for _ in range(500):
        predictions.append(list(rng.choice(gallery, size=10, replace=False)))
        relevant.append(set(rng.choice(gallery, size=int(rng.integers(1, 30)), replace=False)))
    scores = per_query(predictions, relevant)
    assert np.all(scores["ap_official"] >= scores["ap_standard"] - 1e-12)
    assert np.all((scores["ap_standard"] >= 0) & (scores["ap_official"] <= 1))
    assert np.all(scores["recall@1"] <= scores["recall@5"])
    assert np.all(scores["recall@5"] <= scores["recall@10"])
    # the vectorised AP equals a plain loop over ranks
    aps = zip(scores["ap_official"], scores["ap_standard"])
    for names, rel, (official, standard) in zip(predictions, relevant, aps):
        found, total = 0, 0.0
        for rank, name in enumerate(names, start=1):
            if name in rel:
                found += 1
                total += found / rank
        assert official == pytest.approx(total / found if found else 0.0)
        assert standard == pytest.approx(total / min(10, len(rel)))


def test_summary_on_a_subset():
    names, rel = ranked([1])
    scores = per_query([names, list(MISS)], [rel, rel])
    assert metrics.summary(scores, mask=np.array([True, False]))["map10_official"] == 1.0
    with pytest.raises(MetricsError):
        metrics.summary(scores, mask=np.array([False, False]))


def test_mismatched_lengths_are_refused():
    with pytest.raises(MetricsError):
        evaluate([list(MISS)], [set(), set()])


# --- files and CLI -----------------------------------------------------------------------------
def _write_case(tmp_path, order=None):
    gt_rows = [
        ("This is a white Audi.", ["a1", "a2"]),
        ("This is a white Audi.", ["a3"]),
        ("A pedestrian in a red coat.", ["p1", "p2", "p3", "p4", "p5"]),
    ]
    gt = tmp_path / "gt.txt"
    lines = "".join(f"{text}${'$'.join(names)}\r\n" for text, names in gt_rows)
    gt.write_text(lines + "\n", encoding="utf-8")  # CRLF and a trailing blank line
    predictions = [
        ["a1", "x1", "a2"] + [f"y{i}" for i in range(7)],  # hits 1, 3 -> official 0.8333, standard 0.8333
        ["a1", "a2"] + [f"z{i}" for i in range(8)],  # no hit -> 0, 0
        ["p1"] + [f"w{i}" for i in range(9)],  # hit 1 -> official 1, standard 1/5 = 0.2
    ]
    entries = [{"text": t, "image_names": p} for (t, _), p in zip(gt_rows, predictions)]
    if order is not None:
        entries = [entries[i] for i in order]
    sub = tmp_path / "submission.json"
    sub.write_text(json.dumps({"results": entries}), encoding="utf-8")
    return gt, sub


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "lib.metrics", *args], cwd=REPO_ROOT,
                          capture_output=True, text=True, timeout=120)


def test_cli_round_trip_prints_the_scores_as_its_last_line(tmp_path):
    gt, sub = _write_case(tmp_path)
    done = _cli("--gt", str(gt), "--submission", str(sub))
    assert done.returncode == 0, done.stderr
    last = json.loads(done.stdout.strip().splitlines()[-1])
    assert list(last)[:3] == ["map10_official", "map10_standard", "queries"]
    # official (0.8333 + 0 + 1)/3 = 0.6111; standard (0.8333 + 0 + 0.2)/3 = 0.3444
    assert last["map10_official"] == pytest.approx((5 / 6 + 0 + 1) / 3)
    assert last["map10_standard"] == pytest.approx((5 / 6 + 0 + 0.2) / 3)
    assert last["queries"] == 3
    assert last == pytest.approx(metrics.evaluate_files(gt, sub))


def test_cli_refuses_another_order_naming_the_query_and_both_texts(tmp_path):
    gt, sub = _write_case(tmp_path, order=[0, 2, 1])
    done = _cli("--gt", str(gt), "--submission", str(sub))
    assert done.returncode == 1
    assert "query 1" in done.stderr
    assert "'This is a white Audi.'" in done.stderr and "'A pedestrian in a red coat.'" in done.stderr


def test_cli_refuses_a_different_count(tmp_path):
    gt, sub = _write_case(tmp_path, order=[0, 1])
    done = _cli("--gt", str(gt), "--submission", str(sub))
    assert done.returncode == 1
    assert "2 queries" in done.stderr and "3" in done.stderr and "query 2" in done.stderr

"""mAP@10 (official and standard) and recall@k on cases whose values are worked out by hand."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pandas as pd
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



@pytest.mark.parametrize("rank, recalls", [(1, [1, 1, 1]), (2, [0, 1, 1]), (5, [0, 1, 1]), (6, [0, 0, 1]),
                                           (10, [0, 0, 1])])
def test_recall_at_k_counts_a_hit_exactly_at_rank_k(rank, recalls):
    """recall@5 holds the 5th prediction and not the 6th; recall@10 holds the 10th."""
    names, rel = ranked([rank])
    scores = per_query([names], [rel])
    assert [scores[f"recall@{k}"][0] for k in (1, 5, 10)] == recalls
    assert scores["ap_official"][0] == pytest.approx(1 / rank)


def test_a_hit_past_the_10th_prediction_is_ignored():
    names = list(MISS) + ["late"]  # 11 names, the relevant one 11th
    scores = per_query([names], [{"late"}])
    assert [scores[key][0] for key in ("ap_official", "ap_standard", "recall@10", "n_hits")] == [0, 0, 0, 0]


def test_a_smaller_k_cuts_every_score_at_k():
    names, rel = ranked([3, 7])
    scores = per_query([names], [rel], k=5)
    # only rank 3 counts: official (1/3)/1, standard (1/3)/min(5, 2); recall@10 looks at 5 names only
    assert scores["ap_official"][0] == pytest.approx(1 / 3)
    assert scores["ap_standard"][0] == pytest.approx(1 / 6)
    assert [scores[f"recall@{k}"][0] for k in (1, 5, 10)] == [0, 1, 1]
    assert per_query([ranked([7])[0]], [ranked([7])[1]], k=5)["recall@10"][0] == 0


def test_per_query_counts_hits_and_relevant_images_per_query():
    names, rel = ranked([1, 3])
    scores = per_query([names, list(MISS), ["a", "a", "b"]], [rel | {"x"}, {"y"}, ["a", "b", "c", "c"]])
    assert scores["n_hits"].tolist() == [2, 0, 2]  # the repeated "a" counts once
    assert scores["n_relevant"].tolist() == [3, 1, 3]  # distinct names
    assert scores["n_hits"].dtype.kind == "i" and scores["n_relevant"].dtype.kind == "i"
    empty = per_query([], [])
    assert all(len(values) == 0 for values in empty.values())
    assert empty["n_relevant"].dtype.kind == "i" and empty["n_hits"].dtype.kind == "i"


def test_hits_matrix_is_boolean_and_takes_any_collection_of_names():
    names, rel = ranked([2, 4])
    for relevant in (rel, sorted(rel), tuple(rel), frozenset(rel)):
        hits = metrics.hits_matrix([names], [relevant])
        assert hits.dtype == bool and hits.shape == (1, 10)
        assert np.flatnonzero(hits[0]).tolist() == [1, 3]
    assert metrics.hits_matrix([names], [rel], k=3).tolist() == [[False, True, False]]


def test_a_relevance_set_may_be_a_numpy_or_pandas_column_of_names():
    # a column read from a table: the names are its values (`in` on a Series would test its index)
    names, rel = ranked([2, 4])
    for relevant in (np.array(sorted(rel)), pd.Series(sorted(rel)), pd.Series(sorted(rel), index=["x", "y"])):
        assert np.flatnonzero(metrics.hits_matrix([names], [relevant])[0]).tolist() == [1, 3]
        scores = per_query([names], [relevant])
        assert scores["ap_official"][0] == pytest.approx((1 / 2 + 2 / 4) / 2)  # 0.5
        assert scores["n_relevant"].tolist() == [2]


def test_ap_from_hits_takes_the_relevant_counts_in_any_shape():
    hits = np.zeros((2, 10), bool)
    hits[0, 0] = hits[1, 1] = True
    official, standard = metrics.ap_from_hits(hits, np.array([[2], [1]]))  # a column is flattened
    assert official.tolist() == pytest.approx([1.0, 0.5])
    assert standard.tolist() == pytest.approx([0.5, 0.5])


def test_ap_from_hits_refuses_what_cannot_be_scored():
    with pytest.raises(MetricsError) as err:
        metrics.ap_from_hits(np.ones(10, bool), [10])
    assert str(err.value) == "hits must be a 2-d matrix (queries x k), got shape (10,)"
    with pytest.raises(MetricsError) as err:
        metrics.ap_from_hits(np.ones((2, 10), bool), [10])
    assert str(err.value) == "1 relevant counts for 2 queries"
    hits = np.zeros((3, 10), bool)
    hits[0, 0] = hits[1, :2] = hits[2, :5] = True
    with pytest.raises(MetricsError) as err:  # more hits than relevant images: names repeated or wrong sets
        metrics.ap_from_hits(hits, [1, 1, 2])  # query 0 has as many hits as relevant images: fine
    assert str(err.value) == "query 1: 2 hits but only 1 relevant images"
    assert metrics.ap_from_hits(hits, [1, 2, 5])[0].tolist() == [1.0, 1.0, 1.0]


def test_ap_from_hits_reads_float_hits_and_counts_as_whole_numbers():
    # a 0/1 float matrix (a torch comparison made float) and float counts (a pandas column with a gap)
    hits = np.zeros((2, 10))
    hits[0, 0] = hits[1, :2] = 1.0
    official, standard = metrics.ap_from_hits(hits, np.array([1.0, 4.0]))
    assert official.tolist() == [1.0, 1.0] and standard.tolist() == [1.0, 0.5]
    with pytest.raises(MetricsError) as err:
        metrics.ap_from_hits(hits, np.array([1.0, 1.0]))
    assert str(err.value) == "query 1: 2 hits but only 1 relevant images"


def test_many_queries_without_relevant_images_all_score_zero():
    """No relevant image: AP 0, never what happened to be in memory (1,000 queries, every other one)."""
    names, rel = ranked([1])
    n = 1000
    scores = per_query([names] * n, [rel if q % 2 else set() for q in range(n)])
    assert scores["ap_standard"][0::2].tolist() == [0.0] * (n // 2)
    assert scores["ap_official"][0::2].tolist() == [0.0] * (n // 2)
    assert scores["ap_standard"][1::2].tolist() == [1.0] * (n // 2)


def test_summary_mask_picks_the_queries_where_it_is_true():
    names, rel = ranked([1])
    scores = per_query([names, list(MISS), names], [rel, rel, rel])
    assert metrics.summary(scores, mask=[1, 0, 0]) == metrics.summary(scores, mask=[True, False, False])
    assert metrics.summary(scores, mask=[1, 0, 0])["queries"] == 1
    assert metrics.summary(scores, mask=[0, 1, 1])["map10_official"] == 0.5
    with pytest.raises(MetricsError) as err:
        metrics.summary(scores, mask=[0, 0, 0])
    assert str(err.value) == "no queries to score"


def test_predictions_that_cannot_be_scored_are_refused_with_the_reason():
    with pytest.raises(MetricsError) as err:
        metrics.hits_matrix([list(MISS)], [set(), set()])
    assert str(err.value) == "1 prediction lists for 2 relevance sets"
    with pytest.raises(MetricsError) as err:
        metrics.hits_matrix([list(MISS), "abc"], [set(), {"a"}])
    assert str(err.value) == "query 1: predictions must be a list of names, got the string 'abc'"


def test_check_same_queries_names_the_first_difference():
    metrics.check_same_queries(["a", "b"], ["a", "b"])  # the same texts: nothing to say
    with pytest.raises(MetricsError) as err:
        metrics.check_same_queries(["a", "b", "c"], ["a", "c", "b"])
    assert str(err.value) == ("submission query 1 (0-based) differs from the ground truth: expected 'b', "
                              "got 'c' (texts must be exactly those of the ground truth, in the same order)")
    with pytest.raises(MetricsError) as err:
        metrics.check_same_queries(["a", "b", "c"], ["a", "b"], what="run")
    assert str(err.value) == ("run has 2 queries, the ground truth 3; first difference at query 2 (0-based): "
                              "expected 'c'")
    with pytest.raises(MetricsError) as err:
        metrics.check_same_queries(["a"], ["a", "b", "c"])
    assert str(err.value) == ("submission has 3 queries, the ground truth 1; first difference at query 1 "
                              "(0-based): got extra 'b'")

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
    return subprocess.run([sys.executable, "-m", "lib.eval.metrics", *args], cwd=REPO_ROOT,
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


# The same command line in-process, where the mutation tests can see it (the subprocess tests above
# prove `python -m lib.eval.metrics` itself).
SCORES_TABLE = """queries                  3
map10_official      0.6111
map10_standard      0.3444
recall@1            0.6667
recall@5            0.6667
recall@10           0.6667"""


def test_main_prints_the_table_then_the_json_line(tmp_path, capsys):
    gt, sub = _write_case(tmp_path)
    assert metrics.main(["--gt", str(gt), "--submission", str(sub)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert "\n".join(out[:-1]) == SCORES_TABLE
    assert json.loads(out[-1]) == pytest.approx({
        "map10_official": (5 / 6 + 1) / 3, "map10_standard": (5 / 6 + 0.2) / 3, "queries": 3,
        "recall@1": 2 / 3, "recall@5": 2 / 3, "recall@10": 2 / 3})
    assert metrics.format_table(metrics.evaluate_files(gt, sub)) == SCORES_TABLE


def test_main_refuses_with_exit_1_and_one_error_line(tmp_path, capsys):
    gt, sub = _write_case(tmp_path, order=[0, 1])
    assert metrics.main(["--gt", str(gt), "--submission", str(sub)]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith("error: submission has 2 queries, the ground truth 3;")
    assert metrics.main(["--gt", str(tmp_path / "absent.txt"), "--submission", str(sub)]) == 1
    assert capsys.readouterr().err.startswith("error: ")


def test_main_needs_both_files_and_says_what_they_hold(capsys):
    for argv in (["--submission", "s.json"], ["--gt", "gt.txt"]):
        with pytest.raises(SystemExit) as exit_:
            metrics.main(argv)
        assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "the following arguments are required: --gt" in err
    assert "the following arguments are required: --submission" in err
    with pytest.raises(SystemExit):
        metrics.main(["--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert text.startswith("usage: python -m lib.eval.metrics [-h] --gt GT --submission SUBMISSION")
    assert "mAP@10 as the organisers compute it, the standard AP@10 beside it, and recall@k." in text
    assert "--gt GT official ground truth: text$img1$img2... per line" in text
    assert '--submission SUBMISSION submission JSON {"results": [...]}' in text

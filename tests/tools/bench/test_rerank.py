"""tools.bench.rerank: the per-query port's pieces do what the description says, and the section
runs at tiny sizes (kit and port agree; no timing assertions)."""
from __future__ import annotations

import numpy as np
import torch

from lib.eval import rerank as rr
from tools.bench import bench
from tools.bench import rerank as bench_rerank


def test_knn_sorts_stably_and_the_query_joins_the_candidates_first():
    sm = np.array([[1.0, 0.5, 0.5, 0.2], [0.5, 1.0, 0.9, 0.1], [0.5, 0.9, 1.0, 0.3], [0.2, 0.1, 0.3, 1.0]])
    assert bench_rerank.knn(0, sm, 3) == [0, 1, 2]  # 1 and 2 tie: the smaller column first
    assert bench_rerank.is_k_reciprocal(1, 2, sm, 2) and not bench_rerank.is_k_reciprocal(0, 1, sm, 2)
    sm_qry = np.array([[0.5, 0.95, 0.2, 0.3]])
    # candidate 1: only itself (1.0) is closer to it than the query (0.95): the query is in its 2-NN
    assert bench_rerank.query_in_neighbourhood(1, sm, sm_qry, 2)
    assert not bench_rerank.query_in_neighbourhood(2, sm, sm_qry, 2)
    assert bench_rerank.query_in_neighbourhood(0, sm, sm_qry, 2)  # 0.5 ties with candidate 1: query first
    assert bench_rerank.is_k_reciprocal_with_query(1, sm, sm_qry, 2)
    assert not bench_rerank.is_k_reciprocal_with_query(3, sm, sm_qry, 2)  # not in the query's 2-NN


def test_pca_query_is_the_kits_adapted_query():
    data = bench_rerank.embeddings(3, 30, 12, seed=2)
    for q in range(3):
        text, top = data["query"][q].double(), data["gallery"][q * 5:q * 5 + 5].double()
        port = bench_rerank.pca_query(top @ text, top, text)
        kit = rr.adapted_query(text[None], top[None])[0]
        assert torch.allclose(port / port.norm(), kit, atol=1e-10)


def test_rerank_section_runs_tiny_and_the_two_sides_agree():
    report = bench_rerank.bench_rerank(queries=6, gallery=80, dim=16, depth=12, repeats=1, full_size=40,
                                       full_dim=8, race=bench.race)
    forms = ("embedded", "quantified")
    assert report["checked"] == {form: {"queries": 6, "identical_rows": 1.0} for form in forms}
    assert report["ratio"] > 0 and len(report["kit"]["times_s"]) == 1
    assert report["full_size"]["queries"] == 40 and set(report["full_size"]["rerank_s"]) == set(forms)

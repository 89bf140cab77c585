"""lib.eval.rescore: the first stage and the re-rankers side by side on val and the test boards, from
embeddings only; on the smoke run, from what infer returned (slow)."""
from __future__ import annotations

from types import SimpleNamespace

import pandas as pd
import pytest
import torch
import torch.nn.functional as F

from lib import config
from lib.eval import rescore, scoring
from lib.eval.boards import split_boards
from lib.eval.rerank import RerankError, rerank, settings
from lib.eval.topk import topk

CFG = config.Config(topk=5, rerank_depth_car=10, rerank_depth_person=12, rerank_m=3, rerank_k=3,
                    kreciprocal_k2=2)


def split(name: str, queries: int, boards: bool, seed: int, flip: bool = True) -> rescore.Split:
    """Six identities of 8 images; a query's relevant images are its identity's."""
    g = torch.Generator().manual_seed(seed)
    centres = F.normalize(torch.randn(6, 16, generator=g), dim=1)
    ids = torch.arange(48) % 6
    gallery = F.normalize(centres[ids] + 0.6 * torch.randn(48, 16, generator=g) / 4, dim=1)
    wanted = torch.arange(queries) % 6
    query = F.normalize(centres[wanted] + 0.9 * torch.randn(queries, 16, generator=g) / 4, dim=1)
    names = [f"g{i:03d}.jpg" for i in range(48)]
    relevant = [{names[i] for i in range(48) if ids[i] == w} for w in wanted.tolist()]
    kinds = ["car" if q % 3 else "person" for q in range(queries)]
    return rescore.Split(name, query, gallery, names, kinds, relevant,
                         boards=split_boards(kinds) if boards else None,
                         gallery_flip=F.normalize(gallery + 0.1 * torch.randn(48, 16, generator=g) / 4, dim=1)
                         if flip else None)


def test_side_by_side_on_val_and_the_boards():
    val, test = split("val", 18, False, 0), split("test", 24, True, 1)
    result = rescore.rescore_splits(CFG, [val, test])
    table = result.side_by_side()
    assert list(table.index) == [rescore.FIRST_STAGE, *rescore.ABLATION]
    assert list(table.columns) == ["val", "test", "test_A", "test_B"]
    _, first = topk(val.query_emb, val.gallery_emb, k=5)  # the first stage row is plain retrieval
    ranked = [[val.gallery_names[j] for j in row] for row in first.tolist()]
    assert table.loc[rescore.FIRST_STAGE, "val"] == pytest.approx(
        scoring.score_table(ranked, val.relevant, val.kinds).loc["all", "map10_official"])
    assert set(result.scores.xs(("a3r", "val"), level=("variant", "split")).index) == {"all", "car", "person"}
    assert len(result.per_query) == len(table) * (18 + 24)
    assert result.side_by_side(kind="car").loc[rescore.FIRST_STAGE, "val"] == pytest.approx(
        scoring.score_table(ranked, val.relevant, val.kinds).loc["car", "map10_official"])
    assert result.side_by_side(kind="car").loc[rescore.FIRST_STAGE, "val"] != pytest.approx(
        table.loc[rescore.FIRST_STAGE, "val"]), "the car column must not be the whole split's"


def test_against_first_stage_is_the_paired_change():
    result = rescore.rescore_splits(CFG, [split("val", 18, False, 0), split("test", 24, True, 1)],
                                    {"aqe": {"rerank": "aqe"}, "a3r": {"rerank": "a3r"}})
    changes = result.against_first_stage()
    splits = ("val", "test", "test_A", "test_B")
    assert list(changes.index) == [(v, s) for v in ("aqe", "a3r") for s in splits]
    per = result.per_query
    for variant, board in (("aqe", "A"), ("a3r", "B")):
        pick = (per["split"] == "test") & (per["board"] == board)
        expected = (per[pick & (per["variant"] == variant)]["ap_official"].to_numpy()
                    - per[pick & (per["variant"] == rescore.FIRST_STAGE)]["ap_official"].to_numpy()).mean()
        row = changes.loc[(variant, f"test_{board}")]
        assert row["delta"] == pytest.approx(expected) and row["low"] <= row["delta"] <= row["high"]
    assert changes["noise"].dtype == bool


def test_most_changed_and_before_after_give_the_grid_its_rows():
    val = split("val", 18, False, 2)  # a3r raises 1 query, lowers 2, leaves the rest
    result = rescore.rescore_splits(CFG, [val], {"a3r": {"rerank": "a3r"}})
    per = result.per_query
    change = (per[per["variant"] == "a3r"]["ap_official"].to_numpy()
              - per[per["variant"] == rescore.FIRST_STAGE]["ap_official"].to_numpy())
    picked = result.most_changed("a3r", "val", 2)
    ups, downs = [i for i in picked if change[i] > 0], [i for i in picked if change[i] < 0]
    assert picked == ups + downs and (len(ups), len(downs)) == (1, 2)  # raised first, then lowered
    assert [change[i] for i in ups] == sorted(change[change > 0], reverse=True)[:len(ups)]
    assert [change[i] for i in downs] == sorted(change[change < 0])[:len(downs)]
    texts = [f"query {i}" for i in range(18)]
    labels, ranked, relevant = result.before_after("a3r", "val", picked[:1], texts)
    q = picked[0]
    assert labels == [f"[{rescore.FIRST_STAGE}] query {q}", f"[a3r] query {q}"]
    assert ranked[0] == result.rankings[(rescore.FIRST_STAGE, "val")][q] != ranked[1]
    assert ranked[1] == result.rankings[("a3r", "val")][q] and relevant == [val.relevant[q]] * 2
    assert result.most_changed(rescore.FIRST_STAGE, "val") == []  # nothing changes against itself


def test_before_after_examples_take_val_without_test_answers_and_name_each_image_file(tmp_path):
    val = split("val", 18, False, 2)
    result = rescore.rescore_splits(CFG, [val], {"a3r": {"rerank": "a3r"}})
    names = val.gallery_names
    table = pd.DataFrame({"image": names, "filepath": [str(tmp_path / n) for n in names],
                          "text": [f"query {i}" for i in range(48)]})
    prep = SimpleNamespace(val=table.iloc[:18], test_gallery=None, test_queries=None)
    shown, labels, ranked, paths, relevant = result.before_after_examples(prep, "a3r", 1)
    q = result.most_changed("a3r", "val", 1)
    expected = result.before_after("a3r", "val", q, list(table["text"]))
    assert shown == "val" and (labels, ranked, relevant) == expected
    assert set(paths) == set(val.gallery_names[:18]) and paths["g000.jpg"] == tmp_path / "g000.jpg"


def test_variants_are_validated_and_a3r_needs_the_mirror():
    from lib.config import ConfigError

    with pytest.raises(ConfigError, match="rerank_k"):
        rescore.rescore_splits(CFG, [split("val", 6, False, 0)], {"bad": {"rerank": "a3r", "rerank_k": 40}})
    with pytest.raises(RerankError, match="mirrored"):
        rescore.rescore_splits(CFG, [split("val", 6, False, 0, flip=False)], {"a3r": {"rerank": "a3r"}})
    val = split("val", 6, False, 0, flip=False)
    no_flip = rescore.rescore_splits(CFG, [val], {"a3r without flip": {"rerank": "a3r", "a3r_flip": False}})
    how = settings(CFG.replace(rerank="a3r", a3r_flip=False))  # the same ranking, computed directly
    _, cand = topk(val.query_emb, val.gallery_emb, k=how.max_depth)
    _, idx = rerank(val.query_emb, val.gallery_emb, cand, how, kinds=val.kinds, k=CFG.topk)
    ranked = [[val.gallery_names[j] for j in row] for row in idx.tolist()]
    assert no_flip.rankings[("a3r without flip", "val")] == ranked
    assert no_flip.side_by_side().loc["a3r without flip", "val"] == pytest.approx(
        scoring.score_table(ranked, val.relevant, val.kinds).loc["all", "map10_official"])


@pytest.mark.slow
def test_rescore_a_smoke_run_from_what_infer_returned(smoke_notebook, smoke_workspace, monkeypatch):
    from lib import runs
    from lib.eval import infer, retrieval

    smoke_notebook("04_infer")
    run_dir = smoke_workspace["run_dir"]
    cfg = runs.read_params(run_dir)
    result = infer.infer(cfg, run_dir, progress=False)
    assert result.val_result.gallery_flip_emb is None  # the run does not re-rank
    encoded = []
    real = retrieval.encode_images
    monkeypatch.setattr(retrieval, "encode_images",
                        lambda *a, **kw: encoded.append(kw["flip"]) or real(*a, **kw))
    out = rescore.rescore(cfg, run_dir, result, {"a3r": {"rerank": "a3r"}, "aqe": {"rerank": "aqe"}},
                          progress=False)
    assert set(encoded) <= {True}  # only mirrored galleries may be encoded (on a cache miss)
    table = out.side_by_side()
    assert list(table.columns) == ["val", "test", "test_A", "test_B"]
    assert table.loc[rescore.FIRST_STAGE, "val"] == pytest.approx(
        result.val_scores.loc["all", "map10_official"])
    assert table.loc[rescore.FIRST_STAGE, "test_B"] == pytest.approx(
        result.board_scores["B"].loc["all", "map10_official"])
    changes = out.against_first_stage()
    for variant in ("a3r", "aqe"):
        for column in table.columns:
            assert changes.loc[(variant, column), "delta"] == pytest.approx(
                table.loc[variant, column] - table.loc[rescore.FIRST_STAGE, column], abs=1e-9)
    written = pd.read_csv(run_dir / rescore.RESCORE_FILE)
    assert written.round(9).equals(out.summary().round(9))  # what make promote writes docs/reranking.md from

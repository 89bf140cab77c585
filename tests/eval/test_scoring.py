"""lib.eval.scoring: the score table splits cars and persons (and boards); a split is its own gallery;
flat keys for metrics.jsonl and scores.json; the val evaluator training gets."""
import json
import types

import open_clip
import pandas as pd
import pytest

from lib import config
from lib.data.prepare import val_queries_path
from lib.data.relevance import relevance_sets
from lib.eval import metrics
from lib.eval.embedding_cache import CACHE_ENV
from lib.eval.scoring import (
    board_tables,
    evaluate_split,
    flat_metrics,
    run_val_evaluator,
    score_table,
    split_gallery,
)
from lib.paths import REPO_ROOT


def test_score_table_splits_cars_and_persons_by_kind():
    ranked = [["c1"] + ["x"] * 9, ["x", "c2"] + ["y"] * 8, ["x"] * 10, ["p1"] + ["x"] * 9]
    relevant = [{"c1"}, {"c2"}, {"p9"}, {"p1", "p2"}]
    kinds = ["car", "car", "person", "person"]
    table = score_table(ranked, relevant, kinds)
    assert list(table.index) == ["all", "car", "person"]
    assert list(table.columns) == list(metrics.SUMMARY_KEYS)
    assert table.loc["car", "map10_official"] == pytest.approx((1 + 0.5) / 2)
    assert table.loc["person", "map10_official"] == pytest.approx((0 + 1) / 2)
    assert table.loc["person", "map10_standard"] == pytest.approx((0 + 1 / 2) / 2)
    assert table.loc["all", "map10_official"] == pytest.approx(2.5 / 4)
    assert table.loc["car", "queries"] == 2 and table.loc["all", "recall@1"] == pytest.approx(0.5)
    assert table["queries"].dtype == "int64"  # a count shows as 2, not 2.0000
    only_cars = score_table(ranked[:2], relevant[:2], kinds[:2])
    assert list(only_cars.index) == ["all", "car"]


def test_flat_metrics_keys():
    table = score_table([["a"] * 10, ["b"] * 10], [{"a"}, {"c"}], ["car", "person"])
    flat = flat_metrics(table)
    assert flat["val_map10_official"] == 0.5 and flat["val_car_map10_official"] == 1.0
    assert flat["val_person_recall@10"] == 0.0 and "val_queries" not in flat
    assert set(flat_metrics(table, prefix="")) == {k.removeprefix("val_") for k in flat}


def test_board_tables_score_each_boards_queries_in_order():
    ranked = [["a"] * 10, ["b"] * 10, ["x", "c"] + ["y"] * 8, ["x"] * 10]
    relevant = [{"a"}, {"z"}, {"c"}, {"x"}]
    kinds = ["car", "person", "car", "person"]
    tables = board_tables(ranked, relevant, kinds, ["A", "B", "A", "B"])
    assert list(tables) == ["A", "B"]
    assert tables["A"].loc["all", "map10_official"] == pytest.approx((1 + 0.5) / 2)  # queries 0 and 2
    assert list(tables["A"].index) == ["all", "car"] and tables["A"].loc["all", "queries"] == 2
    assert tables["B"].loc["all", "map10_official"] == pytest.approx((0 + 1) / 2)  # queries 1 and 3
    assert tables["B"].loc["person", "queries"] == 2


def test_split_gallery_is_each_image_once_resolved_and_sorted(tmp_path):
    table = pd.DataFrame({"filepath": [str(tmp_path / "b.jpg"), "data/a.jpg", str(tmp_path / "b.jpg")]})
    assert split_gallery(table) == sorted([str(tmp_path / "b.jpg"), str(REPO_ROOT / "data" / "a.jpg")])


def test_evaluate_split_scores_the_splits_own_images_as_the_gallery(clip, gallery):
    model, tokenizer, pp = clip
    names = sorted(p.name for p in gallery)
    table = pd.DataFrame({"filepath": [str(p) for p in gallery],
                          "text": ["A white car."] * 3 + ["A man."] * 3,
                          "kind": ["car"] * 3 + ["person"] * 3})
    everything, nothing = [set(names)] * 6, [{"missing.png"}] * 6
    cfg = config.load("smoke", topk=6)  # the whole gallery ranked
    scores, result = evaluate_split(model, tokenizer, pp, table, everything, cfg, cache_dir=None,
                                    progress=False)
    assert sorted(result.image_names[0]) == names  # six images, each ranked once
    assert scores.loc["all", "map10_official"] == 1.0 and scores.loc["all", "queries"] == 6
    assert list(scores.index) == ["all", "car", "person"]
    none, _ = evaluate_split(model, tokenizer, pp, table, nothing, cfg, cache_dir=None, progress=False)
    assert none.loc["all", "map10_official"] == 0.0


def test_the_val_evaluator_scores_the_runs_val_table_unprefixed(clip, gallery, tmp_path):
    model, _, _ = clip
    run_dir = tmp_path / "run"
    (run_dir / "data").mkdir(parents=True)
    val = pd.DataFrame({"filepath": [str(p) for p in gallery],
                        "text": ["A white Audi."] * 6, "kind": ["car"] * 6,
                        "image": [p.name for p in gallery],
                        "attribute": ["white Audi"] * 6})  # each query's answers: all six images
    val.to_csv(val_queries_path(run_dir), index=False)
    cfg = config.load("smoke", model="kit-micro-vit", topk=6)
    row = run_val_evaluator(cfg, run_dir)(model)
    scores, _ = evaluate_split(model, open_clip.get_tokenizer("kit-micro-vit"), model.visual.preprocess_cfg,
                               val, relevance_sets(val), cfg, cache_dir=None, progress=False)
    assert row == flat_metrics(scores, prefix="")
    assert row["map10_official"] == 1.0 and row["car_map10_official"] == 1.0 and row["recall@1"] == 1.0
    assert "map10_official" in row and "car_map10_official" in row and "person_map10_official" not in row
    assert run_val_evaluator(cfg, run_dir)(types.SimpleNamespace(module=model)) == row  # DDP's wrapper


def test_evaluate_split_caches_under_the_given_model_id_and_shows_progress_only_when_asked(clip, gallery,
                                                                                          tmp_path, capsys):
    model, tokenizer, pp = clip
    table = pd.DataFrame({"filepath": [str(p) for p in gallery], "text": ["A white car."] * 6,
                          "kind": ["car"] * 6})
    cfg, relevant = config.load("smoke", topk=6), [set()] * 6
    capsys.readouterr()
    evaluate_split(model, tokenizer, pp, table, relevant, cfg, model_id="weights-abc",
                   cache_dir=tmp_path / "cache", progress=False)
    assert capsys.readouterr().err == ""  # progress=False: nothing drawn
    entries = [json.loads(p.read_text()) for p in (tmp_path / "cache").glob("*.json")]
    assert [entry["model_id"] for entry in entries] == ["weights-abc"]  # the gallery, under the id given
    evaluate_split(model, tokenizer, pp, table, relevant, cfg, cache_dir=None)
    assert "encoding images" in capsys.readouterr().err  # the default: a progress bar


def test_the_val_evaluator_draws_nothing_caches_nothing_and_reads_na_as_text(clip, gallery, tmp_path,
                                                                              monkeypatch, capsys):
    """Training calls it every epoch: no bar in the training's output, no cache entry for weights that
    change every epoch (even where a default cache folder is set), and a caption "NA" stays a caption."""
    model, _, _ = clip
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "default-cache"))
    run_dir = tmp_path / "run"
    (run_dir / "data").mkdir(parents=True)
    val_queries_path(run_dir).write_text(
        "filepath,text,kind,image,attribute\n"
        + "".join(f"{p},NA,car,{p.name},white Audi\n" for p in gallery))
    capsys.readouterr()
    row = run_val_evaluator(config.load("smoke", model="kit-micro-vit", topk=6), run_dir)(model)
    assert row["map10_official"] == 1.0  # six "NA" queries, each answered by all six images
    assert capsys.readouterr().err == "" and not (tmp_path / "default-cache").exists()

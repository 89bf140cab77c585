"""lib.eval.retrieval: gallery order, options from the config, category-aware masking, bad gallery images."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from lib.data.images import ImageError
from lib.eval import retrieval
from lib.eval.query_policy import POLICIES

# --- gallery order and encoding -------------------------------------------------------------------


def test_gallery_sorted_by_name_and_rows_match(clip, gallery):
    model, _, pp = clip
    names, emb, hit = retrieval.encode_gallery(model, gallery, pp, cache_dir=None, batch_size=4,
                                               progress=False)
    assert names == ["a.png", "b.png", "c.png", "d.png", "e.png", "f.png"] and not hit
    assert emb.dtype == torch.float32 and emb.device.type == "cpu" and not torch.is_inference(emb)
    assert torch.allclose(emb.norm(dim=1), torch.ones(len(names)), atol=1e-5)
    folder = gallery[0].parent
    one_by_one = torch.cat([retrieval.encode_images(model, [folder / n], pp, progress=False) for n in names])
    assert torch.allclose(emb, one_by_one, atol=1e-5)  # row i is image names[i]
    assert len(set(map(tuple, emb.numpy().round(4).tolist()))) == len(names)  # distinct images


def test_mirrored_gallery_is_the_encoding_of_the_mirror_images(clip, gallery, tmp_path):
    import cv2

    model, _, pp = clip
    mirrors = tmp_path / "mirrors"
    mirrors.mkdir()
    for path in gallery:  # PNG: lossless, so the files hold exactly the mirrored pixels
        assert cv2.imwrite(str(mirrors / path.name), cv2.imread(str(path))[:, ::-1])
    names, flipped, _ = retrieval.encode_gallery(model, gallery, pp, cache_dir=None, flip=True,
                                                 progress=False)
    _, of_mirrors, _ = retrieval.encode_gallery(model, [mirrors / n for n in names], pp, cache_dir=None,
                                                progress=False)
    _, plain, _ = retrieval.encode_gallery(model, gallery, pp, cache_dir=None, progress=False)
    assert torch.allclose(flipped, of_mirrors, atol=1e-6) and not torch.allclose(flipped, plain, atol=1e-3)


def test_options_from_config_are_retrieve_arguments():
    import inspect

    from lib import config

    opts = retrieval.options(config.load("demo"))
    assert set(opts) <= set(inspect.signature(retrieval.retrieve).parameters)
    assert opts["policy"] in POLICIES


def test_retrieve_reranks_the_first_stage_from_cached_embeddings(clip, gallery, tmp_path, monkeypatch):
    from lib import config
    from lib.eval import rerank

    model, tokenizer, pp = clip
    texts = ["This is a white Audi.", "A man with a backpack.", "An orange Bus."]
    kinds = ["car", "person", "car"]
    cfg = config.Config(rerank="a3r", rerank_depth_car=4, rerank_depth_person=5, rerank_m=3, rerank_k=3,
                        topk=3)
    args = dict(model_id="m", cache_dir=tmp_path / "cache", progress=False, k=3, rerank=rerank.settings(cfg))
    res = retrieval.retrieve(model, tokenizer, pp, texts, kinds, gallery, **args)
    assert res.gallery_flip_emb is not None and len(list((tmp_path / "cache").glob("*.npy"))) == 2
    _, first = retrieval.topk(res.query_emb, res.gallery_emb, k=5)
    expected = rerank.rerank(res.query_emb, res.gallery_emb, first, rerank.settings(cfg), kinds=kinds,
                             gallery_flip=res.gallery_flip_emb, k=3)
    assert np.array_equal(res.indices, expected[1].numpy())
    assert np.array_equal(res.scores, expected[0].numpy())
    assert all(set(row) <= set(f[:4 if kind == "car" else 5].tolist())
               for row, f, kind in zip(res.indices.tolist(), first, kinds))
    calls, real = [], retrieval.encode_images
    monkeypatch.setattr(retrieval, "SPOT_CHECK_ROWS", 2)  # a hit encodes 2 random rows again, no more
    monkeypatch.setattr(retrieval, "encode_images", lambda model, paths, *a, **kw: (
        real(model, paths, *a, **kw) if len(paths) == 2 else calls.append(kw)))
    again = retrieval.retrieve(model, tokenizer, pp, texts, kinds, gallery, **args)
    assert again.cache_hit and not calls and np.array_equal(again.indices, res.indices)  # both cached
    plain = retrieval.retrieve(model, tokenizer, pp, texts, kinds, gallery,
                               **(args | {"rerank": rerank.settings(cfg.replace(rerank="aqe"))}))
    assert plain.gallery_flip_emb is None and not calls  # aQE needs no mirror


def test_rerank_refuses_a_category_smaller_than_its_depth(clip, gallery, tmp_path, monkeypatch):
    from lib import config
    from lib.eval import rerank

    model, tokenizer, pp = clip
    three_each = ["car"] * 3 + ["person"] * 3
    monkeypatch.setattr(retrieval, "classify_gallery", lambda g, q, k: three_each)
    cfg = config.Config(rerank="aqe", rerank_depth_car=4, rerank_depth_person=4, rerank_m=2, topk=2)
    with pytest.raises(rerank.RerankError, match="rerank_depth_car"):
        retrieval.retrieve(model, tokenizer, pp, ["white Audi", "A man."], ["car", "person"], gallery, k=2,
                           model_id="m", cache_dir=None, category_aware=True, rerank=rerank.settings(cfg),
                           progress=False)


def test_duplicate_names_refused(tmp_path):
    with pytest.raises(ValueError, match="x.png"):
        retrieval.sort_gallery([tmp_path / "a" / "x.png", tmp_path / "b" / "x.png"])


# --- cache ----------------------------------------------------------------------------------------


# --- bad gallery images ---------------------------------------------------------------------------


def test_missing_gallery_image_named(clip, gallery, tmp_path):
    model, _, pp = clip
    gallery[2].unlink()  # f.png
    for cache_dir in (None, tmp_path / "cache"):
        with pytest.raises(ImageError, match="f.png"):
            retrieval.encode_gallery(model, gallery, pp, cache_dir=cache_dir, progress=False)


# --- top-k ----------------------------------------------------------------------------------------


# --- category-aware -------------------------------------------------------------------------------


def test_classify_gallery_by_query_centroids():
    car, person = torch.tensor([1.0, 0.0, 0.0]), torch.tensor([0.0, 1.0, 0.0])
    queries = torch.stack([car, car * 0.9 + person * 0.1, person])
    gallery = torch.stack([person * 0.8 + car * 0.2, car, person])
    kinds = retrieval.classify_gallery(gallery, queries, ["car", "car", "person"])
    assert kinds == ["person", "car", "person"]
    assert retrieval.classify_gallery(gallery, queries[:2], ["car", "car"]) == ["car"] * 3


def test_retrieve_category_aware(clip, gallery, tmp_path, monkeypatch):
    model, tokenizer, pp = clip
    # the untrained clip model cannot tell cars from persons: fix the classification (wide = car)
    fixed = {name: "car" for name in ("a.png", "b.png", "c.png")} | {
        name: "person" for name in ("d.png", "e.png", "f.png")}
    monkeypatch.setattr(retrieval, "classify_gallery", lambda g, q, k: list(fixed.values()))
    texts = ["This is a white Audi.", "A man with a backpack.", "An orange Bus.", "A woman in a skirt."]
    kinds = ["car", "person", "car", "person"]
    res = retrieval.retrieve(model, tokenizer, pp, texts, kinds, gallery, k=3, model_id="m",
                             cache_dir=tmp_path / "cache", category_aware=True, policy="strip_prefix",
                             progress=False)
    assert res.gallery_kinds == list(fixed.values())
    for kind, names in zip(kinds, res.image_names):
        assert {fixed[n] for n in names} == {kind}
    assert res.encoded_texts[0] == "white Audi" and res.encoded_texts[1] == texts[1]
    plain = retrieval.retrieve(model, tokenizer, pp, texts, kinds, gallery, k=6, model_id="m",
                               cache_dir=tmp_path / "cache", policy="strip_prefix", progress=False)
    assert plain.cache_hit and plain.gallery_kinds is None
    assert sorted(plain.image_names[0]) == plain.gallery_names  # without masking: every image
    assert np.all(np.diff(plain.scores, axis=1) <= 0)

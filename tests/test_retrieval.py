"""Retrieval: gallery order, embedding cache (hits and every invalidation), exact chunked top-k with
ties by index, query policies, category-aware masking, bad gallery images named."""
from __future__ import annotations

import os

import cv2
import numpy as np
import pytest
import torch

from lib import embedding_cache, prompts, retrieval
from lib.images import ImageError
from lib.model import create_model

# --- fixtures -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def micro():
    torch.manual_seed(0)
    model, tokenizer, pp = create_model("kit-micro-vit")
    return model, tokenizer, pp


def _write_image(path, seed: int, shape=(20, 36)) -> None:
    rng = np.random.default_rng(seed)
    assert cv2.imwrite(str(path), rng.integers(0, 256, (*shape, 3), dtype=np.uint8))


@pytest.fixture
def gallery(tmp_path):
    """Six small PNGs, wide ("cars") and tall ("persons"), returned in a deliberately unsorted order."""
    folder = tmp_path / "gallery"
    folder.mkdir()
    names = ["e.png", "a.png", "f.png", "c.png", "b.png", "d.png"]
    for i, name in enumerate(names):
        _write_image(folder / name, i, (20, 36) if name in ("a.png", "b.png", "c.png") else (36, 20))
    return [folder / n for n in names]


def _encode(micro, paths, cache_dir, pp=None, **kw):
    model, _, default_pp = micro
    args = {"model_id": "model-A", "cache_dir": cache_dir, "batch_size": 4, "progress": False} | kw
    return retrieval.encode_gallery(model, paths, pp or default_pp, **args)


class Spy:
    """Counts calls to retrieval.encode_images (the only place that runs the image encoder)."""

    def __init__(self, monkeypatch):
        self.calls, self._real = 0, retrieval.encode_images
        monkeypatch.setattr(retrieval, "encode_images", self)

    def __call__(self, *args, **kwargs):
        self.calls += 1
        return self._real(*args, **kwargs)


# --- gallery order and encoding -------------------------------------------------------------------


def test_gallery_sorted_by_name_and_rows_match(micro, gallery):
    model, _, pp = micro
    names, emb, hit = retrieval.encode_gallery(model, gallery, pp, cache_dir=None, batch_size=4,
                                               progress=False)
    assert names == ["a.png", "b.png", "c.png", "d.png", "e.png", "f.png"] and not hit
    assert emb.dtype == torch.float32 and emb.device.type == "cpu" and not torch.is_inference(emb)
    assert torch.allclose(emb.norm(dim=1), torch.ones(len(names)), atol=1e-5)
    folder = gallery[0].parent
    one_by_one = torch.cat([retrieval.encode_images(model, [folder / n], pp, progress=False) for n in names])
    assert torch.allclose(emb, one_by_one, atol=1e-5)  # row i is image names[i]
    assert len(set(map(tuple, emb.numpy().round(4).tolist()))) == len(names)  # distinct images


def test_encode_texts_normalised_and_batch_independent(micro):
    model, tokenizer, _ = micro
    texts = ["This is a white Audi.", "A man with a backpack.", "grey Chery Sedan"]
    one = retrieval.encode_texts(model, tokenizer, texts, batch_size=1, progress=False)
    all_ = retrieval.encode_texts(model, tokenizer, texts, batch_size=8, progress=False)
    assert one.shape == (3, 64) and torch.allclose(one, all_, atol=1e-5)
    assert torch.allclose(one.norm(dim=1), torch.ones(3), atol=1e-5)


def test_options_from_config_are_retrieve_arguments():
    import inspect

    from lib import config

    opts = retrieval.options(config.load("demo"))
    assert set(opts) <= set(inspect.signature(retrieval.retrieve).parameters)
    assert opts["policy"] in prompts.POLICIES


def test_duplicate_names_refused(tmp_path):
    with pytest.raises(ValueError, match="x.png"):
        retrieval.sort_gallery([tmp_path / "a" / "x.png", tmp_path / "b" / "x.png"])


def test_model_mode_restored(micro, gallery):
    model, _, pp = micro
    model.train()
    retrieval.encode_images(model, gallery[:1], pp, progress=False)
    assert model.training


# --- cache ----------------------------------------------------------------------------------------


def test_cache_hit_does_not_encode_again(micro, gallery, tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    spy = Spy(monkeypatch)
    names, emb, hit = _encode(micro, gallery, cache)
    assert (spy.calls, hit) == (1, False)
    (npy,) = cache.glob("*.npy")
    assert npy.with_suffix(".json").is_file() and not list(cache.glob("*.tmp"))
    mtime = npy.stat().st_mtime_ns
    names2, emb2, hit2 = _encode(micro, list(reversed(gallery)), cache)
    assert (spy.calls, hit2) == (1, True)  # encoder not called again
    assert names2 == names and torch.equal(emb2, emb)  # bit-identical to the miss
    assert npy.stat().st_mtime_ns == mtime and len(list(cache.glob("*.npy"))) == 1


def test_cache_invalidated_by_changed_image(micro, gallery, tmp_path, monkeypatch):
    cache, spy = tmp_path / "cache", Spy(monkeypatch)
    _, emb, _ = _encode(micro, gallery, cache)
    changed = gallery[1]  # a.png, row 0
    before = changed.stat().st_mtime_ns
    _write_image(changed, 99)
    os.utime(changed, ns=(before + 10**9, before + 10**9))  # independent of the clock's resolution
    _, emb2, hit = _encode(micro, gallery, cache)
    assert (spy.calls, hit) == (2, False)
    assert not torch.allclose(emb2[0], emb[0]) and torch.allclose(emb2[1:], emb[1:], atol=1e-5)


def test_cache_invalidated_by_model_preprocessing_precision_and_list(micro, gallery, tmp_path, monkeypatch):
    cache, spy = tmp_path / "cache", Spy(monkeypatch)
    _, _, pp = micro
    _encode(micro, gallery, cache)
    assert not _encode(micro, gallery, cache, model_id="model-B")[2]
    assert not _encode(micro, gallery, cache, pp={**pp, "fill_color": 255})[2]
    assert not _encode(micro, gallery, cache, pp={**pp, "interpolation": "bilinear"})[2]
    assert not _encode(micro, gallery, cache, precision="bf16")[2]
    assert not _encode(micro, gallery[:5], cache)[2]
    assert spy.calls == 6 and len(list(cache.glob("*.npy"))) == 6
    assert _encode(micro, gallery, cache, model_id="model-B")[2]  # each entry is reused afterwards
    assert spy.calls == 6


def test_model_fingerprint_follows_weights(micro):
    model = micro[0]
    first = embedding_cache.model_fingerprint(model)
    assert embedding_cache.model_fingerprint(model) == first
    with torch.no_grad():
        model.logit_scale.add_(1.0)
    try:
        assert embedding_cache.model_fingerprint(model) != first
    finally:
        with torch.no_grad():
            model.logit_scale.sub_(1.0)


def test_cache_entry_not_matching_is_ignored(micro, gallery, tmp_path, monkeypatch):
    cache, spy = tmp_path / "cache", Spy(monkeypatch)
    _encode(micro, gallery, cache)
    (npy,) = cache.glob("*.npy")
    npy.write_bytes(b"not an array")  # damaged entry: re-encode and rewrite, never crash or reuse
    with pytest.warns(UserWarning, match="ignoring"):
        assert not _encode(micro, gallery, cache)[2]
    assert spy.calls == 2 and np.load(npy).shape[0] == len(gallery)


# --- bad gallery images ---------------------------------------------------------------------------


@pytest.mark.parametrize("workers", [0, 2])
def test_corrupt_gallery_image_named(micro, gallery, workers, monkeypatch):
    model, _, pp = micro
    monkeypatch.setattr(retrieval, "loader_workers", lambda requested, device: requested)  # real workers
    bad = gallery[0].parent / "c.png"
    bad.write_bytes(b"\x89PNG garbage")
    with pytest.raises(ImageError, match="c.png"):
        retrieval.encode_gallery(model, gallery, pp, cache_dir=None, workers=workers, progress=False)


def test_missing_gallery_image_named(micro, gallery, tmp_path):
    model, _, pp = micro
    gallery[2].unlink()  # f.png
    for cache_dir in (None, tmp_path / "cache"):
        with pytest.raises(ImageError, match="f.png"):
            retrieval.encode_gallery(model, gallery, pp, cache_dir=cache_dir, progress=False)


# --- top-k ----------------------------------------------------------------------------------------


def _brute_force(q: torch.Tensor, g: torch.Tensor, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The full score matrix, each row ordered by (-score, index) with numpy's lexsort."""
    scores = (q @ g.T).numpy()
    order = np.stack([np.lexsort((np.arange(len(row)), -row)) for row in scores])[:, :k]
    return np.take_along_axis(scores, order, 1), order


@pytest.mark.parametrize("chunk", [1, 4, 7, 23, 1024])
@pytest.mark.parametrize("k", [1, 10, 37])
def test_topk_equals_brute_force(chunk, k):
    gen = torch.Generator().manual_seed(1)
    q, g = torch.randn(23, 8, generator=gen), torch.randn(37, 8, generator=gen)
    scores, idx = retrieval.topk(q, g, k=k, chunk=chunk)
    want_scores, want_idx = _brute_force(q, g, k)
    assert idx.dtype == torch.long and idx.shape == (23, k)
    assert np.array_equal(idx.numpy(), want_idx)
    assert np.allclose(scores.numpy(), want_scores, atol=1e-6)


@pytest.mark.parametrize("chunk", [1, 3, 64])
def test_topk_ties_broken_by_index(chunk):
    # Scores are exact in float32 (small integers), so duplicated gallery rows tie exactly, and
    # ties straddle rank k (the rows that torch.topk alone would decide arbitrarily).
    gen = torch.Generator().manual_seed(2)
    base = torch.randint(-1, 2, (4, 6), generator=gen).float()
    g = base[torch.randint(0, 4, (40,), generator=gen)]
    q = torch.randint(-1, 2, (9, 6), generator=gen).float()
    for k in (1, 5, 10, 40):
        scores, idx = retrieval.topk(q, g, k=k, chunk=chunk)
        want_scores, want_idx = _brute_force(q, g, k)
        assert np.array_equal(idx.numpy(), want_idx) and np.array_equal(scores.numpy(), want_scores)


def test_topk_tie_example():
    a, b = torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0])
    g = torch.stack([b, a, b, a, a])
    scores, idx = retrieval.topk(a[None], g, k=4)
    assert idx.tolist() == [[1, 3, 4, 0]] and scores.tolist() == [[1.0, 1.0, 1.0, 0.0]]
    assert retrieval.topk(a[None], torch.stack([a] * 30), k=10, chunk=1)[1].tolist() == [list(range(10))]


def test_topk_refuses_k_larger_than_gallery():
    with pytest.raises(ValueError, match="k=5"):
        retrieval.topk(torch.ones(2, 3), torch.ones(4, 3), k=5)


def test_topk_groups_mask_other_category():
    gen = torch.Generator().manual_seed(3)
    q, g = torch.randn(12, 5, generator=gen), torch.randn(30, 5, generator=gen)
    qg, gg = torch.arange(12) % 2, (torch.arange(30) % 3 == 0).long()  # 10 images of group 1
    scores, idx = retrieval.topk(q, g, k=10, chunk=5, query_groups=qg, gallery_groups=gg)
    assert (gg[idx] == qg[:, None]).all()  # never an image of the other group
    full = q @ g.T
    for i in range(12):
        allowed = torch.nonzero(gg == qg[i]).flatten()
        best = allowed[torch.argsort(-full[i, allowed], stable=True)][:10]
        assert idx[i].tolist() == best.tolist()
    # a group with fewer than k images: the rest come last with -inf, by index
    s2, i2 = retrieval.topk(q[:1], g, k=12, query_groups=torch.tensor([1]), gallery_groups=gg)
    assert torch.isinf(s2[0, 10:]).all() and i2[0, 10:].tolist() == [1, 2]


# --- category-aware -------------------------------------------------------------------------------


def test_classify_gallery_by_query_centroids():
    car, person = torch.tensor([1.0, 0.0, 0.0]), torch.tensor([0.0, 1.0, 0.0])
    queries = torch.stack([car, car * 0.9 + person * 0.1, person])
    gallery = torch.stack([person * 0.8 + car * 0.2, car, person])
    kinds, margin = retrieval.classify_gallery(gallery, queries, ["car", "car", "person"])
    assert kinds == ["person", "car", "person"] and margin[1] > 0 > margin[0]
    assert retrieval.classify_gallery(gallery, queries[:2], ["car", "car"])[0] == ["car"] * 3


def test_retrieve_category_aware(micro, gallery, tmp_path, monkeypatch):
    model, tokenizer, pp = micro
    # the untrained micro model cannot tell cars from persons: fix the classification (wide = car)
    fixed = {name: "car" for name in ("a.png", "b.png", "c.png")} | {
        name: "person" for name in ("d.png", "e.png", "f.png")}
    monkeypatch.setattr(retrieval, "classify_gallery",
                        lambda g, q, k: (list(fixed.values()), np.zeros(len(g))))
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


# --- query policies -------------------------------------------------------------------------------

CAR_QUERIES = ["This is a grey Chery Sedan.", "This is an orange Buick SUV.", "A white Audi Sedan.",
               "An orange Golden Dragon Bus."]
PERSON = "A female pedestrian is someone who walks on foot. She is in a short sleeve shirt."


def test_strip_prefix_on_the_four_prefixes():
    out = prompts.apply_policy(CAR_QUERIES + [PERSON], ["car"] * 4 + ["person"], "strip_prefix")
    assert out == ["grey Chery Sedan", "orange Buick SUV", "white Audi Sedan", "orange Golden Dragon Bus",
                   PERSON]


def test_surveillance_appends_to_car_queries_only():
    out = prompts.apply_policy([CAR_QUERIES[0], PERSON, "Truck"], ["car", "person", "car"], "surveillance")
    assert out == ["This is a grey Chery Sedan image taken by traffic surveillance cameras", PERSON,
                   "Truck image taken by traffic surveillance cameras"]


def test_policy_none_and_errors():
    assert prompts.apply_policy(CAR_QUERIES, ["car"] * 4, "none") == CAR_QUERIES
    assert prompts.strip_prefix("Anhui Jianghuai truck.") == "Anhui Jianghuai truck"  # "An" only as a word
    with pytest.raises(ValueError, match="surveilance"):
        prompts.apply_policy(CAR_QUERIES, ["car"] * 4, "surveilance")
    with pytest.raises(ValueError, match="one kind per query"):
        prompts.apply_policy(CAR_QUERIES, ["car"], "none")
    with pytest.raises(ValueError, match="query 2"):
        prompts.apply_policy(CAR_QUERIES[:2], ["car", "vehicle"], "none")


def test_loader_workers_leave_the_cpu_to_the_model(monkeypatch):
    """On the CPU, workers only get the cores torch's threads leave free; a GPU gets all asked for."""
    monkeypatch.setattr(retrieval.os, "cpu_count", lambda: 2)
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        assert retrieval.loader_workers(4, torch.device("cpu")) == 0
        torch.set_num_threads(1)
        assert retrieval.loader_workers(4, torch.device("cpu")) == 1
        assert retrieval.loader_workers(0, torch.device("cpu")) == 0
    finally:
        torch.set_num_threads(before)
    assert retrieval.loader_workers(4, torch.device("cuda")) == 4

"""lib.eval.embedding_cache (through retrieval.encode_gallery): hits, every invalidation, damaged entries."""
from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from lib.eval import embedding_cache, retrieval
from tests.conftest import write_image


def _encode(clip, paths, cache_dir, pp=None, **kw):
    model, _, default_pp = clip
    args = {"model_id": "model-A", "cache_dir": cache_dir, "batch_size": 4, "progress": False} | kw
    return retrieval.encode_gallery(model, paths, pp or default_pp, **args)


class Spy:
    """Counts calls to retrieval.encode_images (the only place that runs the image encoder): encodes
    of the gallery (`calls`), and the spot checks of a cache hit (2 rows here, `spot_checks`)."""

    def __init__(self, monkeypatch):
        self.calls, self.spot_checks, self._real = 0, 0, retrieval.encode_images
        monkeypatch.setattr(retrieval, "encode_images", self)
        monkeypatch.setattr(retrieval, "SPOT_CHECK_ROWS", 2)

    def __call__(self, model, paths, *args, **kwargs):
        if len(paths) == retrieval.SPOT_CHECK_ROWS:
            self.spot_checks += 1
        else:
            self.calls += 1
        return self._real(model, paths, *args, **kwargs)


def test_cache_hit_does_not_encode_again(clip, gallery, tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    spy = Spy(monkeypatch)
    names, emb, hit = _encode(clip, gallery, cache)
    assert (spy.calls, hit) == (1, False)
    (npy,) = cache.glob("*.npy")
    assert npy.with_suffix(".json").is_file() and not list(cache.glob("*.tmp"))
    mtime = npy.stat().st_mtime_ns
    names2, emb2, hit2 = _encode(clip, list(reversed(gallery)), cache)
    assert (spy.calls, spy.spot_checks, hit2) == (1, 1, True)  # only 2 random rows encoded again
    assert names2 == names and torch.equal(emb2, emb)  # bit-identical to the miss
    assert npy.stat().st_mtime_ns == mtime and len(list(cache.glob("*.npy"))) == 1


def test_cache_invalidated_by_changed_image(clip, gallery, tmp_path, monkeypatch):
    cache, spy = tmp_path / "cache", Spy(monkeypatch)
    _, emb, _ = _encode(clip, gallery, cache)
    changed = gallery[1]  # a.png, row 0
    before = changed.stat().st_mtime_ns
    write_image(changed, 99)
    os.utime(changed, ns=(before + 10**9, before + 10**9))  # independent of the clock's resolution
    _, emb2, hit = _encode(clip, gallery, cache)
    assert (spy.calls, hit) == (2, False)
    assert not torch.allclose(emb2[0], emb[0]) and torch.allclose(emb2[1:], emb[1:], atol=1e-5)


def test_cache_invalidated_by_model_preprocessing_precision_and_list(clip, gallery, tmp_path, monkeypatch):
    cache, spy = tmp_path / "cache", Spy(monkeypatch)
    _, _, pp = clip
    _encode(clip, gallery, cache)
    assert not _encode(clip, gallery, cache, model_id="model-B")[2]
    assert not _encode(clip, gallery, cache, pp={**pp, "fill_color": 255})[2]
    assert not _encode(clip, gallery, cache, pp={**pp, "interpolation": "bilinear"})[2]
    assert not _encode(clip, gallery, cache, precision="bf16")[2]
    assert not _encode(clip, gallery[:5], cache)[2]
    assert not _encode(clip, gallery, cache, flip=True)[2]  # the mirrored gallery: an entry of its own
    assert spy.calls == 7 and len(list(cache.glob("*.npy"))) == 7
    assert _encode(clip, gallery, cache, model_id="model-B")[2]  # each entry is reused afterwards
    assert _encode(clip, gallery, cache, flip=True)[2] and _encode(clip, gallery, cache)[2]
    assert spy.calls == 7


def test_model_fingerprint_follows_weights(clip):
    model = clip[0]
    first = embedding_cache.model_fingerprint(model)
    assert embedding_cache.model_fingerprint(model) == first
    with torch.no_grad():
        model.logit_scale.add_(1.0)
    try:
        assert embedding_cache.model_fingerprint(model) != first
    finally:
        with torch.no_grad():
            model.logit_scale.sub_(1.0)


def test_cache_entry_not_matching_is_ignored(clip, gallery, tmp_path, monkeypatch):
    cache, spy = tmp_path / "cache", Spy(monkeypatch)
    _encode(clip, gallery, cache)
    (npy,) = cache.glob("*.npy")
    npy.write_bytes(b"not an array")  # damaged entry: re-encode and rewrite, never crash or reuse
    with pytest.warns(UserWarning, match="ignoring"):
        assert not _encode(clip, gallery, cache)[2]
    assert spy.calls == 2 and np.load(npy).shape[0] == len(gallery)

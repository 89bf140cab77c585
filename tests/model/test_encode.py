"""lib.model.encode: normalised embeddings in input order, the model's mode kept, bad images named."""
from __future__ import annotations

import pytest
import torch

from lib.data.images import ImageError
from lib.model import encode


def test_encode_texts_normalised_and_batch_independent(clip):
    model, tokenizer, _ = clip
    texts = ["This is a white Audi.", "A man with a backpack.", "grey Chery Sedan"]
    one = encode.encode_texts(model, tokenizer, texts, batch_size=1, progress=False)
    all_ = encode.encode_texts(model, tokenizer, texts, batch_size=8, progress=False)
    assert one.shape == (3, 64) and torch.allclose(one, all_, atol=1e-5)
    assert torch.allclose(one.norm(dim=1), torch.ones(3), atol=1e-5)


def test_model_mode_restored(clip, gallery):
    model, _, pp = clip
    model.train()
    encode.encode_images(model, gallery[:1], pp, progress=False)
    assert model.training


@pytest.mark.parametrize("workers", [0, 2])
def test_corrupt_gallery_image_named(clip, gallery, workers, monkeypatch):
    model, _, pp = clip
    monkeypatch.setattr(encode, "loader_workers", lambda requested, device: requested)  # real workers
    bad = gallery[0].parent / "c.png"
    bad.write_bytes(b"\x89PNG garbage")
    with pytest.raises(ImageError, match="c.png"):
        encode.encode_images(model, gallery, pp, workers=workers, progress=False)


def test_loader_workers_leave_the_cpu_to_the_model(monkeypatch):
    """On the CPU, workers only get the cores torch's threads leave free; a GPU gets all asked for."""
    monkeypatch.setattr(encode.os, "cpu_count", lambda: 2)
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        assert encode.loader_workers(4, torch.device("cpu")) == 0
        torch.set_num_threads(1)
        assert encode.loader_workers(4, torch.device("cpu")) == 1
        assert encode.loader_workers(0, torch.device("cpu")) == 0
    finally:
        torch.set_num_threads(before)
    assert encode.loader_workers(4, torch.device("cuda")) == 4

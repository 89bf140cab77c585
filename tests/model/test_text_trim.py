"""lib.model.text_trim: the text tower on a batch's used length gives open_clip's features."""
from __future__ import annotations

import open_clip
import pytest
import torch

from lib.model import text_trim
from lib.model.factory import create_model, model_from_config

CAPTIONS = ["A red Sedan.", "This is a white Audi parked by the kerb on a rainy evening in the city centre.",
            "A woman in a long skirt carrying a bag.", "x"]


@pytest.fixture(scope="module")
def pair():
    torch.manual_seed(0)
    plain, tokenizer, _ = create_model("kit-micro-vit", "")
    trimmed, _, _ = create_model("kit-micro-vit", "")
    trimmed.load_state_dict(plain.state_dict())
    assert text_trim.install(trimmed) and not text_trim.installed(plain)
    return plain.eval(), trimmed.eval(), tokenizer


def test_same_features_as_open_clip(pair):
    plain, trimmed, tokenizer = pair
    tokens = tokenizer(CAPTIONS)
    assert text_trim.used_length(tokens) < tokens.shape[1] // 2  # there is padding to skip
    with torch.no_grad():
        close = dict(atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(trimmed.encode_text(tokens), plain.encode_text(tokens), **close)
        torch.testing.assert_close(trimmed.encode_text(tokens[:1], normalize=True),  # one short caption
                                   plain.encode_text(tokens[:1], normalize=True), **close)


def test_forward_and_gradients_match(pair):
    """Training goes through model(image, text): same loss and same gradients."""
    plain, trimmed, tokenizer = pair
    images, tokens = torch.randn(4, 3, 32, 32), tokenizer(CAPTIONS)
    losses = []
    for m in (plain, trimmed):
        m.zero_grad()
        img, txt, scale = m(images, tokens)[:3]
        loss = open_clip.ClipLoss()(img, txt, scale)
        loss.backward()
        losses.append(loss.detach())
    torch.testing.assert_close(losses[0], losses[1], atol=1e-5, rtol=1e-5)
    for (name, a), b in zip(plain.named_parameters(), trimmed.parameters()):
        if a.grad is not None:
            torch.testing.assert_close(a.grad, b.grad, atol=1e-5, rtol=1e-4, msg=name)


def test_a_standard_clip_config_is_supported():
    torch.manual_seed(0)
    model = open_clip.create_model("ViT-B-32")  # the text tower every CLIP config shares, random init
    assert text_trim.supports(model)


def test_not_installed_where_trimming_would_change_the_result(monkeypatch):
    model, _, _ = create_model("kit-micro-vit", "")
    model.text_pool_type = "last"  # pooling at the last position reads the padding
    assert not text_trim.supports(model) and not text_trim.install(model)
    model.text_pool_type = "argmax"
    model.attn_mask = torch.zeros_like(model.attn_mask)  # bidirectional: padding is seen
    assert not text_trim.install(model)
    assert not text_trim.is_causal(None)


def test_config_switch_reaches_the_model_and_changes_no_feature():
    from lib import config

    torch.manual_seed(0)
    on, tokenizer, _ = model_from_config(config.load("smoke", pretrained=""))
    torch.manual_seed(0)
    off, _, _ = model_from_config(config.load("smoke", pretrained="", trim_text_padding=False))
    assert text_trim.installed(on) and not text_trim.installed(off)
    tokens = tokenizer(CAPTIONS)
    with torch.no_grad():
        torch.testing.assert_close(on.encode_text(tokens), off.encode_text(tokens), atol=1e-5, rtol=1e-5)

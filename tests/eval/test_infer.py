"""lib.eval.infer: which checkpoint is scored, what keys its embeddings, the demo's test answers in order."""
import json

import pytest

from lib import config
from lib.errors import KitError
from lib.eval import infer
from lib.eval.metrics import MetricsError
from lib.files import sha256_file


def test_checkpoint_choice_explicit_then_soup_then_best_then_pretrained(tmp_path):
    assert infer.choose_checkpoint(tmp_path) == ""  # no training: the pretrained weights
    ckpts = tmp_path / "checkpoints"
    ckpts.mkdir()
    for n in (1, 2, 3):
        (ckpts / f"epoch_{n}.pt").write_bytes(b"x")
    scores = {0: 0.1, 1: 0.3, 2: 0.5, 3: 0.4}
    rows = [{"epoch": e, "step": e, "val_map10_official": v} for e, v in scores.items()]
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert infer.choose_checkpoint(tmp_path) == str(ckpts / "epoch_2.pt")  # the best val epoch
    assert infer.choose_checkpoint(tmp_path, "other.pt") == "other.pt"
    (ckpts / "soup.pt").write_bytes(b"x")  # lib.soup.make's: scored only when the run asks for a soup
    assert infer.choose_checkpoint(tmp_path) == str(ckpts / "epoch_2.pt")
    assert infer.choose_checkpoint(tmp_path, soup="greedy") == str(ckpts / "soup.pt")
    assert infer.choose_checkpoint(tmp_path, "other.pt", soup="greedy") == "other.pt"
    # a fixed epoch, as the reference submitted epoch 5: that one, whatever val says
    assert infer.choose_checkpoint(tmp_path, submit_epoch=3) == str(ckpts / "epoch_3.pt")
    with pytest.raises(KitError, match="no checkpoint of submit_epoch=5 .*epoch_1.pt, epoch_2.pt"):
        infer.choose_checkpoint(tmp_path, submit_epoch=5)  # never the pretrained weights in its place

def test_model_identity_is_the_weights_digest_or_the_tag(tmp_path):
    weights = tmp_path / "w.pt"
    weights.write_bytes(b"weights")
    cfg = config.load("competition")
    assert infer.model_identity(cfg, str(weights)) == sha256_file(weights)
    assert infer.model_identity(cfg, "") == "ViT-bigG-14/laion2b_s39b_b160k/0"
    cfg = config.load("competition", pretrained=str(weights))
    assert infer.model_identity(cfg, "") == sha256_file(weights)


def test_test_answers_must_be_in_the_queries_order(tmp_path):
    cfg = config.load("competition", data_root=str(tmp_path))
    assert infer.test_relevance(cfg, ["a"]) is None  # the real data has no answers
    (tmp_path / "test").mkdir()
    (tmp_path / "test" / "test_gt.txt").write_text("A white Audi.$x.jpg$y.jpg\nA man.$z.jpg\n")
    assert infer.test_relevance(cfg, ["A white Audi.", "A man."]) == [{"x.jpg", "y.jpg"}, {"z.jpg"}]
    with pytest.raises(MetricsError, match="query 0"):
        infer.test_relevance(cfg, ["A man.", "A white Audi."])

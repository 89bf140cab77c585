"""lib.train.loop: an exact mid-epoch resume, bad images skipped and limited, accumulation, bf16.

One reference run (2 epochs, tests/train/conftest.py) is shared by the tests that only read its files.
"""
from __future__ import annotations

import json
from pathlib import Path

import open_clip
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from lib.data.images import TooManyBadImages, read_image
from lib.data.transforms import eval_transform
from lib.model.checkpoints import load_checkpoint
from lib.model.factory import create_model, model_from_config
from lib.train.launch import train
from lib.train.log import read_metrics
from lib.train.loop import TrainingDiverged, TrainLoop, evaluation_summary
from tests.train import make_table, tiny_cfg

# ------------------------------------------------------------------------- the run's files


def test_resume_mid_epoch_is_bit_exact(reference, tmp_path, monkeypatch):
    """Killed at step 7 (latest.pt from step 6, mid epoch 2) then resumed == never stopped."""
    cfg, table = reference["cfg"], reference["table"]
    step = TrainLoop._optimizer_step

    def dies_at_step_7(self, batches):
        if self.step == 6:
            raise KeyboardInterrupt("killed")
        return step(self, batches)

    monkeypatch.setattr(TrainLoop, "_optimizer_step", dies_at_step_7)
    with pytest.raises(KeyboardInterrupt):
        train(cfg, tmp_path / "run", table, val_table=table.iloc[:8], progress=False)
    monkeypatch.setattr(TrainLoop, "_optimizer_step", step)
    assert load_checkpoint(tmp_path / "run" / "checkpoints" / "latest.pt")["step"] == 6
    result = train(cfg, tmp_path / "run", table, val_table=table.iloc[:8], progress=False, resume="latest")

    want = load_checkpoint(reference["root"] / "run" / "checkpoints" / "epoch_2.pt")
    got = load_checkpoint(result.checkpoints[-1])
    assert got["step"] == want["step"] == 8
    assert want["state_dict"].keys() == got["state_dict"].keys()
    assert all(torch.equal(want["state_dict"][k], got["state_dict"][k]) for k in want["state_dict"])
    want_state, got_state = want["optimizer"]["state"], got["optimizer"]["state"]
    assert want_state.keys() == got_state.keys() and len(want_state) > 0
    for key in want_state:
        assert want_state[key].keys() == got_state[key].keys()
        assert all(torch.equal(want_state[key][k], got_state[key][k]) for k in want_state[key])
    assert "resumed from" in (tmp_path / "run" / "out.log").read_text()
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [0, 1, 2]
    ref_rows = read_metrics(reference["root"] / "run" / "metrics.jsonl")
    for key in ("val_loss", "train_loss"):
        assert rows[2][key] == ref_rows[2][key]


def _val_loss_by_hand(cfg, checkpoint, rows, batch_size):
    """The val loss recomputed outside the loop: the eval transform (pad, resize, centre crop), the
    loader's sequential batches of `batch_size` rows with the unreadable images left out, open_clip's
    ClipLoss per batch, averaged over the images (not over the batches)."""
    model, tokenizer, preprocess_cfg = model_from_config(cfg, checkpoint=checkpoint, device="cpu")
    model.eval()
    transform = eval_transform(preprocess_cfg)
    total, count = 0.0, 0
    with torch.no_grad():
        for start in range(0, len(rows) - len(rows) % batch_size, batch_size):
            batch = [r for r in rows[start:start + batch_size]
                     if Path(r["filepath"]).read_bytes()[:2] == b"\xff\xd8"]  # a JPEG
            images = torch.stack([transform(Image.fromarray(read_image(r["filepath"]))) for r in batch])
            img = F.normalize(model.encode_image(images), dim=-1)
            txt = F.normalize(model.encode_text(tokenizer([r["title"] for r in batch])), dim=-1)
            loss = open_clip.ClipLoss()(img, txt, model.logit_scale.exp())
            total, count = total + loss.item() * len(batch), count + len(batch)
    return total / count


def test_the_val_loss_is_the_eval_transforms_mean_over_images(tmp_path):
    """Val rows 0-7 in batches 0-3 and 4-7, row 1 unreadable: batches of 3 and 4 images, so the mean
    over images differs from the mean of the two batch means; the training transform (random crop)
    would give other numbers again."""
    table = make_table(tmp_path / "images")
    (tmp_path / "images" / "img01.jpg").write_bytes(b"not a jpeg")
    cfg = tiny_cfg(tmp_path, stop_epoch=1, max_bad_image_fraction=0.25)
    val = table.iloc[:8]
    train(cfg, tmp_path / "run", table.iloc[8:], val_table=val, progress=False)
    logged = read_metrics(tmp_path / "run" / "metrics.jsonl")[-1]["val_loss"]
    rows = val.to_dict("records")
    expected = _val_loss_by_hand(cfg, tmp_path / "run" / "checkpoints" / "epoch_1.pt", rows, cfg.batch_size)
    assert logged == pytest.approx(expected, rel=1e-5)
    per_batch = _val_loss_by_hand(cfg, tmp_path / "run" / "checkpoints" / "epoch_1.pt", rows[:4], 4) / 2 + \
        _val_loss_by_hand(cfg, tmp_path / "run" / "checkpoints" / "epoch_1.pt", rows[4:], 4) / 2
    assert abs(per_batch - expected) > 1e-4, "the case must tell the two means apart"


# ----------------------------------------------------------------------------- bad images

def test_bad_images_are_skipped_counted_and_limited(tmp_path):
    table = make_table(tmp_path / "images")
    truncated = tmp_path / "images" / "img03.jpg"
    truncated.write_bytes(truncated.read_bytes()[:200])
    table.loc[5, "filepath"] = str(tmp_path / "images" / "gone.jpg")
    cfg = tiny_cfg(tmp_path, stop_epoch=1, max_bad_image_fraction=0.125)  # 2 of 16 allowed
    result = train(cfg, tmp_path / "ok", table, progress=False)
    log = (tmp_path / "ok" / "out.log").read_text()
    assert "skipped bad image" in log and str(truncated) in log and "gone.jpg" in log
    assert log.count("skipped bad image") == 2
    seen = load_checkpoint(result.checkpoints[-1])["train_state"]["bad_images"]
    assert set(seen) == {str(truncated), str(tmp_path / "images" / "gone.jpg")}
    with pytest.raises(TooManyBadImages, match="2 of 16 images") as err:
        train(cfg.replace(max_bad_image_fraction=0.1), tmp_path / "stop", table, progress=False)
    assert str(truncated) in str(err.value) and "gone.jpg" in str(err.value)
    assert "max_bad_image_fraction=0.1" in str(err.value)


# ---------------------------------------------------------------------------------- DDP


# ------------------------------------------------------------------- accumulation, options

def test_accumulation_gives_the_full_batch_gradient(tmp_path):
    """accum 2 x batch 2 == batch 4 (open_clip's feature caching: the loss sees all 4 pairs)."""
    table = make_table(tmp_path / "images", n=8)
    loop = TrainLoop(tiny_cfg(tmp_path), tmp_path / "run", table, None, None, None, False)
    batch = loop.collate([loop.dataset[(0, i)] for i in range(4)])
    images, texts = batch["images"], batch["texts"]
    grads = []
    loop.optimizer.step = lambda: grads.append({n: p.grad.clone() for n, p in loop.model.named_parameters()})
    loss_full = loop._optimizer_step([(images, texts)])
    loss_accum = loop._optimizer_step([(images[:2], texts[:2]), (images[2:], texts[2:])])
    loop._optimizer_step([(images[:2], texts[:2])])  # a batch of 2 alone: another gradient
    assert loss_accum == pytest.approx(loss_full.item(), rel=1e-5)
    assert all(torch.allclose(grads[0][n], grads[1][n], rtol=1e-4, atol=1e-5) for n in grads[0])
    assert not all(torch.allclose(grads[0][n], grads[2][n], rtol=1e-4, atol=1e-5) for n in grads[0])


def test_bf16_grad_checkpointing_and_locked_image_tower(tmp_path):
    table = make_table(tmp_path / "images")
    cfg = tiny_cfg(tmp_path, stop_epoch=1, precision="bf16", grad_checkpointing=True, lock_image=True,
                   accum_steps=2)
    torch.manual_seed(cfg.seed)
    start, _, _ = create_model("kit-micro-vit", "")
    result = train(cfg, tmp_path / "run", table, progress=False)
    end = load_checkpoint(result.checkpoints[0])
    assert end["step"] == 2  # 16 // 4 = 4 batches, 2 per step
    weights = start.state_dict()
    assert all(torch.equal(weights[k], v) for k, v in end["state_dict"].items() if k.startswith("visual."))
    assert not torch.equal(weights["token_embedding.weight"], end["state_dict"]["token_embedding.weight"])
    assert "precision bf16" in (tmp_path / "run" / "out.log").read_text()
    probe = TrainLoop(cfg, tmp_path / "probe", table, None, None, None, False)
    batch = probe.collate([probe.dataset[(0, i)] for i in range(4)])
    with probe.amp():  # what the loop runs the model under
        assert probe.model.encode_image(batch["images"]).dtype == torch.bfloat16
        assert probe.model.encode_text(batch["texts"]).dtype == torch.bfloat16


def test_a_diverging_run_stops_at_once_and_saves_nothing_from_that_state(tmp_path):
    """eps=0 used to train to NaN weights, save epoch_1.pt and exit 0 (eps=0 is now refused by the
    config); a divergence from any cause stops at the step it happens, naming it."""
    table = make_table(tmp_path / "images")
    cfg = tiny_cfg(tmp_path, lr=1e20, warmup_steps=1, save_every_steps=0)
    stops = r"step 1 \(epoch 1\): the weights are not finite.*no checkpoint"
    with pytest.raises(TrainingDiverged, match=stops):
        train(cfg, tmp_path / "run", table, progress=False)
    assert not (tmp_path / "run" / "checkpoints").exists()
    cfg = tiny_cfg(tmp_path, lr=1e10, warmup_steps=1, save_every_steps=1)
    with pytest.raises(TrainingDiverged, match=r"step 2 \(epoch 1\): the loss is not finite.*latest\.pt"):
        train(cfg, tmp_path / "run2", table, progress=False)
    ckpt = load_checkpoint(tmp_path / "run2" / "checkpoints" / "latest.pt")
    assert ckpt["step"] == 1 and all(torch.isfinite(v).all() for v in ckpt["state_dict"].values())


def test_max_steps_cuts_the_last_epoch_short(tmp_path):
    table = make_table(tmp_path / "images")
    result = train(tiny_cfg(tmp_path, max_steps=6), tmp_path / "run", table, progress=False)
    assert [p.name for p in result.checkpoints] == ["epoch_1.pt", "epoch_2.pt"]  # 4 steps, then 2
    assert load_checkpoint(result.checkpoints[-1])["step"] == 6
    assert "cut at step 6 (max_steps)" in (tmp_path / "run" / "out.log").read_text()


def test_evaluation_summary_is_one_line_for_the_person_watching():
    start = {"epoch": 0, "val_map10_official": 0.25, "val_car_map10_official": 0.5,
             "val_person_map10_official": None, "val_loss": 1.23456, "train_loss": 0.75, "eval_s": 2.4}
    assert evaluation_summary(start, 5) == ("epoch 0/5 (the starting point), val mAP@10 0.2500 (car 0.5000), "
                                            "val loss 1.2346, train loss 0.7500 (2 s to evaluate)")
    later = {"epoch": 3, "val_map10_official": 0.3, "val_car_map10_official": 0.2,
             "val_person_map10_official": 0.4, "train_loss": 0.5, "eval_s": 12.6}
    assert evaluation_summary(later, 5) == ("epoch 3/5, val mAP@10 0.3000 (car 0.2000, person 0.4000), "
                                            "train loss 0.5000 (13 s to evaluate)")
    assert evaluation_summary({"epoch": 1, "val_loss": 2.0, "eval_s": 0.4}, 2) == (
        "epoch 1/2, val loss 2.0000 (0 s to evaluate)")
    no_kinds = {"epoch": 2, "val_map10_official": 0.1, "eval_s": 1.0}
    assert evaluation_summary(no_kinds, 2) == "epoch 2/2, val mAP@10 0.1000 (1 s to evaluate)"

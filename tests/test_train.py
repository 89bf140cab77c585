"""The fine-tuning loop: schedule, decay groups, data order, exact resume, bad images, DDP, run files.

Everything trains kit-micro-vit (32 px) from random init on 16 generated images, batch 4, so a run
is a few CPU steps. One reference run (2 epochs) is shared by the tests that only read its files.
"""
from __future__ import annotations

import json
import math
import re

import cv2
import numpy as np
import pandas as pd
import pytest
import torch

from lib import config
from lib import model as model_mod
from lib.images import TooManyBadImages
from lib.optim import Schedule, create_schedule, param_groups, steps_per_epoch
from lib.runs import RunDirError
from lib.train import _load_config, launch, train
from lib.train_data import Collate, EpochBatchSampler, PairDataset, read_table, train_loader
from lib.train_loop import TrainLoop
from lib.train_state import collect_result, prune_checkpoints, read_metrics

N_IMAGES, BATCH = 16, 4  # 4 steps an epoch


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """2 shared cores: a second intra-op thread only spins against the other workers (100x slower)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def make_table(folder, n=N_IMAGES):
    """n small non-square images with captions naming their colour (so there is something to learn)."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    colours = {"red": (220, 30, 30), "green": (30, 200, 30), "blue": (30, 30, 220), "white": (240, 240, 240)}
    rows = []
    for i in range(n):
        name, rgb = list(colours.items())[i % 4]
        img = np.clip(np.array(rgb) + rng.normal(0, 20, (24 + i % 3, 32, 3)), 0, 255).astype(np.uint8)
        path = folder / f"img{i:02d}.jpg"
        assert cv2.imwrite(str(path), cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
        rows.append({"filepath": str(path), "title": f"a {name} car number {i}", "image": path.name})
    return pd.DataFrame(rows)


def tiny_cfg(tmp_path, **overrides):
    values = dict(model="kit-micro-vit", pretrained="", batch_size=BATCH, workers=0, warmup_steps=2,
                  schedule_epochs=3, stop_epoch=2, log_every=2, device="cpu", lr=1e-3, seed=0,
                  runs_root=str(tmp_path / "runs"))
    return config.load("smoke", **{**values, **overrides})


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """2 epochs uninterrupted, latest.pt also every 2 steps, val table and an evaluator."""
    root = tmp_path_factory.mktemp("train_ref")
    table = make_table(root / "images")
    cfg = tiny_cfg(root, save_every_steps=2, workers=2)  # workers: augmentation must not depend on them
    calls = []

    def evaluator(model):
        calls.append(model.training)
        return {"map10_official": 0.5 + 0.1 * len(calls), "recall@1": 0.25}

    result = train(cfg, root / "run", table, val_table=table.iloc[:8], evaluator=evaluator, progress=False)
    return {"root": root, "table": table, "cfg": cfg, "result": result, "calls": calls}


# ------------------------------------------------------------------------------- schedule

def test_competition_schedule_numbers():
    cfg = config.load("competition")
    spe = steps_per_epoch(126_117, cfg.batch_size, cfg.accum_steps)
    assert spe == 5_044
    schedule = create_schedule(cfg, spe)
    assert (schedule.horizon, schedule.stop_step) == (151_320, 25_220)
    assert schedule.lr(0) == pytest.approx(4e-7 / 10_000)  # open_clip warms up to (step + 1) / warmup
    assert schedule.lr(9_999) == pytest.approx(4e-7)
    assert schedule.lr(10_000) == pytest.approx(4e-7)
    assert schedule.lr(10_000 + (151_320 - 10_000) // 2) == pytest.approx(2e-7)
    assert schedule.lr(25_220) == pytest.approx(3.8866e-7, rel=1e-4)
    assert schedule.lr(151_319) < 1e-12 * 4e-7 * 1e6


def test_accumulation_and_processes_divide_the_epoch():
    assert steps_per_epoch(126_117, 25, accum_steps=2) == 2_522
    assert steps_per_epoch(100, 4, world_size=2) == 12
    assert steps_per_epoch(100, 4, accum_steps=5, world_size=2) == 2


def test_schedule_sets_every_group_and_is_stateless():
    schedule = Schedule(base_lr=1.0, warmup_steps=4, horizon=12, stop_step=8)
    opt = torch.optim.AdamW([{"params": [torch.nn.Parameter(torch.ones(2))]},
                             {"params": [torch.nn.Parameter(torch.ones(2, 2))]}])
    assert schedule.apply(opt, 7) == pytest.approx(0.5 * (1 + math.cos(math.pi * 3 / 8)))
    assert schedule.apply(opt, 1) == pytest.approx(0.5)  # going back gives the warmup value again
    assert [g["lr"] for g in opt.param_groups] == [pytest.approx(0.5)] * 2


def test_an_epoch_without_a_full_step_is_refused(tmp_path):
    with pytest.raises(ValueError, match="batch_size"):
        create_schedule(tiny_cfg(tmp_path), steps_in_epoch=0)


# ----------------------------------------------------------------------- weight decay groups

def test_weight_decay_only_on_matrices_as_open_clip():
    torch.manual_seed(0)
    model, _, _ = model_mod.create_model("kit-micro-vit", "")
    no_decay, decay = param_groups(model, 0.01)
    assert (no_decay["weight_decay"], decay["weight_decay"]) == (0.0, 0.01)
    assert (len(no_decay["params"]), len(decay["params"])) == (40, 22)
    assert {"logit_scale", "visual.class_embedding", "ln_final.weight", "visual.ln_post.bias",
            "visual.transformer.resblocks.0.ln_1.weight",
            "transformer.resblocks.1.attn.in_proj_bias"} <= set(no_decay["names"])
    assert {"token_embedding.weight", "positional_embedding", "visual.conv1.weight", "text_projection",
            "visual.proj", "transformer.resblocks.0.mlp.c_fc.weight"} <= set(decay["names"])
    assert all(p.ndim >= 2 for p in decay["params"])
    model.lock_image_tower()
    assert not any(n.startswith("visual.") for g in param_groups(model, 0.01) for n in g["names"])


# ------------------------------------------------------------------------------ data order

def test_epoch_order_is_seeded_sharded_and_resumable():
    full = list(EpochBatchSampler(18, 4, seed=0, epoch=1))
    assert len(full) == 4 and all(len(b) == 4 for b in full)  # 18 // 4, last partial batch dropped
    assert all(e == 1 for b in full for e, _ in b)
    assert list(EpochBatchSampler(18, 4, seed=0, epoch=1, start=2)) == full[2:]
    assert full == list(EpochBatchSampler(18, 4, seed=0, epoch=1))
    assert full != list(EpochBatchSampler(18, 4, seed=0, epoch=2))
    assert full != list(EpochBatchSampler(18, 4, seed=1, epoch=1))
    shards = [[i for b in EpochBatchSampler(18, 4, 0, 1, rank=r, world_size=2) for _, i in b] for r in (0, 1)]
    assert len(shards[0]) == len(shards[1]) == 8 and not set(shards[0]) & set(shards[1])


@pytest.mark.parametrize("jitter", [0.0, 0.8])
def test_augmentation_does_not_depend_on_workers(tmp_path, jitter):
    """The same (seed, epoch, index) gives the same crop (and colour jitter, whose coin is Python's
    `random`) in the main process and in workers."""
    import random
    from lib.images import train_transform

    table = read_table(make_table(tmp_path / "images", n=8))
    model, tokenizer, pp = model_mod.create_model("kit-micro-vit", "")
    transform = train_transform(pp, color_jitter=(0.3, 0.4, 0.3, 0.0), color_jitter_prob=jitter)
    dataset, collate = PairDataset(table, transform, seed=3), Collate(tokenizer)
    before, py_before = torch.get_rng_state(), random.getstate()
    runs = [[b["images"] for b in train_loader(dataset, collate, EpochBatchSampler(8, 4, 3, 0), workers, 3)]
            for workers in (0, 2)]
    # the main process's generators are left alone
    assert torch.equal(torch.get_rng_state(), before) and random.getstate() == py_before
    assert all(torch.equal(a, b) for a, b in zip(*runs)) and len(runs[0]) == 2
    again = [b["images"] for b in train_loader(dataset, collate, EpochBatchSampler(8, 4, 3, 0), 0, 3)]
    assert torch.equal(again[0], runs[0][0])
    assert not torch.equal(dataset[(1, 0)][0], dataset[(0, 0)][0])  # another epoch, another crop


# ------------------------------------------------------------------------- the run's files

def test_run_writes_log_metrics_and_checkpoints(reference):
    run, result = reference["root"] / "run", reference["result"]
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [(r["epoch"], r["step"]) for r in rows] == [(0, 0), (1, 4), (2, 8)]
    assert rows[0]["train_loss"] is None and rows[1]["train_loss"] > 0
    assert all(math.isfinite(r["val_loss"]) and r["val_recall@1"] == 0.25 for r in rows)
    assert [r["val_map10_official"] for r in rows] == pytest.approx([0.6, 0.7, 0.8])
    assert reference["calls"] == [False, False, False]  # the evaluator sees the model in eval mode
    log = (run / "out.log").read_text()
    assert log.count("| step ") == 4 and "step 2/8 epoch 1 loss" in log and "samples/s" in log
    assert log.count("| eval epoch") == 3 and "logit_scale" in log
    assert (run / "params.yaml").is_file()
    assert _load_config(str(run / "params.yaml"), {"lr": 0.5}).replace(lr=1e-3) == reference["cfg"]
    assert [p.name for p in result.checkpoints] == ["epoch_1.pt", "epoch_2.pt"]
    assert (result.best_epoch, result.best_by) == (2, "val_map10_official")
    for name in ("epoch_1.pt", "epoch_2.pt", "latest.pt"):
        ckpt = model_mod.load_checkpoint(run / "checkpoints" / name)  # verified against its .sha256
        assert {"epoch", "step", "name", "state_dict", "optimizer", "scaler", "rng", "config"} <= set(ckpt)
    last = model_mod.load_checkpoint(run / "checkpoints" / "latest.pt")
    assert (last["epoch"], last["step"], last["name"]) == (2, 8, "kit-micro-vit")
    assert last["state_dict"]["logit_scale"] <= math.log(100)
    model, _, _ = model_mod.model_from_config(reference["cfg"], checkpoint=run / "checkpoints" / "epoch_2.pt")
    assert torch.equal(model.state_dict()["visual.proj"], last["state_dict"]["visual.proj"])


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
    assert model_mod.load_checkpoint(tmp_path / "run" / "checkpoints" / "latest.pt")["step"] == 6
    result = train(cfg.replace(resume="latest"), tmp_path / "run", table, val_table=table.iloc[:8],
                   progress=False)

    want = model_mod.load_checkpoint(reference["root"] / "run" / "checkpoints" / "epoch_2.pt")
    got = model_mod.load_checkpoint(result.checkpoints[-1])
    assert got["step"] == want["step"] == 8
    assert want["state_dict"].keys() == got["state_dict"].keys()
    assert all(torch.equal(want["state_dict"][k], got["state_dict"][k]) for k in want["state_dict"])
    for a, b in zip(want["optimizer"]["state"].values(), got["optimizer"]["state"].values()):
        assert all(torch.equal(a[k], b[k]) for k in a)
    assert "resumed from" in (tmp_path / "run" / "out.log").read_text()
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [0, 1, 2]
    ref_rows = read_metrics(reference["root"] / "run" / "metrics.jsonl")
    for key in ("val_loss", "train_loss"):
        assert rows[2][key] == ref_rows[2][key]


def test_refuses_to_clobber_a_run(reference, tmp_path):
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "checkpoints" / "epoch_1.pt").write_bytes(b"x")
    with pytest.raises(RunDirError, match=f"{re.escape(str(run))}.*resume=latest"):
        train(reference["cfg"], run, reference["table"], progress=False)
    assert not (run / "out.log").exists()


def test_pruning_keeps_the_newest_and_the_best(tmp_path):
    ckpts = tmp_path / "checkpoints"
    ckpts.mkdir()
    for n in (1, 2, 3, 10):
        (ckpts / f"epoch_{n}.pt").write_bytes(b"x")
        (ckpts / f"epoch_{n}.pt.sha256").write_text("0  x\n")
    (ckpts / "latest.pt").write_bytes(b"x")
    losses = {0: 9.0, 1: 2.0, 2: 1.0, 3: 3.0, 10: 4.0}
    rows = [{"epoch": e, "step": e, "val_loss": loss} for e, loss in losses.items()]
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert prune_checkpoints(tmp_path, keep=0) == []
    assert [p.name for p in prune_checkpoints(tmp_path, keep=1)] == ["epoch_1.pt", "epoch_3.pt"]
    assert sorted(p.name for p in ckpts.iterdir()) == [
        "epoch_10.pt", "epoch_10.pt.sha256", "epoch_2.pt", "epoch_2.pt.sha256", "latest.pt"]
    assert collect_result(tmp_path).best_epoch == 2


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
    seen = model_mod.load_checkpoint(result.checkpoints[-1])["train_state"]["bad_images"]
    assert set(seen) == {str(truncated), str(tmp_path / "images" / "gone.jpg")}
    with pytest.raises(TooManyBadImages, match="2 of 16 images") as err:
        train(cfg.replace(max_bad_image_fraction=0.1), tmp_path / "stop", table, progress=False)
    assert str(truncated) in str(err.value) and "gone.jpg" in str(err.value)
    assert "max_bad_image_fraction=0.1" in str(err.value)


# ---------------------------------------------------------------------------------- DDP

def test_two_processes_with_gloo(tmp_path, monkeypatch):
    """torchrun -m lib.train with 2 CPU processes: sharded data, gathered loss, rank 0 writes."""
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    run = tmp_path / "run"
    (run / "data").mkdir(parents=True)
    make_table(tmp_path / "images").to_csv(run / "data" / "train.csv", index=False)  # the default table
    (tmp_path / "images" / "img06.jpg").write_bytes(b"not a jpeg")  # one rank meets it, both agree
    cfg = tiny_cfg(tmp_path, stop_epoch=1, schedule_epochs=2, warmup_steps=1, max_bad_image_fraction=0.1)
    result = launch(cfg, run, processes=2, progress=False)
    assert [p.name for p in result.checkpoints] == ["epoch_1.pt"]
    ckpt = model_mod.load_checkpoint(result.checkpoints[0])
    assert (ckpt["world_size"], ckpt["steps_per_epoch"], ckpt["step"]) == (2, 2, 2)  # 16 / 2 / 4
    assert not any(k.startswith("module.") for k in ckpt["state_dict"])
    losses = [float(line.split(" loss ")[1].split()[0]) for line in (run / "out.log").read_text().splitlines()
              if "| step " in line]
    assert losses and all(math.isfinite(v) for v in losses)
    log = (run / "out.log").read_text()
    assert "2 process(es)" in log and log.count("skipped bad image") == 1 and "img06.jpg" in log
    assert list(ckpt["train_state"]["bad_images"]) == [str(tmp_path / "images" / "img06.jpg")]


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
    start, _, _ = model_mod.create_model("kit-micro-vit", "")
    result = train(cfg, tmp_path / "run", table, progress=False)
    end = model_mod.load_checkpoint(result.checkpoints[0])
    assert end["step"] == 2  # 16 // 4 = 4 batches, 2 per step
    weights = start.state_dict()
    assert all(torch.equal(weights[k], v) for k, v in end["state_dict"].items() if k.startswith("visual."))
    assert not torch.equal(weights["token_embedding.weight"], end["state_dict"]["token_embedding.weight"])
    assert "precision bf16" in (tmp_path / "run" / "out.log").read_text()

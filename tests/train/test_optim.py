"""lib.train.optim: open_clip's decay rule, the warmup + cosine schedule as a pure function of the step."""
from __future__ import annotations

import math

import pytest
import torch

from lib import config
from lib.model.factory import create_model
from lib.train.optim import Schedule, create_schedule, param_groups, steps_per_epoch
from tests.train import tiny_cfg


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


def test_weight_decay_only_on_matrices_as_open_clip():
    torch.manual_seed(0)
    model, _, _ = create_model("kit-micro-vit", "")
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

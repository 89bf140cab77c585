"""lib.train.optim: open_clip's decay rule, the warmup + cosine schedule as a pure function of the step."""
from __future__ import annotations

import math

import pytest
import torch

from lib import config
from lib.model.factory import create_model
from lib.train import optim
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


def test_cosine_lr_at_the_warmup_boundaries_and_the_horizon():
    """base 2, warmup 4, horizon 12: (step + 1) / 4 of the base up to step 3, then a cosine over 8 steps."""
    lr = [optim.cosine_lr(step, 2.0, 4, 12) for step in range(13)]
    assert lr[:5] == pytest.approx([0.5, 1.0, 1.5, 2.0, 2.0])  # step 3 ends the warmup at the base LR
    assert lr[8] == pytest.approx(1.0)  # half way down the cosine: half the base
    assert lr[6] == pytest.approx(1 + math.cos(math.pi / 4))
    assert lr[11] == pytest.approx(1 + math.cos(math.pi * 7 / 8)) and lr[12] == pytest.approx(0.0, abs=1e-15)
    assert optim.cosine_lr(0, 2.0, 0, 12) == 2.0  # no warmup: the base LR from the first step
    assert Schedule(2.0, 4, 12, 8).lr(9) == optim.cosine_lr(9, 2.0, 4, 12)


def test_batches_per_epoch_drops_the_last_partial_batch_per_process():
    assert optim.batches_per_epoch(100, 4) == 25  # one process unless told otherwise
    assert optim.batches_per_epoch(10, 4) == 2  # 2 full batches, the last 2 samples dropped
    assert optim.batches_per_epoch(103, 4, world_size=3) == 8  # 34 samples per process
    assert type(optim.batches_per_epoch(103, 4, world_size=3)) is int  # a count: range() takes it
    assert type(steps_per_epoch(103, 4, accum_steps=3, world_size=3)) is int


def test_an_epoch_of_one_step_is_enough(tmp_path):
    schedule = create_schedule(tiny_cfg(tmp_path), steps_in_epoch=1)
    assert (schedule.horizon, schedule.stop_step) == (3, 2)  # schedule_epochs 3, stop_epoch 2
    with pytest.raises(ValueError) as err:
        create_schedule(tiny_cfg(tmp_path), steps_in_epoch=0)
    assert str(err.value) == ("an epoch has no full optimizer step: fewer samples than batch_size x "
                              "accum_steps x processes; lower batch_size or use a larger table")


@pytest.mark.parametrize("name, ndim, excluded", [
    ("visual.proj", 2, False), ("visual.conv1.weight", 4, False), ("gain", 1, True), ("scale", 0, True),
    ("blocks.0.bn1.weight", 2, True), ("blocks.0.ln_1.weight", 2, True), ("head.bias", 2, True),
    ("logit_scale", 2, True),
])
def test_no_weight_decay_rule_by_name_and_by_shape(name, ndim, excluded):
    """open_clip's rule: gains and biases (< 2-d) and any name with bn, ln, bias or logit_scale,
    whatever its shape, are not decayed."""
    param = torch.nn.Parameter(torch.ones((2,) * ndim))
    assert optim.no_weight_decay(name, param) is excluded


class _Tiny(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.proj = torch.nn.Linear(3, 2)  # weight decays, bias does not
        self.logit_scale = torch.nn.Parameter(torch.tensor(5.0))


def test_create_optimizer_is_adamw_with_the_configs_numbers(tmp_path):
    cfg = tiny_cfg(tmp_path, lr=0.02, weight_decay=0.3, beta1=0.8, beta2=0.95, eps=1e-7)
    opt = optim.create_optimizer(_Tiny(), cfg)
    assert type(opt) is torch.optim.AdamW
    assert [(g["names"], g["weight_decay"]) for g in opt.param_groups] == [
        (["logit_scale", "proj.bias"], 0.0), (["proj.weight"], 0.3)]  # named_parameters order
    assert {(g["lr"], g["betas"], g["eps"]) for g in opt.param_groups} == {(0.02, (0.8, 0.95), 1e-7)}
    frozen = _Tiny().requires_grad_(False)
    with pytest.raises(ValueError) as err:
        optim.create_optimizer(frozen, cfg)
    assert str(err.value) == "the model has no trainable parameters (everything locked?)"


def test_a_loss_scaler_for_fp16_only():
    scaler = optim.create_scaler("fp16", torch.device("cpu"))
    assert isinstance(scaler, torch.amp.GradScaler) and scaler.is_enabled() and scaler._device == "cpu"
    assert optim.create_scaler("bf16", torch.device("cpu")) is None
    assert optim.create_scaler("fp32", torch.device("cpu")) is None


@pytest.mark.parametrize("before, after", [(5.0, math.log(100)), (-1.0, 0.0), (2.0, 2.0), (0.0, 0.0)])
def test_clamp_logit_scale_keeps_the_temperature_within_0_and_log_100(before, after):
    model = _Tiny()
    with torch.no_grad():
        model.logit_scale.fill_(before)
    optim.clamp_logit_scale(model)
    assert model.logit_scale.item() == pytest.approx(after)
    assert model.logit_scale.requires_grad  # clamped in place, still the trained parameter

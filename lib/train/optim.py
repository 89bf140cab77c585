"""AdamW parameter groups, the LR schedule and the loss scaler, as open_clip_train's (so that the same
flags mean the same): its weight-decay rule, warmup + cosine as a function of the step, fp16's GradScaler."""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from lib.config import Config

LOGIT_SCALE_MAX = math.log(100)  # CLIP's clamp: logits are at most 100 x cosine similarity


def no_weight_decay(name: str, param: torch.nn.Parameter) -> bool:
    """open_clip_train/main.py's rule, verbatim: gains, biases, norms and the temperature decay not."""
    return param.ndim < 2 or "bn" in name or "ln" in name or "bias" in name or "logit_scale" in name


def param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    """Two AdamW groups (no decay / decay), trainable parameters only; `names` lists each group's."""
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    excluded = [(n, p) for n, p in named if no_weight_decay(n, p)]
    included = [(n, p) for n, p in named if not no_weight_decay(n, p)]
    return [
        {"params": [p for _, p in excluded], "names": [n for n, _ in excluded], "weight_decay": 0.0},
        {"params": [p for _, p in included], "names": [n for n, _ in included], "weight_decay": weight_decay},
    ]


def create_optimizer(model: torch.nn.Module, cfg: Config) -> torch.optim.AdamW:
    """AdamW(betas=(beta1, beta2), eps, weight decay on >=2-D weights only), as the reference."""
    groups = param_groups(model, cfg.weight_decay)
    if not any(g["params"] for g in groups):
        raise ValueError("the model has no trainable parameters (everything locked?)")
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), eps=cfg.eps)


def batches_per_epoch(num_samples: int, batch_size: int, world_size: int = 1) -> int:
    """Full per-process batches of one epoch (the last partial batch dropped, as open_clip)."""
    return (num_samples // world_size) // batch_size


def steps_per_epoch(num_samples: int, batch_size: int, accum_steps: int = 1, world_size: int = 1) -> int:
    """Optimizer steps an epoch: batches // accum_steps (126,117 // 25 = 5,044 in the reference)."""
    return batches_per_epoch(num_samples, batch_size, world_size) // accum_steps


def cosine_lr(step: int, base_lr: float, warmup_steps: int, horizon: int) -> float:
    """The LR of (0-based) step `step`: open_clip_train.scheduler.cosine_lr's arithmetic (warmup to
    base_lr, then a cosine to 0 at `horizon`), without an optimizer to write into."""
    if step < warmup_steps:
        return base_lr * (step + 1) / warmup_steps
    progress = (step - warmup_steps) / (horizon - warmup_steps)
    return 0.5 * (1 + math.cos(math.pi * progress)) * base_lr


@dataclass(frozen=True)
class Schedule:
    """Linear warmup then cosine to zero at `horizon` steps; training may stop before the horizon."""

    base_lr: float
    warmup_steps: int
    horizon: int  # schedule_epochs x steps_per_epoch
    stop_step: int  # stop_epoch x steps_per_epoch

    def lr(self, step: int) -> float:
        return cosine_lr(step, self.base_lr, self.warmup_steps, self.horizon)

    def apply(self, optimizer: torch.optim.Optimizer, step: int) -> float:
        """Set every group's LR for `step`; stateless, so a resumed run gets the same LR."""
        lr = self.lr(step)
        for group in optimizer.param_groups:
            group["lr"] = lr
        return lr


def create_schedule(cfg: Config, steps_in_epoch: int) -> Schedule:
    """The schedule of a run: horizon from schedule_epochs, stop from stop_epoch (both x steps)."""
    if steps_in_epoch < 1:
        raise ValueError("an epoch has no full optimizer step: fewer samples than batch_size x "
                         "accum_steps x processes; lower batch_size or use a larger table")
    horizon = cfg.schedule_epochs * steps_in_epoch  # >= stop_step (Config checks): warmup may outlast it
    return Schedule(cfg.lr, cfg.warmup_steps, horizon, cfg.stop_epoch * steps_in_epoch)


def create_scaler(precision: str, device: torch.device) -> torch.amp.GradScaler | None:
    """A loss scaler for fp16 only: bf16 has fp32's range and needs none."""
    return torch.amp.GradScaler(device.type) if precision == "fp16" else None


def clamp_logit_scale(model: torch.nn.Module) -> None:
    """After each step, as open_clip: the temperature may not exceed 100."""
    with torch.no_grad():
        model.logit_scale.clamp_(0, LOGIT_SCALE_MAX)

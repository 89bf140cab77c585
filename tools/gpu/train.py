"""GPU proof, part 2: fine-tuning steps with the kit's training loop, one setting after another.

Each setting (batch size, gradient checkpointing, text trimming) runs lib.train.loop.TrainLoop.fit
on generated images with real captions, with the profile's optimiser (AdamW and the reference's
hyper-parameters) and precision (bf16 autocast on a GPU). A global optimizer-step hook stamps the
end of every step and stops the run after `warmup + steps` of them, or when the part's time is up.
samples/s = batch / the median step after the warm-up (data loading included);
peak memory = torch.cuda.max_memory_allocated over the setting (weights, gradients, AdamW moments,
activations, autocast's copies).

Settings: the reference's (its batch, 25, without checkpointing), the same with checkpointing,
the largest of the `ladder` (256, 128, 64) that fits with checkpointing (an out-of-memory error is
recorded and the next size tried), and the reference's with the text tower untrimmed
(`trim_text_padding: false`), whose step time against the first gives the trimming's saving.

The model is built once for all settings (ViT-bigG-14 takes a while) and nothing is saved (its
checkpoint with the optimizer state is 30 GB): `MeasuredLoop` overrides the loop's two methods for
that, `_create_model` and `_save`; the rest is the kit's loop as it trains.
"""
from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch.optim.optimizer import register_optimizer_step_post_hook

from lib.config import Config
from lib.errors import KitError
from lib.model import text_trim
from lib.model.device import resolve_device, resolve_precision
from lib.train.loop import TrainLoop
from tools.gpu.measure import Budget, failure, free, is_out_of_memory, peak_gb, reset_peak, sync
from tools.workload import write_table

LADDER = (256, 128, 64)
# docs/gpu.md's plan for ViT-bigG-14: fp32 weights, gradients and AdamW moments
# (40.6 GB) + autocast's bf16 copies (about 5 GB), then activations per sample without / with
# checkpointing; speed on an H100 at 40 % of 990 TFLOP/s, 3.2 TFLOPs a sample (4.3 with checkpointing).
PLAN_STATES_GB = 45.6
PLAN_GB_PER_SAMPLE = {False: 1.1, True: 0.05}
PLAN_SAMPLES_PER_S = {False: 125.0, True: 93.0}
PLAN_TRIM_SAVING = 0.04  # the text tower is 9 % of a bigG step, trimming saves about 40 % of it


@dataclass(frozen=True)
class Setting:
    name: str
    batch_size: int
    grad_checkpointing: bool
    trim_text_padding: bool = True


def plan_memory_gb(batch_size: int, grad_checkpointing: bool) -> float:
    return round(PLAN_STATES_GB + batch_size * PLAN_GB_PER_SAMPLE[grad_checkpointing], 1)


def template() -> dict[str, Any]:
    return {"status": None, "error": None, "model": None, "device": None, "precision": None, "seconds": None,
            "optimizer": dict.fromkeys(("name", "lr", "betas", "eps", "weight_decay")),
            "warmup_steps": None, "timed_steps": None, "settings": [],
            "largest_checkpointed_batch": None,
            "trim_text_saving": {"step_s_trimmed": None, "step_s_untrimmed": None, "saving": None,
                                 "plan_saving": None}}


def setting_template(setting: Setting) -> dict[str, Any]:
    return {"name": setting.name, "batch_size": setting.batch_size,
            "grad_checkpointing": setting.grad_checkpointing, "trim_text_padding": setting.trim_text_padding,
            "status": None, "error": None, "steps": 0, "first_step_s": None, "median_step_s": None,
            "samples_per_s": None, "peak_memory_gb": None, "plan_memory_gb": None, "plan_samples_per_s": None,
            "seconds": None}


class Enough(KitError):
    """Raised by the step clock to end a setting's run (caught by run_setting; a KitError as every
    exception the kit defines, so that it would print in one line should it ever escape)."""


class StepClock:
    """An optimizer-step hook: the end time of each step; raises Enough after `steps` of them or at
    `deadline` (perf_counter seconds)."""

    def __init__(self, steps: int, deadline: float, device: torch.device):
        self.steps, self.deadline, self.device = steps, deadline, device
        self.start, self.stamps = time.perf_counter(), []

    def __call__(self, *_: Any) -> None:
        sync(self.device)
        self.stamps.append(time.perf_counter())
        if len(self.stamps) >= self.steps or self.stamps[-1] >= self.deadline:
            raise Enough


class MeasuredLoop(TrainLoop):
    """The kit's loop on a model built once, writing no checkpoint (see the module docstring)."""

    def __init__(self, parts: tuple, *args: Any):
        self.parts = parts
        super().__init__(*args)

    def _create_model(self, init_checkpoint):
        model = self.parts[0]
        model.set_grad_checkpointing(self.cfg.grad_checkpointing)  # the loop only ever turns it on
        if self.cfg.trim_text_padding and not text_trim.installed(model):
            text_trim.install(model)
        elif not self.cfg.trim_text_padding:
            model.__dict__.pop("encode_text", None)  # back to open_clip's own encode_text
        return self.parts

    def _save(self, names: list[str]) -> None:
        pass


def run_setting(parts: tuple, base: Config, setting: Setting, images: list[Path], captions: list[str],
                work: Path, *, steps: int, warmup: int, deadline: float, plan: bool) -> dict[str, Any]:
    """One setting's record; its status: ok, cut short (the time ran out), skipped (no time left),
    out of memory, or failed (with the error)."""
    record = setting_template(setting)
    if plan:
        record.update(plan_memory_gb=plan_memory_gb(setting.batch_size, setting.grad_checkpointing),
                      plan_samples_per_s=PLAN_SAMPLES_PER_S[setting.grad_checkpointing])
    if time.perf_counter() >= deadline:
        record.update(status="skipped", error="the part's time was up")
        return record
    cfg = base.replace(batch_size=setting.batch_size, grad_checkpointing=setting.grad_checkpointing,
                       trim_text_padding=setting.trim_text_padding)
    name = f"b{setting.batch_size}-{'ckpt' if setting.grad_checkpointing else 'full'}" \
           f"-{'trim' if setting.trim_text_padding else 'notrim'}"
    table = write_table(work / f"{name}.csv", images, captions, setting.batch_size * (warmup + steps + 2))
    device = resolve_device(cfg.device)
    free(device, parts[0])
    reset_peak(device)
    clock = StepClock(warmup + steps, deadline, device)
    handle = register_optimizer_step_post_hook(clock)
    loop = None
    try:
        loop = MeasuredLoop(parts, cfg, work / name, table, None, None, None, False)
        loop.fit()
        record["status"] = "ok"
    except Enough:
        record["status"] = "ok"
    except Exception as error:  # noqa: BLE001 - recorded, and the run goes on
        record.update(status="out of memory" if is_out_of_memory(error) else "failed", error=failure(error))
    finally:
        handle.remove()
        if loop is not None:
            loop.log.close()
        record["peak_memory_gb"] = peak_gb(device)
        del loop
        free(device, parts[0])
    stamps = clock.stamps
    record.update(steps=len(stamps), seconds=round(time.perf_counter() - clock.start, 1))
    if stamps:
        record["first_step_s"] = round(stamps[0] - clock.start, 3)
    timed = [b - a for a, b in zip(stamps[warmup - 1:], stamps[warmup:])] if warmup >= 1 else []
    if timed:
        median = statistics.median(timed)
        record.update(median_step_s=round(median, 4), samples_per_s=round(setting.batch_size / median, 2))
    if record["status"] == "ok" and len(stamps) < warmup + steps:
        record["status"] = "cut short"
    return record


def measure_train(parts: tuple, base: Config, images: list[Path], captions: list[str], work: Path, *,
                  steps: int, warmup: int, ladder: tuple[int, ...] = LADDER, budget_s: float,
                  plan: bool = False, out: dict | None = None,
                  progress: Callable[[], None] = lambda: None) -> dict[str, Any]:
    """Fill (and return) the part's record `out`: every setting in turn (module docstring), calling
    `progress` after each (the proof rewrites its JSON then)."""
    out = out if out is not None else template()
    budget, device = Budget(budget_s), resolve_device(base.device)
    deadline = budget.start + budget.seconds
    out.update(status="running", model=base.model, device=str(device),
               precision=resolve_precision(base.precision, device), warmup_steps=warmup, timed_steps=steps,
               optimizer={"name": "AdamW", "lr": base.lr, "betas": [base.beta1, base.beta2], "eps": base.eps,
                          "weight_decay": base.weight_decay})
    work.mkdir(parents=True, exist_ok=True)
    b = base.batch_size
    settings = out["settings"]

    def run(setting: Setting) -> dict[str, Any]:
        record = run_setting(parts, base, setting, images, captions, work, steps=steps, warmup=warmup,
                             deadline=deadline, plan=plan)
        settings.append(record)
        progress()
        return record

    reference = run(Setting(f"batch {b} (the reference's)", b, False))
    run(Setting(f"batch {b}, checkpointing", b, True))
    for size in ladder:  # largest first: the first that fits is the answer
        record = run(Setting(f"batch {size}, checkpointing", size, True))
        if record["status"] in ("ok", "cut short"):
            out["largest_checkpointed_batch"] = size
        if record["status"] != "out of memory":
            break
    untrimmed = run(Setting(f"batch {b}, text untrimmed", b, False, trim_text_padding=False))
    trimmed, full = reference["median_step_s"], untrimmed["median_step_s"]
    out["trim_text_saving"].update(step_s_trimmed=trimmed, step_s_untrimmed=full,
                                   saving=round(1 - trimmed / full, 4) if trimmed and full else None,
                                   plan_saving=PLAN_TRIM_SAVING if plan else None)
    out.update(status=part_status([s["status"] for s in settings]), seconds=round(budget.elapsed(), 1))
    return out


def part_status(statuses: list[str]) -> str:
    """failed if a setting failed; cut short if one ran out of time; else ok (running out of memory
    at a batch size is a result)."""
    if "failed" in statuses:
        return "failed"
    return "cut short" if {"cut short", "skipped"} & set(statuses) else "ok"

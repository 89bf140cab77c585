"""One process's training loop, run by lib.train.launch. A resume is exact: the LR is a function of the
step (lib.train.optim), the data order and jitter of (seed, epoch, index) (lib.train.data), and the
checkpoint holds the rest (lib.train.state)."""
from __future__ import annotations

import contextlib
import time
from pathlib import Path
from typing import Any

import open_clip
import torch
import torch.distributed as dist
from open_clip_train.distributed import world_info_from_env

from lib.config import Config
from lib.data.transforms import eval_two_stage, train_two_stage
from lib.errors import KitError
from lib.model.checkpoints import load_checkpoint, save_checkpoint
from lib.model.device import allow_tf32, autocast, resolve_device, resolve_precision
from lib.model.factory import model_from_config
from lib.model.weights import LOCAL_DIR
from lib.progress import bar as progress_bar
from lib.progress import write as progress_write
from lib.train.data import (
    BadImages,
    Collate,
    EpochBatchSampler,
    PairDataset,
    eval_loader,
    read_table,
    train_loader,
)
from lib.train.log import RunLog
from lib.train.optim import (
    clamp_logit_scale,
    create_optimizer,
    create_scaler,
    create_schedule,
    steps_per_epoch,
)
from lib.train.state import (
    LATEST,
    TrainResult,
    collect_result,
    link_checkpoint,
    prune_checkpoints,
    resume_checkpoint,
    rng_state,
    set_rng_state,
)


class TrainLoop:
    """One training run's state: model, optimizer, data and position (real state, hence a class)."""

    def __init__(self, cfg: Config, run_dir: Path, train_table, val_table, init_checkpoint, evaluator,
                 progress: bool, resume: str = ""):
        self.cfg, self.run_dir, self.evaluator = cfg, run_dir, evaluator
        self.rank, self.world = (dist.get_rank(), dist.get_world_size()) if dist.is_initialized() else (0, 1)
        self.main = self.rank == 0
        self.device = resolve_device(cfg.device, world_info_from_env()[0] if self.world > 1 else 0)
        self.precision = resolve_precision(cfg.precision, self.device)
        self.amp = autocast(self.precision, self.device)
        allow_tf32(self.device)
        self.resume = resume_checkpoint(resume, run_dir)
        self.log = RunLog(run_dir, enabled=self.main, echo=progress_write)
        self.progress = progress and self.main

        torch.manual_seed(cfg.seed)  # a randomly initialised model (pretrained="") is reproducible
        self.model, tokenizer, preprocess = self._create_model(init_checkpoint)
        if cfg.lock_image:
            self.model.lock_image_tower(unlocked_groups=0, freeze_bn_stats=False)
        if cfg.grad_checkpointing:
            self.model.set_grad_checkpointing(True)
        self.optimizer = create_optimizer(self.model, cfg)
        self.scaler = create_scaler(self.precision, self.device)

        table = read_table(train_table)
        self.num_samples = len(table)
        self.steps_per_epoch = steps_per_epoch(len(table), cfg.batch_size, cfg.accum_steps, self.world)
        self.schedule = create_schedule(cfg, self.steps_per_epoch)
        self.stop_step = min(self.schedule.stop_step, cfg.max_steps or self.schedule.stop_step)
        # workers send uint8, a batch is normalised once
        train_images = train_two_stage(preprocess, photometric_jitter=cfg.photometric_jitter,
                                       photometric_jitter_prob=cfg.photometric_jitter_prob)
        self.dataset = PairDataset(table, train_images.to_uint8, seed=cfg.seed)
        self.collate = Collate(tokenizer, train_images.normalise)
        self.val_loader = None
        if val_table is not None and self.main:
            val_images = eval_two_stage(preprocess)
            val = PairDataset(read_table(val_table), val_images.to_uint8, seed=cfg.seed)
            self.val_loader = eval_loader(val, Collate(tokenizer, val_images.normalise), cfg.batch_size,
                                          cfg.workers)
        self.bad = BadImages(len(table), cfg.max_bad_image_fraction)
        self.val_bad: set[str] = set()
        self.step, self.loss_sum, self.loss_count, self.elapsed = 0, 0.0, 0, 0.0
        if self.resume is not None:
            self._restore(self.resume)
        else:
            self.log.truncate_after(-1)  # evaluations of an attempt killed before its first checkpoint

        self.forward_model = self.model
        if self.world > 1:
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.forward_model = torch.nn.parallel.DistributedDataParallel(
                self.model, device_ids=ids, broadcast_buffers=False)
        self.loss_fn = open_clip.ClipLoss(local_loss=self.world > 1, gather_with_grad=self.world > 1,
                                          cache_labels=True, rank=self.rank, world_size=self.world)

    def _create_model(self, init_checkpoint):
        cfg = self.cfg
        if self.resume is not None and not cfg.pretrained.startswith(LOCAL_DIR):
            cfg = cfg.replace(pretrained="", pretrained_sha256="")  # weights come from the checkpoint
            init_checkpoint = None
        return model_from_config(cfg, checkpoint=init_checkpoint, device=self.device)

    def _restore(self, path: Path) -> None:
        ckpt = load_checkpoint(path, map_location="cpu")
        if ckpt.get("name") != self.cfg.model:
            raise KitError(f"{path} holds a {ckpt.get('name')} model, not model={self.cfg.model}")
        if ckpt.get("steps_per_epoch") != self.steps_per_epoch:
            raise KitError(
                f"{path} was saved with {ckpt.get('steps_per_epoch')} steps an epoch, this run has "
                f"{self.steps_per_epoch} (table, batch_size, accum_steps or number of processes changed): "
                "resume with the same ones, or start a new run from it with init_checkpoint")
        self.model.load_state_dict(ckpt["state_dict"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        if self.scaler is not None and ckpt.get("scaler"):
            self.scaler.load_state_dict(ckpt["scaler"])
        set_rng_state(ckpt["rng"])
        state = ckpt["train_state"]
        self.step, self.loss_sum, self.loss_count = ckpt["step"], state["loss_sum"], state["loss_count"]
        self.elapsed = state["elapsed_s"]
        self.bad.seen.update(state["bad_images"])
        self.log.truncate_after(self.step)
        skipped = "" if path.name == LATEST or path.parent.name != "checkpoints" else (
            f" ({LATEST} was cut short by an interruption and does not verify)")
        self.log.line(f"resumed from {path} at step {self.step} (epoch {self.step // self.steps_per_epoch})"
                      f"{skipped}", echo=True)

    def fit(self) -> TrainResult:
        cfg, spe = self.cfg, self.steps_per_epoch
        self.started = time.time()
        cut = ""
        if self.stop_step < self.schedule.stop_step:
            cut = f", cut at step {self.stop_step} (max_steps)"
        self.log.line(f"training {cfg.model} on {self.num_samples} pairs: {spe} steps an epoch x "
                      f"{cfg.stop_epoch} epochs (cosine horizon {self.schedule.horizon} steps){cut}, "
                      f"{self.world} process(es), {self.device}, precision {self.precision}",
                      echo=self.progress)
        if self.step == 0:
            self._evaluate(epoch=0)
        bar = progress_bar(total=self.stop_step, initial=self.step, desc="training", unit="step",
                           show=self.progress, report=self.main, dynamic_ncols=True)
        window_t, window_n = time.time(), 0
        for epoch in range(self.step // spe, -(-self.stop_step // spe)):
            sampler = EpochBatchSampler(self.num_samples, cfg.batch_size, cfg.seed, epoch, rank=self.rank,
                                        world_size=self.world, num_batches=spe * cfg.accum_steps,
                                        start=(self.step - epoch * spe) * cfg.accum_steps)
            loader = train_loader(self.dataset, self.collate, sampler, cfg.workers, cfg.seed,
                                  pin_memory=self.device.type == "cuda")
            self.model.train()
            pending = []
            for batch in loader:
                if self.step >= self.stop_step:  # max_steps: the last epoch is cut short
                    break
                pending.append(self._sync_batch(batch))
                if len(pending) < cfg.accum_steps:
                    continue
                lr = self.schedule.apply(self.optimizer, self.step)
                loss = self._optimizer_step(pending)
                window_n += sum(len(b[0]) for b in pending) * self.world
                pending = []
                self.step += 1
                if loss is not None:
                    self.loss_sum, self.loss_count = self.loss_sum + loss.item(), self.loss_count + 1
                bar.update()
                if self.step % cfg.log_every == 0 or self.step % spe == 0:
                    rate = window_n / max(time.time() - window_t, 1e-9)
                    scale = self.model.logit_scale.exp().item()
                    loss_v = float("nan") if loss is None else loss.item()
                    bar.set_postfix(loss=f"{loss_v:.4f}", samples_s=f"{rate:.1f}")
                    self.log.line(f"step {self.step}/{self.stop_step} epoch {epoch + 1} "
                                  f"loss {loss_v:.4f} lr {lr:.4e} logit_scale {scale:.3f} "
                                  f"samples/s {rate:.1f}")
                    self.log.scalars({"loss": loss_v, "lr": lr, "logit_scale": scale, "samples_per_s": rate},
                                     self.step, "train")
                    window_t, window_n = time.time(), 0
                if cfg.save_every_steps and self.step % cfg.save_every_steps == 0 and self.step % spe:
                    self._save([LATEST])
            done = epoch + 1
            if done % cfg.eval_every == 0 or self.step >= self.stop_step:
                self._evaluate(epoch=done)
                self.loss_sum, self.loss_count = 0.0, 0  # train loss: the mean since the last evaluation
            self._save([f"epoch_{done}.pt", LATEST])
            if self.main:
                for path in prune_checkpoints(self.run_dir, cfg.keep_checkpoints, cfg.submit_epoch):
                    self.log.line(f"deleted {path.name} (keep_checkpoints={cfg.keep_checkpoints})")
        bar.close()
        self.log.close()
        if self.world > 1:
            dist.barrier()
        return collect_result(self.run_dir, cfg.submit_epoch)

    def _sync_batch(self, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
        """Report bad images (all processes agree on them); cut every process's batch to the smallest,
        so that the gathered features line up."""
        images, texts, bad = batch["images"], batch["texts"], batch["bad"]
        if self.world > 1:
            counts = torch.tensor([-len(images), len(bad)], device=self.device)
            dist.all_reduce(counts, op=dist.ReduceOp.MAX)
            keep, any_bad = -int(counts[0]), int(counts[1])
            if any_bad:
                gathered: list = [None] * self.world
                dist.all_gather_object(gathered, bad)
                bad = [b for part in gathered for b in part]
            images, texts = images[:keep], texts[:keep]
        for b in self.bad.add(bad):
            self.log.line(f"skipped bad image {b.path}: {b.reason} ({len(self.bad.seen)} so far)", echo=True)
        self.bad.check()
        return images.to(self.device, non_blocking=True), texts.to(self.device, non_blocking=True)

    def _optimizer_step(self, batches: list[tuple[torch.Tensor, torch.Tensor]]) -> torch.Tensor | None:
        """One update from accum_steps batches, as open_clip: the other batches' features, cached
        without gradients, serve as negatives (the loss sees the whole accumulated batch)."""
        self.optimizer.zero_grad(set_to_none=True)
        batches = [b for b in batches if len(b[0])]
        if not batches:  # every image of the step was bad: nothing to learn from, keep the count
            return None
        fwd, cached = self.forward_model, []
        if len(batches) > 1:
            with torch.no_grad(), self.amp():
                cached = [_features(fwd(images, texts))[:2] for images, texts in batches]
        losses = []
        for j, (images, texts) in enumerate(batches):
            last = j == len(batches) - 1
            sync = fwd.no_sync() if self.world > 1 and not last else contextlib.nullcontext()
            with sync:
                with self.amp():
                    img, txt, scale = _features(fwd(images, texts))
                    if cached and not last:  # the temperature's gradient once, not once a pass
                        scale = scale.detach()  # (open_clip adds it accum_steps times)
                    if cached:
                        img = torch.cat([c[0] for c in cached[:j]] + [img] + [c[0] for c in cached[j + 1:]])
                        txt = torch.cat([c[1] for c in cached[:j]] + [txt] + [c[1] for c in cached[j + 1:]])
                    loss = self.loss_fn(img, txt, scale)
                (self.scaler.scale(loss) if self.scaler is not None else loss).backward()
            losses.append(loss.detach())
        mean_loss = torch.stack(losses).float().mean()
        if self.scaler is not None:  # fp16: the scaler skips a step whose gradients overflowed
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self._stop_unless_finite("loss", mean_loss)
            self.optimizer.step()
        clamp_logit_scale(self.model)
        weights = torch.stack([p.detach().float().norm() for p in self.model.parameters() if p.requires_grad])
        self._stop_unless_finite("weights", weights)
        return mean_loss

    def _stop_unless_finite(self, what: str, values: torch.Tensor) -> None:
        """Stop at the first non-finite loss or weight, before anything is saved from that state."""
        bad = (~torch.isfinite(values)).any().float()
        if self.world > 1:
            dist.all_reduce(bad, op=dist.ReduceOp.MAX)
        if not bad.item():
            return
        latest = self.run_dir / "checkpoints" / LATEST
        kept = f"the last checkpoint is {latest}" if latest.exists() else "no checkpoint was written yet"
        verb = "is" if what == "loss" else "are"
        raise TrainingDiverged(
            f"training diverged at step {self.step + 1} (epoch {self.step // self.steps_per_epoch + 1}): "
            f"the {what} {verb} not finite. Nothing was saved from this state; {kept}. "
            f"Lower lr (now {self.cfg.lr:g}) or warm up longer (warmup_steps={self.cfg.warmup_steps}), "
            "then start a new run")

    def _evaluate(self, epoch: int) -> None:
        if self.main and (self.evaluator is not None or self.val_loader is not None):
            t0 = time.time()
            self.model.eval()
            metrics = self.evaluator(self.model) if self.evaluator is not None else {}
            row: dict[str, Any] = {"epoch": epoch, "step": self.step}
            row.update({f"val_{k}": v for k, v in metrics.items()})
            if self.val_loader is not None:
                row["val_loss"] = self._val_loss()
            row["train_loss"] = self.loss_sum / self.loss_count if self.loss_count else None
            row["lr"] = self.optimizer.param_groups[0]["lr"] if self.step else 0.0
            row["time_s"] = round(self.elapsed + time.time() - self.started, 2)
            row["eval_s"] = round(time.time() - t0, 2)
            self.model.train()
            self.log.metrics(row)
            shown = ", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in row.items())
            self.log.line(f"eval {shown}")
            if self.progress:
                self.log.echo(evaluation_summary(row, self.cfg.stop_epoch))
        if self.world > 1:
            dist.barrier()

    @torch.no_grad()
    def _val_loss(self) -> float | None:
        total, count = 0.0, 0
        for batch in self.val_loader:
            for b in batch["bad"]:
                if b.path not in self.val_bad:
                    self.val_bad.add(b.path)
                    self.log.line(f"skipped bad val image {b.path}: {b.reason}", echo=True)
            images, texts = batch["images"].to(self.device), batch["texts"].to(self.device)
            if len(images) < 2:
                continue
            with self.amp():
                img, txt, scale = _features(self.model(images, texts))
                loss = open_clip.ClipLoss()(img, txt, scale)
            total, count = total + loss.item() * len(images), count + len(images)
        return total / count if count else None

    def _save(self, names: list[str]) -> None:
        if not self.main:
            return
        ckpt_dir = self.run_dir / "checkpoints"
        state = {
            "epoch": self.step // self.steps_per_epoch, "step": self.step, "name": self.cfg.model,
            "state_dict": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict() if self.scaler is not None else None,
            "rng": rng_state(), "config": self.cfg.to_dict(),
            "steps_per_epoch": self.steps_per_epoch, "world_size": self.world,
            "train_state": {"loss_sum": self.loss_sum, "loss_count": self.loss_count,
                            "elapsed_s": self.elapsed + time.time() - self.started,
                            "bad_images": dict(self.bad.seen)},
        }
        first = ckpt_dir / names[0]
        digest = save_checkpoint(first, state)
        for name in names[1:]:
            link_checkpoint(first, ckpt_dir / name, digest)
        self.log.line(f"saved {', '.join(names)} at step {self.step}")


class TrainingDiverged(KitError, FloatingPointError):
    """A non-finite loss or weight: training stops there, saving nothing from that state."""


def evaluation_summary(row: dict[str, Any], epochs: int) -> str:
    """One short line of an evaluation for the person watching (out.log and metrics.jsonl keep all)."""
    parts = [f"epoch {row['epoch']}/{epochs}" + (" (the starting point)" if row["epoch"] == 0 else "")]
    if row.get("val_map10_official") is not None:
        kinds = [f"{kind} {row[f'val_{kind}_map10_official']:.4f}" for kind in ("car", "person")
                 if row.get(f"val_{kind}_map10_official") is not None]
        by_kind = f" ({', '.join(kinds)})" if kinds else ""
        parts.append(f"val mAP@10 {row['val_map10_official']:.4f}{by_kind}")
    for key, label in (("val_loss", "val loss"), ("train_loss", "train loss")):
        if row.get(key) is not None:
            parts.append(f"{label} {row[key]:.4f}")
    return ", ".join(parts) + f" ({row['eval_s']:.0f} s to evaluate)"


def _features(out) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(image features, text features, logit scale) from open_clip's tuple or dict output."""
    if isinstance(out, dict):
        return out["image_features"], out["text_features"], out["logit_scale"]
    return out[0], out[1], out[2]

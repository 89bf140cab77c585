"""lib.train.loop: an exact mid-epoch resume, bad images skipped and limited, accumulation, bf16.

One reference run (2 epochs, tests/train/conftest.py) is shared by the tests that only read its files.
"""
from __future__ import annotations

import contextlib
import json
import math
import re
import shutil
import sys
from pathlib import Path

import open_clip
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch.amp import GradScaler

from lib.data.images import BadImage, TooManyBadImages, read_image
from lib.data.transforms import eval_transform, train_two_stage
from lib.errors import KitError
from lib.files import recorded_sha256, sha256_file
from lib.model.checkpoints import load_checkpoint, save_checkpoint
from lib.model.factory import create_model, model_from_config
from lib.progress import bar as progress_bar
from lib.progress import write as progress_write
from lib.train.data import EpochBatchSampler
from lib.train.launch import train
from lib.train.log import read_metrics
from lib.train.loop import TrainingDiverged, TrainLoop, _features, evaluation_summary
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
    cut = load_checkpoint(tmp_path / "run" / "checkpoints" / "latest.pt")
    assert (cut["step"], cut["epoch"]) == (6, 1)  # 4 steps an epoch: 1 epoch done, half of the second
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

class _TwoProcesses:
    """torch.distributed as rank 0 of 2 sees it, the other process's part given: all_reduce joins its
    tensors in (MAX or SUM), all_gather_object puts its object second. (A real two-process run:
    test_launch's slow gloo test.)"""

    ReduceOp = torch.distributed.ReduceOp

    def __init__(self, *theirs):
        self.theirs = list(theirs)

    def all_reduce(self, tensor, op=torch.distributed.ReduceOp.SUM):
        other = self.theirs.pop(0)
        assert other.shape == tensor.shape
        joined = {self.ReduceOp.MAX: torch.maximum, self.ReduceOp.SUM: torch.add}[op](tensor, other)
        tensor.copy_(joined)

    def all_gather_object(self, out, obj):
        assert len(out) == 2
        out[0], out[1] = obj, self.theirs.pop(0)


def _two_process_loop(tmp_path, monkeypatch, *theirs) -> TrainLoop:
    cfg = tiny_cfg(tmp_path, max_bad_image_fraction=0.125)
    loop = TrainLoop(cfg, tmp_path / "run", make_table(tmp_path / "images"), None, None, None, False)
    loop.world = 2
    monkeypatch.setattr("lib.train.loop.dist", _TwoProcesses(*theirs))
    return loop


def test_two_processes_cut_their_batches_to_the_smaller_and_both_report_each_bad_image(tmp_path, monkeypatch,
                                                                                      capsys):
    """This process read 4 images, the other 2 (and one it could not read): both go on with 2 pairs, so
    that the gathered features line up, and both log (and show) the other's bad image."""
    gone = BadImage("/data/gone.jpg", "missing")
    loop = _two_process_loop(tmp_path, monkeypatch, torch.tensor([-2, 1]), [gone], torch.tensor([-4, 0]))
    batch = loop.collate([loop.dataset[(0, i)] for i in range(4)])
    images, texts = loop._sync_batch(batch)
    assert torch.equal(images, batch["images"][:2]) and torch.equal(texts, batch["texts"][:2])
    assert _log(tmp_path / "run")[-1] == "skipped bad image /data/gone.jpg: missing (1 so far)"
    assert capsys.readouterr().out == "skipped bad image /data/gone.jpg: missing (1 so far)\n"
    assert loop.bad.seen == {"/data/gone.jpg": "missing"}
    images, texts = loop._sync_batch(batch)  # the same 4 there, none bad: nothing gathered, nothing cut
    assert torch.equal(images, batch["images"]) and torch.equal(texts, batch["texts"])


def test_a_batch_goes_on_to_the_training_device(tmp_path):
    loop = TrainLoop(tiny_cfg(tmp_path), tmp_path / "run", make_table(tmp_path / "images"), None, None, None,
                     False)
    loop.device = torch.device("meta")  # as a GPU would be: not where the loader put the batch
    images, texts = loop._sync_batch(loop.collate([loop.dataset[(0, i)] for i in range(4)]))
    assert (images.device.type, texts.device.type, len(images), len(texts)) == ("meta", "meta", 4, 4)


def test_when_the_other_process_diverges_this_one_stops_too(tmp_path, monkeypatch):
    loop = _two_process_loop(tmp_path, monkeypatch, torch.tensor(0.0), torch.tensor(1.0))
    loop._stop_unless_finite("loss", torch.tensor([0.5]))  # both finite: go on
    with pytest.raises(TrainingDiverged, match=r"^training diverged at step 1 \(epoch 1\): the loss is not"):
        loop._stop_unless_finite("loss", torch.tensor([0.5]))


# ------------------------------------------------------------------- accumulation, options

def test_accumulation_gives_the_full_batch_gradient(tmp_path):
    """accum 2 x batch 2 == batch 4 (open_clip's feature caching: the loss sees all 4 pairs), and so do
    passes of 2, 1 and 1: the temperature's gradient is taken once, not once a pass before the last."""
    table = make_table(tmp_path / "images", n=8)
    loop = TrainLoop(tiny_cfg(tmp_path), tmp_path / "run", table, None, None, None, False)
    batch = loop.collate([loop.dataset[(0, i)] for i in range(4)])
    images, texts = batch["images"], batch["texts"]
    grads = []
    loop.optimizer.step = lambda: grads.append({n: p.grad.clone() for n, p in loop.model.named_parameters()})
    forward, passes = loop.forward_model, []
    loop.forward_model = lambda images, texts: passes.append(len(images)) or forward(images, texts)
    loss_full = loop._optimizer_step([(images, texts)])
    loss_accum = loop._optimizer_step([(images[:2], texts[:2]), (images[2:], texts[2:])])
    loop._optimizer_step([(images[:2], texts[:2])])  # a batch of 2 alone: another gradient
    loop._optimizer_step([(images[:2], texts[:2]), (images[2:3], texts[2:3]), (images[3:], texts[3:])])
    assert loss_accum == pytest.approx(loss_full.item(), rel=1e-5)
    assert all(torch.allclose(grads[0][n], grads[1][n], rtol=1e-4, atol=1e-5) for n in grads[0])
    assert not all(torch.allclose(grads[0][n], grads[2][n], rtol=1e-4, atol=1e-5) for n in grads[0])
    assert all(torch.allclose(grads[0][n], grads[3][n], rtol=1e-4, atol=1e-5) for n in grads[0])
    # one pass a batch, and with accumulation one without gradients first
    assert passes == [4, 2, 2, 2, 2, 2, 2, 1, 1, 2, 1, 1]


def test_two_processes_sync_the_accumulated_gradients_once_after_the_last_pass(tmp_path, monkeypatch):
    """DDP all-reduces the gradients in a backward outside `no_sync()`: the passes before the last add to
    them locally, the last one syncs the sum (a sync earlier would leave the later passes unsynced)."""
    loop = _two_process_loop(tmp_path, monkeypatch, torch.tensor(0.0), torch.tensor(0.0))  # finite, finite
    batch = loop.collate([loop.dataset[(0, i)] for i in range(4)])
    images, texts, model, synced, held = batch["images"], batch["texts"], loop.model, [], []

    class Ddp:
        def __call__(self, images, texts):
            if torch.is_grad_enabled():
                synced.append(not held)
            return model(images, texts)

        @contextlib.contextmanager
        def no_sync(self):
            held.append(True)
            yield
            held.pop()

    loop.forward_model = Ddp()
    loop._optimizer_step([(images[:2], texts[:2]), (images[2:3], texts[2:3]), (images[3:], texts[3:])])
    assert synced == [False, False, True]


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
    with pytest.raises(TrainingDiverged) as weights:
        train(cfg, tmp_path / "run", table, progress=False)
    assert str(weights.value) == (
        "training diverged at step 1 (epoch 1): the weights are not finite. Nothing was saved from this "
        "state; no checkpoint was written yet. Lower lr (now 1e+20) or warm up longer (warmup_steps=1), then "
        "start a new run")
    assert not (tmp_path / "run" / "checkpoints").exists()
    cfg = tiny_cfg(tmp_path, lr=1e10, warmup_steps=1, save_every_steps=1)
    with pytest.raises(TrainingDiverged) as loss:
        train(cfg, tmp_path / "run2", table, progress=False)
    assert str(loss.value) == (
        "training diverged at step 2 (epoch 1): the loss is not finite. Nothing was saved from this state; "
        f"the last checkpoint is {tmp_path / 'run2' / 'checkpoints' / 'latest.pt'}. Lower lr (now 1e+10) or "
        "warm up longer (warmup_steps=1), then start a new run")
    ckpt = load_checkpoint(tmp_path / "run2" / "checkpoints" / "latest.pt")
    assert ckpt["step"] == 1 and all(torch.isfinite(v).all() for v in ckpt["state_dict"].values())


def test_max_steps_cuts_the_last_epoch_short_and_a_quiet_run_reports_to_the_pipeline_only(
        tmp_path, capsys, monkeypatch, recwarn):
    monkeypatch.setenv("KIT_PROGRESS_LOG", str(tmp_path / "progress.log"))  # as the pipeline runs it
    table, cfg = make_table(tmp_path / "images"), tiny_cfg(tmp_path, max_steps=6)
    result = train(cfg, tmp_path / "run", table, progress=False)
    assert capsys.readouterr() == ("", "")  # progress=False: no bar, no lines
    assert [str(w.message) for w in recwarn] == []  # nor warnings (pinned memory asked for without a GPU)
    assert (tmp_path / "progress.log").read_text().splitlines()[-1].startswith("training: 6/6 step (100 %), ")
    assert not (tmp_path / "run" / "metrics.jsonl").exists()  # nothing to evaluate with: no evaluations
    assert [p.name for p in result.checkpoints] == ["epoch_1.pt", "epoch_2.pt"]  # 4 steps, then 2
    last = load_checkpoint(result.checkpoints[-1])
    assert last["step"] == 6 and last["config"] == cfg.to_dict() and last["world_size"] == 1
    latest = tmp_path / "run" / "checkpoints" / "latest.pt"  # the last save's second name: the same bytes
    assert recorded_sha256(latest) == sha256_file(latest) == sha256_file(result.checkpoints[-1])
    assert "cut at step 6 (max_steps)" in (tmp_path / "run" / "out.log").read_text()


class _Mirror:
    """torch.distributed where the other process does what this one does: all_reduce keeps the tensor,
    all_gather_object gathers this process's object twice, barrier returns."""

    ReduceOp = torch.distributed.ReduceOp

    def __init__(self):
        self.barriers = 0

    def all_reduce(self, tensor, op=None):
        pass

    def all_gather_object(self, out, obj):
        out[:] = [obj] * len(out)

    def barrier(self):
        self.barriers += 1


def _mirrored_loop(tmp_path, monkeypatch, **overrides) -> tuple[TrainLoop, _Mirror]:
    """A loop built as one process, then told it is rank 0 of 2 whose other process mirrors it."""
    loop = TrainLoop(tiny_cfg(tmp_path, **overrides), tmp_path / "run", make_table(tmp_path / "images"), None,
                     None, None, False)
    loop.world, group = 2, _Mirror()
    monkeypatch.setattr("lib.train.loop.dist", group)
    return loop, group


def _recorded_devices(monkeypatch) -> list[tuple[str, int]]:
    """The (device, local rank) pairs the loop asks resolve_device for; each answers the CPU."""
    asked = []
    monkeypatch.setattr("lib.train.loop.resolve_device",
                        lambda name, local_rank: asked.append((name, local_rank)) or torch.device("cpu"))
    return asked


def test_rank_0_of_2_logs_both_processes_samples_a_second(tmp_path, monkeypatch):
    """A step of rank 0 of 2 is 2 x 4 pairs: with the clock standing still (the 1e-9 s floor) the line says
    8e9 samples/s. (The batches are this process's alone, as one process would read them.) The processes
    meet after each evaluation (epochs 0 and 1) and at the end, after rank 0's last save."""
    loop, group = _mirrored_loop(tmp_path, monkeypatch, stop_epoch=1, log_every=1)
    monkeypatch.setattr("lib.train.loop.time", _Clock())
    one_process = EpochBatchSampler
    monkeypatch.setattr("lib.train.loop.EpochBatchSampler",
                        lambda *args, rank, world_size, **kwargs: one_process(*args, **kwargs))
    loop.fit()
    rates = {line.split(" samples/s ")[1] for line in _log(tmp_path / "run") if line.startswith("step ")}
    assert rates == {"8000000000.0"} and group.barriers == 3


class _Group(_Mirror):
    """An initialised process group of 2, as rank 1 sees it."""

    def is_initialized(self):
        return True

    def get_rank(self):
        return 1

    def get_world_size(self):
        return 2


def test_a_loop_in_a_process_group_takes_its_rank_world_and_local_device_and_wraps_the_model(tmp_path,
                                                                                             monkeypatch):
    """In a group of 2 (torchrun's LOCAL_RANK=1): rank 1, not the main process, its device chosen by the local
    rank, the model wrapped in DDP (on the CPU, no device ids) and the epoch's batches halved."""
    monkeypatch.setattr("lib.train.loop.dist", _Group())
    monkeypatch.setenv("LOCAL_RANK", "1")
    devices, wrapped = _recorded_devices(monkeypatch), []
    monkeypatch.setattr(torch.nn.parallel, "DistributedDataParallel",
                        lambda model, **options: wrapped.append(options) or model)
    built_on = []  # the model is made on this process's device, not the configured one

    def build(cfg, checkpoint=None, device=None):
        built_on.append(device)
        return model_from_config(cfg, checkpoint, device)

    monkeypatch.setattr("lib.train.loop.model_from_config", build)
    loop = TrainLoop(tiny_cfg(tmp_path), tmp_path / "run", make_table(tmp_path / "images"), None, None, None,
                     False)
    assert (loop.rank, loop.world, loop.main, loop.steps_per_epoch) == (1, 2, False, 2)  # 16 / 2 / 4
    assert devices == [("cpu", 1)] and wrapped == [{"device_ids": None, "broadcast_buffers": False}]
    assert built_on == [torch.device("cpu")]
    assert loop.forward_model is loop.model and not loop.log.enabled and loop.log.echo is progress_write
    loss = loop.loss_fn  # each process's features against the gathered ones, with their gradients
    assert (loss.local_loss, loss.gather_with_grad, loss.cache_labels, loss.rank, loss.world_size) == (
        True, True, True, 1, 2)


def test_a_single_process_trains_on_the_first_device_whatever_local_rank_its_environment_names(tmp_path,
                                                                                              monkeypatch):
    """Outside a process group the device index is 0, even where a launcher or scheduler left a local rank
    in the environment (LOCAL_RANK, SLURM_LOCALID)."""
    monkeypatch.setenv("LOCAL_RANK", "1")
    devices = _recorded_devices(monkeypatch)
    TrainLoop(tiny_cfg(tmp_path), tmp_path / "run", make_table(tmp_path / "images"), None, None, None, False)
    assert devices == [("cpu", 0)]


def test_the_datasets_draw_from_the_runs_seed_and_the_options_reach_the_model(tmp_path, monkeypatch):
    """seed 3: the training and val datasets' augmentation draws; the jitter's probability reaches the
    training transform; grad_checkpointing turns on open_clip's checkpointing in both towers."""
    stages = []
    monkeypatch.setattr("lib.train.loop.train_two_stage",
                        lambda pre, **options: stages.append(options) or train_two_stage(pre, **options))
    table = make_table(tmp_path / "images")
    cfg = tiny_cfg(tmp_path, seed=3, photometric_jitter_prob=0.5, grad_checkpointing=True)
    loop = TrainLoop(cfg, tmp_path / "run", table, table, None, None, False)
    assert (loop.dataset.seed, loop.val_loader.dataset.seed) == (3, 3)
    assert stages == [{"photometric_jitter": [0.3, 0.4, 0.3, 0.0], "photometric_jitter_prob": 0.5}]
    assert loop.model.visual.transformer.grad_checkpointing and loop.model.transformer.grad_checkpointing


def test_rank_1_of_2_reads_its_own_shard_and_reports_nothing_to_the_pipeline(tmp_path, monkeypatch):
    """Rank 1's sampler is given its rank and the world size; its bar is not reported (rank 0's is), and
    a bar that is shown follows the terminal's width as it is resized (tqdm's dynamic_ncols)."""
    loop, _ = _mirrored_loop(tmp_path, monkeypatch)
    loop.rank, loop.main = 1, False
    made = {}

    class Stop(Exception):
        pass

    def bar(**kwargs):
        made["bar"] = kwargs
        return progress_bar(**kwargs)

    def sampler(*args, **kwargs):
        made["sampler"] = kwargs
        raise Stop

    monkeypatch.setattr("lib.train.loop.progress_bar", bar)
    monkeypatch.setattr("lib.train.loop.EpochBatchSampler", sampler)
    with pytest.raises(Stop):
        loop.fit()
    assert (made["bar"]["report"], made["bar"]["show"], made["bar"]["dynamic_ncols"]) == (False, False, True)
    assert (made["sampler"]["rank"], made["sampler"]["world_size"]) == (1, 2)


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


# ------------------------------------------------------------------ what the run records

def _log(run: Path) -> list[str]:
    """out.log without its time stamps."""
    return [line.split(" | ", 1)[1] for line in (run / "out.log").read_text().splitlines()]


def test_the_log_and_the_checkpoints_record_every_save_with_its_step(reference):
    run = reference["root"] / "run"
    assert [line for line in _log(run) if line.startswith("saved")] == [
        "saved latest.pt at step 2", "saved epoch_1.pt, latest.pt at step 4",  # save_every_steps=2
        "saved latest.pt at step 6", "saved epoch_2.pt, latest.pt at step 8"]
    for name, epoch, step in (("epoch_1.pt", 1, 4), ("epoch_2.pt", 2, 8), ("latest.pt", 2, 8)):
        ckpt = load_checkpoint(run / "checkpoints" / name)
        assert (ckpt["epoch"], ckpt["step"], ckpt["name"], ckpt["steps_per_epoch"], ckpt["world_size"]) == (
            epoch, step, "kit-micro-vit", 4, 1)
        assert ckpt["scaler"] is None and ckpt["config"] == reference["cfg"].to_dict()
        state = ckpt["train_state"]  # saved after the epoch's evaluation: the train-loss sums start again
        assert (state["loss_sum"], state["loss_count"], state["bad_images"]) == (0.0, 0, {})
        row = read_metrics(run / "metrics.jsonl")[epoch]
        assert state["elapsed_s"] == pytest.approx(row["time_s"], abs=0.02)


class _Clock:
    """time.time() of the loop: it stands still but for the evaluations, which take 1.23456 s each."""

    def __init__(self):
        self.now = 1000.0

    def time(self) -> float:
        return self.now


class _TensorBoard:
    """torch.utils.tensorboard where it is not installed: SummaryWriter notes the scalars."""

    def __init__(self):
        self.scalars: list[tuple[str, float, int]] = []
        board = self

        class SummaryWriter:
            def __init__(self, log_dir):
                pass

            def add_scalar(self, tag, value, step):
                board.scalars.append((tag, value, step))

            def close(self):
                pass

        self.SummaryWriter = SummaryWriter


def test_the_log_metrics_board_and_screen_of_a_run_say_what_each_step_did(tmp_path, monkeypatch, capsys):
    """8 training pairs in batches of 4: 2 steps an epoch, 2 epochs, a cosine over 3 epochs (6 steps) after
    2 warmup steps: the LRs of steps 1-4 are 0.5e-3, 1e-3, 1e-3 and 0.5 (1 + cos(pi / 4)) 1e-3. A line every
    3 steps and at each epoch's end: steps 2, 3, 4. The clock stands still but for the evaluations (1.23456
    s each): time_s 1.23, 2.47, 3.7; steps 1-2 (8 pairs) and step 4 take the 1e-9 s floor, step 3 (4 pairs)
    the 1.23456 s of the evaluation before it: 3.2 samples/s."""
    clock, board = _Clock(), _TensorBoard()
    monkeypatch.setattr("lib.train.loop.time", clock)
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", board)
    step, losses = TrainLoop._optimizer_step, []

    def noted(self, batches):
        loss = step(self, batches)
        losses.append(loss.item())
        return loss

    monkeypatch.setattr(TrainLoop, "_optimizer_step", noted)
    table = make_table(tmp_path / "images")
    bad = tmp_path / "images" / "img01.jpg"
    bad.write_bytes(b"not a jpeg")
    scores = iter([0.2, 0.3, 0.4])

    def evaluator(model):
        clock.now += 1.23456
        return {"map10_official": next(scores), "car_map10_official": 0.5}

    cfg = tiny_cfg(tmp_path, keep_checkpoints=1, log_every=3)
    result = train(cfg, tmp_path / "run", table.iloc[8:], val_table=table.iloc[:8], evaluator=evaluator,
                   progress=True)
    rows = read_metrics(tmp_path / "run" / "metrics.jsonl")
    assert [(r["epoch"], r["step"], r["train_loss"], r["time_s"], r["eval_s"]) for r in rows] == [
        (0, 0, None, 1.23, 1.23), (1, 2, (losses[0] + losses[1]) / 2, 2.47, 1.23),  # the mean since the last
        (2, 4, (losses[2] + losses[3]) / 2, 3.7, 1.23)]                            # evaluation
    last_lr = 0.5e-3 * (1 + math.cos(math.pi / 4))
    assert [r["lr"] for r in rows] == [0.0, 1e-3, pytest.approx(last_lr)]
    assert [(r["val_map10_official"], r["val_car_map10_official"]) for r in rows] == [
        (0.2, 0.5), (0.3, 0.5), (0.4, 0.5)]
    log = _log(tmp_path / "run")
    step_line = r"step (\d)/4 epoch (\d) loss (\S+) lr (\S+) logit_scale (\d+\.\d{3}) samples/s (\S+)"
    steps = [re.fullmatch(step_line, line) for line in log if line.startswith("step ")]
    assert [m.group(1, 2, 3, 4, 6) for m in steps] == [
        ("2", "1", f"{losses[1]:.4f}", "1.0000e-03", "8000000000.0"),
        ("3", "2", f"{losses[2]:.4f}", "1.0000e-03", "3.2"),
        ("4", "2", f"{losses[3]:.4f}", "8.5355e-04", "4000000000.0")]
    training = ("training kit-micro-vit on 8 pairs: 2 steps an epoch x 2 epochs (cosine horizon 6 steps), "
                "1 process(es), cpu, precision fp32")
    skipped = f"skipped bad val image {bad}: not a decodable image (OpenCV could not decode its 10 bytes)"
    evals = [f"eval epoch {r['epoch']}, step {r['step']}, val_map10_official {r['val_map10_official']:.4g}, "
             f"val_car_map10_official 0.5, val_loss {r['val_loss']:.4g}, train_loss "
             f"{'None' if r['train_loss'] is None else format(r['train_loss'], '.4g')}, lr {r['lr']:.4g}, "
             f"time_s {r['time_s']:.4g}, eval_s 1.23" for r in rows]
    assert [line for line in log if not line.startswith("step ")] == [
        training, skipped, evals[0], "saved latest.pt at step 1", evals[1],
        "saved epoch_1.pt, latest.pt at step 2", "saved latest.pt at step 3", evals[2],
        "saved epoch_2.pt, latest.pt at step 4", "deleted epoch_1.pt (keep_checkpoints=1)"]
    assert [p.name for p in result.checkpoints] == ["epoch_2.pt"]
    assert load_checkpoint(result.checkpoints[0])["train_state"]["elapsed_s"] == pytest.approx(3.70368)
    trained = [(tag, value, s) for tag, value, s in board.scalars if tag.startswith("train/")]
    assert [(tag, s) for tag, _, s in trained] == [
        (f"train/{name}", s) for s in (2, 3, 4) for name in ("loss", "lr", "logit_scale", "samples_per_s")]
    assert [value for tag, value, _ in trained if tag != "train/logit_scale"] == pytest.approx([
        losses[1], 1e-3, 8 / 1e-9, losses[2], 1e-3, 4 / 1.23456, losses[3], last_lr, 4 / 1e-9])
    assert [f"{value:.3f}" for tag, value, _ in trained if tag == "train/logit_scale"] == [
        m.group(5) for m in steps]
    assert [(tag, s) for tag, _, s in board.scalars if tag.startswith("val/")] == [
        (f"val/{name}", r["step"]) for r in rows
        for name in ("val_map10_official", "val_car_map10_official", "val_loss", "train_loss", "lr", "time_s",
                     "eval_s") if r[name] is not None]
    shown = capsys.readouterr()
    assert shown.out.splitlines() == [training, skipped] + [evaluation_summary(r, 2) for r in rows]
    assert "training: 100%" in shown.err and " 4/4 " in shown.err
    assert re.search(r"(step/s|s/step), loss=" + f"{losses[3]:.4f}" + r", samples_s=4000000000\.0\]",
                     shown.err)


def _run_copy(reference, tmp_path) -> Path:
    run = tmp_path / "run"
    shutil.copytree(reference["root"] / "run", run)
    return run


def _resumed(reference, run: Path, resume: str) -> tuple[TrainLoop, str]:
    loop = TrainLoop(reference["cfg"], run, reference["table"], None, None, None, False, resume=resume)
    return loop, _log(run)[-1]


def test_a_resume_says_where_it_resumed_from_and_why_not_latest(reference, tmp_path, capsys):
    run = _run_copy(reference, tmp_path)
    ckpts = run / "checkpoints"
    loop, said = _resumed(reference, run, "latest")
    assert said == f"resumed from {ckpts / 'latest.pt'} at step 8 (epoch 2)"
    assert capsys.readouterr().out == said + "\n"
    (ckpts / "latest.pt").unlink()
    shutil.copyfile(ckpts / "epoch_1.pt", ckpts / "latest.pt")  # its bytes no longer match its .sha256
    (ckpts / "epoch_2.pt").write_bytes(b"cut short")
    loop, said = _resumed(reference, run, "latest")
    assert said == (f"resumed from {ckpts / 'epoch_1.pt'} at step 4 (epoch 1) (latest.pt was cut short by an "
                    "interruption and does not verify)")
    assert loop.step == 4 and [r["epoch"] for r in read_metrics(run / "metrics.jsonl")] == [0, 1]
    want = load_checkpoint(ckpts / "epoch_1.pt")
    assert all(torch.equal(v, want["state_dict"][k]) for k, v in loop.model.state_dict().items())
    assert torch.equal(torch.get_rng_state(), want["rng"]["torch"])
    elsewhere = tmp_path / "kept" / "epoch_1.pt"
    elsewhere.parent.mkdir()
    shutil.copyfile(ckpts / "epoch_1.pt", elsewhere)
    shutil.copyfile(ckpts / "epoch_1.pt.sha256", tmp_path / "kept" / "epoch_1.pt.sha256")
    assert _resumed(reference, run, str(elsewhere))[1] == f"resumed from {elsewhere} at step 4 (epoch 1)"


def test_a_resumed_runs_bar_starts_where_the_run_left_off(reference, tmp_path, capsys):
    run = _run_copy(reference, tmp_path)
    loop = TrainLoop(reference["cfg"], run, reference["table"], None, None, None, True, resume="latest")
    loop.fit()  # latest.pt is the end: nothing left to train
    err = capsys.readouterr().err
    assert "training: 100%" in err and " 8/8 " in err and " 0/8 " not in err


def test_an_epoch_reads_only_the_batches_its_steps_use(tmp_path):
    """20 pairs in batches of 4, 2 batches a step: an epoch's 2 steps use 4 of its 5 full batches. With seed
    1, image 13 falls in the unused fifth batch of both epochs: never read, it neither stops the run
    (max_bad_image_fraction=0) nor is reported."""
    table = make_table(tmp_path / "images", n=20)
    unused = [{i for _, i in list(EpochBatchSampler(20, 4, 1, epoch))[4]} for epoch in (0, 1)]
    assert unused[0] & unused[1] == {13}
    Path(table.loc[13, "filepath"]).write_bytes(b"gone")
    result = train(tiny_cfg(tmp_path, seed=1, accum_steps=2), tmp_path / "run", table, progress=False)
    assert load_checkpoint(result.checkpoints[-1])["step"] == 4
    assert "skipped bad image" not in (tmp_path / "run" / "out.log").read_text()


def test_a_resume_refuses_another_models_checkpoint_or_another_epoch_length(reference, tmp_path):
    cfg, table = reference["cfg"], reference["table"]
    other = tmp_path / "other.pt"
    save_checkpoint(other, {"name": "ViT-B-32", "steps_per_epoch": 4})
    with pytest.raises(KitError) as model:
        TrainLoop(cfg, tmp_path / "run", table, None, None, None, False, resume=str(other))
    assert str(model.value) == f"{other} holds a ViT-B-32 model, not model=kit-micro-vit"
    save_checkpoint(other, {"name": "kit-micro-vit", "steps_per_epoch": 3})
    with pytest.raises(KitError) as length:
        TrainLoop(cfg, tmp_path / "run", table, None, None, None, False, resume=str(other))
    assert str(length.value) == (
        f"{other} was saved with 3 steps an epoch, this run has 4 (table, batch_size, accum_steps or number "
        "of processes changed): resume with the same ones, or start a new run from it with init_checkpoint")


def test_a_resume_reads_the_checkpoint_into_cpu_memory(reference, tmp_path, monkeypatch):
    """A checkpoint saved on a GPU holds GPU tensors: read back onto that GPU, a 30 GB checkpoint would sit
    beside the model, and one saved on cuda:1 could not be read where there is one GPU."""
    run = _run_copy(reference, tmp_path)
    load, places = torch.load, []

    def reads(*args, **kwargs):
        places.append(kwargs.get("map_location"))
        return load(*args, **kwargs)

    monkeypatch.setattr(torch, "load", reads)
    _resumed(reference, run, "latest")
    assert places == ["cpu"]


def test_a_resumed_fp16_run_gets_its_loss_scale_back_and_another_precision_ignores_it(reference, tmp_path,
                                                                                      monkeypatch):
    """fp16 (a GPU's) keeps a GradScaler, saved with the checkpoint: a resume at fp16 goes on with the
    saved loss scale, a resume at another precision has no scaler and leaves it."""
    run = _run_copy(reference, tmp_path)
    ckpt = load_checkpoint(run / "checkpoints" / "latest.pt")
    ckpt["scaler"] = {"scale": 512.0, "growth_factor": 2.0, "backoff_factor": 0.5, "growth_interval": 2000,
                      "_growth_tracker": 3}
    (run / "checkpoints" / "latest.pt").unlink()  # a hard link to epoch_2.pt: written anew, not through
    save_checkpoint(run / "checkpoints" / "latest.pt", ckpt)
    assert _resumed(reference, run, "latest")[0].scaler is None  # fp32
    monkeypatch.setattr("lib.train.loop.create_scaler", lambda precision, device: torch.amp.GradScaler("cpu"))
    scaler = _resumed(reference, run, "latest")[0].scaler  # as fp16 on a GPU
    assert (scaler.get_scale(), scaler.state_dict()["_growth_tracker"]) == (512.0, 3)


def test_resumed_weights_come_from_the_checkpoint_fresh_ones_from_init_checkpoint(reference, tmp_path):
    """Resumed, the run needs neither its starting weights (pretrained, its sha256) nor its init_checkpoint
    any more: here both are gone. A fresh run starts from init_checkpoint."""
    run = _run_copy(reference, tmp_path)
    ckpts = run / "checkpoints"
    gone = reference["cfg"].replace(pretrained=str(tmp_path / "gone.pt"), pretrained_sha256="0" * 64)
    resumed = TrainLoop(gone, run, reference["table"], None, tmp_path / "gone_too.pt", None, False,
                        resume="latest")
    want = load_checkpoint(ckpts / "latest.pt")["state_dict"]
    assert all(torch.equal(v, want[k]) for k, v in resumed.model.state_dict().items())
    fresh = TrainLoop(reference["cfg"], tmp_path / "fresh", reference["table"], None, ckpts / "epoch_1.pt",
                      None, False)
    want = load_checkpoint(ckpts / "epoch_1.pt")["state_dict"]
    assert all(torch.equal(v, want[k]) for k, v in fresh.model.state_dict().items())


def test_open_clips_dict_output_gives_the_same_features_as_its_tuple(tmp_path):
    model, tokenizer, _ = create_model("kit-micro-vit", "")
    model.eval()
    images, texts = torch.rand(2, 3, 32, 32), tokenizer(["a red car", "a blue car"])
    as_tuple = _features(model(images, texts))
    model.output_dict = True
    as_dict = model(images, texts)
    assert isinstance(as_dict, dict)
    assert all(torch.equal(a, b) for a, b in zip(_features(as_dict), as_tuple, strict=True))


def test_a_locked_resnet_image_tower_keeps_its_batch_norm_statistics_learning(tmp_path, monkeypatch):
    """lock_image freezes the tower's weights only (open_clip's --lock-image without
    --lock-image-freeze-bn-stats): a ResNet's batch norms still follow the training images."""
    micro_rn = {"embed_dim": 64, "vision_cfg": {"image_size": 32, "layers": [1, 1, 1, 1], "width": 8,
                                                "head_width": 8},
                "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 1}}
    monkeypatch.setitem(open_clip.factory._MODEL_CONFIGS, "kit-micro-rn", micro_rn)
    cfg = tiny_cfg(tmp_path, model="kit-micro-rn", lock_image=True)
    loop = TrainLoop(cfg, tmp_path / "run", make_table(tmp_path / "images"), None, None, None, False)
    assert not any(p.requires_grad for p in loop.model.visual.parameters())
    norms = [m for m in loop.model.visual.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    before = [m.running_mean.clone() for m in norms]
    loop.model.train()
    loop.model.visual(torch.rand(2, 3, 32, 32))
    assert len(norms) == 19
    assert not any(torch.equal(a, m.running_mean) for a, m in zip(before, norms, strict=True))


def test_fp16s_loss_scaler_changes_no_update_and_is_saved(tmp_path, monkeypatch):
    """The scaler multiplies the loss by 2**16 and the gradients back by 2**-16 before the step: exact in
    float32, so the weights are those of a run without it. (A CPU GradScaler stands in for a GPU's fp16.)"""
    table = make_table(tmp_path / "images")
    cfg = tiny_cfg(tmp_path, stop_epoch=1)
    plain = load_checkpoint(train(cfg, tmp_path / "plain", table, progress=False).checkpoints[0])
    asked = []
    monkeypatch.setattr("lib.train.loop.create_scaler",
                        lambda precision, device: asked.append((precision, device)) or GradScaler("cpu"))
    scaled = load_checkpoint(train(cfg, tmp_path / "scaled", table, progress=False).checkpoints[0])
    assert asked == [("fp32", torch.device("cpu"))]  # the run's precision and device (auto: fp32 on the CPU)
    assert all(torch.equal(v, plain["state_dict"][k]) for k, v in scaled["state_dict"].items())
    assert plain["scaler"] is None
    assert scaled["scaler"] == {"scale": 65536.0, "growth_factor": 2.0, "backoff_factor": 0.5,
                                "growth_interval": 2000, "_growth_tracker": 4}  # 4 steps without an overflow


def test_a_step_whose_images_are_all_unreadable_learns_nothing_and_says_so(tmp_path):
    table = make_table(tmp_path / "images", n=8)
    for path in table["filepath"]:
        Path(path).write_bytes(b"gone")
    cfg = tiny_cfg(tmp_path, stop_epoch=1, log_every=1, max_bad_image_fraction=1.0)
    torch.manual_seed(cfg.seed)
    start, _, _ = create_model("kit-micro-vit", "")
    result = train(cfg, tmp_path / "run", table, progress=False)
    log = _log(tmp_path / "run")
    assert [line for line in log if line.startswith("step ")] == [  # logit scale: 1 / 0.07, as initialised
        "step 1/2 epoch 1 loss nan lr 5.0000e-04 logit_scale 14.286 samples/s 0.0",
        "step 2/2 epoch 1 loss nan lr 1.0000e-03 logit_scale 14.286 samples/s 0.0"]
    assert sum(line.startswith("skipped bad image") for line in log) == 8
    end = load_checkpoint(result.checkpoints[0])
    assert end["step"] == 2 and end["train_state"]["loss_count"] == 0 and end["optimizer"]["state"] == {}
    assert all(torch.equal(v, end["state_dict"][k]) for k, v in start.state_dict().items())


def test_evaluations_every_other_epoch_and_at_the_end_and_the_epoch_to_submit_is_kept(tmp_path):
    """eval_every=2 over 3 epochs: the starting point, epoch 2 and the last (3). keep_checkpoints=1 keeps
    the newest and the best (3), and the epoch to submit (1); epoch 2 goes. A metrics.jsonl left by an
    attempt killed before its first checkpoint is forgotten."""
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "metrics.jsonl").write_text('{"epoch": 0, "step": 0, "val_map10_official": 0.9}\n')
    scores = iter([0.1, 0.2, 0.3])
    cfg = tiny_cfg(tmp_path, stop_epoch=3, eval_every=2, keep_checkpoints=1, submit_epoch=1)
    result = train(cfg, tmp_path / "run", make_table(tmp_path / "images", n=8),
                   evaluator=lambda model: {"map10_official": next(scores)}, progress=False)
    rows = read_metrics(tmp_path / "run" / "metrics.jsonl")
    assert [(r["epoch"], r["step"], r["val_map10_official"]) for r in rows] == [(0, 0, 0.1), (2, 4, 0.2),
                                                                                (3, 6, 0.3)]
    assert "deleted epoch_2.pt (keep_checkpoints=1)" in _log(tmp_path / "run")
    assert [p.name for p in result.checkpoints] == ["epoch_1.pt", "epoch_3.pt"]
    assert (result.best_epoch, result.best_by) == (1, "submit_epoch")

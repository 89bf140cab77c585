"""Part 2 of the GPU proof on the CPU with kit-micro-vit: the settings, the ladder, the plan's arithmetic."""
import time

import pytest
import torch

from lib import config
from lib.model import text_trim
from lib.model.factory import create_model
from tools import workload
from tools.gpu import train as gpu_proof_train
from tools.gpu.train import Setting


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("gpu_train")
    images = workload.make_images(root / "images", 8)
    torch.manual_seed(0)
    parts = create_model("kit-micro-vit", trim_text=True)
    base = config.load("competition", model="kit-micro-vit", pretrained="", device="cpu", batch_size=4,
                       workers=0)
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # 2 shared cores
    yield {"root": root, "images": images, "captions": workload.captions(8), "parts": parts, "base": base}
    torch.set_num_threads(before)


def test_the_plan_is_the_readmes():
    """README: ≈ 73 GB at batch 25 without checkpointing, ≈ 59 GB at 256 with it."""
    assert gpu_proof_train.plan_memory_gb(25, False) == pytest.approx(73, abs=0.5)
    assert gpu_proof_train.plan_memory_gb(256, True) == pytest.approx(59, abs=1)


def test_the_step_clock_stops_after_its_steps_or_at_its_deadline():
    clock = gpu_proof_train.StepClock(2, time.perf_counter() + 60, torch.device("cpu"))
    clock()
    with pytest.raises(gpu_proof_train.Enough):
        clock()
    late = gpu_proof_train.StepClock(10, time.perf_counter() - 1, torch.device("cpu"))
    with pytest.raises(gpu_proof_train.Enough):
        late()


def test_a_setting_runs_the_kits_loop_and_times_its_steps(setup):
    model = setup["parts"][0]
    untrimmed = Setting("untrimmed", 4, True, trim_text_padding=False)
    record = gpu_proof_train.run_setting(
        setup["parts"], setup["base"], untrimmed, setup["images"], setup["captions"], setup["root"] / "a",
        steps=2, warmup=1, deadline=time.perf_counter() + 60, plan=True)
    assert record["status"] == "ok" and record["steps"] == 3 and record["error"] is None
    assert record["samples_per_s"] == pytest.approx(4 / record["median_step_s"], rel=0.01)
    assert record["peak_memory_gb"] is None and record["plan_memory_gb"] == pytest.approx(45.8, abs=0.1)
    assert not text_trim.installed(model) and model.visual.transformer.grad_checkpointing
    assert not list((setup["root"] / "a").rglob("*.pt"))  # nothing saved
    assert all(p.grad is None for p in model.parameters())  # freed for the next setting
    record = gpu_proof_train.run_setting(
        setup["parts"], setup["base"], Setting("trimmed", 4, False), setup["images"], setup["captions"],
        setup["root"] / "b", steps=1, warmup=1, deadline=time.perf_counter() + 60, plan=False)
    assert record["status"] == "ok" and record["plan_memory_gb"] is None
    assert text_trim.installed(model) and not model.visual.transformer.grad_checkpointing


def test_out_of_time_a_setting_is_skipped(setup):
    record = gpu_proof_train.run_setting(
        setup["parts"], setup["base"], Setting("late", 4, False), setup["images"], setup["captions"],
        setup["root"] / "c", steps=2, warmup=1, deadline=time.perf_counter() - 1, plan=False)
    assert record["status"] == "skipped" and record["steps"] == 0


@pytest.mark.slow  # seconds: a subprocess or a wait (make test runs it)
def test_the_ladder_goes_down_past_out_of_memory(setup, monkeypatch):
    """Batch 16 'runs out of memory' (as a GPU would say it); 8 fits and is the answer."""
    fit = gpu_proof_train.MeasuredLoop.fit

    def fit_or_oom(loop):
        if loop.cfg.batch_size == 16:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 64.00 GiB")
        return fit(loop)

    monkeypatch.setattr(gpu_proof_train.MeasuredLoop, "fit", fit_or_oom)
    saved = []
    out = gpu_proof_train.measure_train(setup["parts"], setup["base"], setup["images"], setup["captions"],
                                        setup["root"] / "ladder", steps=1, warmup=1, ladder=(16, 8, 2),
                                        budget_s=120, progress=lambda: saved.append(1))
    names = [s["name"] for s in out["settings"]]
    assert names == ["batch 4 (the reference's)", "batch 4, checkpointing", "batch 16, checkpointing",
                     "batch 8, checkpointing", "batch 4, text untrimmed"]
    oom = out["settings"][2]
    assert oom["status"] == "out of memory" and "Tried to allocate" in oom["error"]
    assert out["largest_checkpointed_batch"] == 8 and out["status"] == "ok" and len(saved) == 5
    assert out["trim_text_saving"]["saving"] is not None and out["trim_text_saving"]["plan_saving"] is None
    assert out["optimizer"] == {"name": "AdamW", "lr": 4e-7, "betas": [0.9, 0.98], "eps": 1e-6,
                                "weight_decay": 0.01}


def test_part_status():
    assert gpu_proof_train.part_status(["ok", "out of memory", "ok"]) == "ok"
    assert gpu_proof_train.part_status(["ok", "skipped"]) == "cut short"
    assert gpu_proof_train.part_status(["ok", "failed", "cut short"]) == "failed"

"""Part 3 of the GPU proof: its step runner, its log reading and its collectives check (the whole part
runs in tests/tools/gpu/test_proof.py's dry run)."""
import socket

import pytest
import torch
import torch.distributed as dist

from tools.gpu import pipeline as gpu_proof_pipeline
from tools.gpu.measure import Budget


def test_a_failed_step_skips_the_rest_and_the_budget_skips_what_is_left():
    record = gpu_proof_pipeline.template()
    calls = []

    def boom():
        raise ValueError("no dataset")

    gpu_proof_pipeline.run_steps([("data", lambda: calls.append("data")), ("foundation", boom),
                                  ("prepare", lambda: calls.append("prepare"))], record, Budget(60),
                                 progress=lambda: calls.append("saved"))
    steps = record["steps"]
    assert calls == ["data", "saved", "saved"]
    assert steps["data"]["status"] == "ok" and steps["foundation"] == {
        "status": "failed", "seconds": steps["foundation"]["seconds"], "error": "ValueError: no dataset"}
    assert steps["prepare"] == {"status": "skipped", "seconds": None, "error": "after foundation failed"}

    record = gpu_proof_pipeline.template()
    gpu_proof_pipeline.run_steps([("data", lambda: None)], record, Budget(0))
    assert record["steps"]["data"]["status"] == "skipped"


def test_last_step_reads_the_loops_log(tmp_path):
    assert gpu_proof_pipeline.last_step(tmp_path) is None
    (tmp_path / "out.log").write_text(
        "2026-01-01 00:00:00 | training kit-tiny-vit on 60 pairs\n"
        "2026-01-01 00:00:01 | step 2/3 epoch 1 loss 2.8 lr 1e-4 logit_scale 14.3 samples/s 9.1\n"
        "2026-01-01 00:00:02 | step 3/3 epoch 1 loss 2.7 lr 1e-4 logit_scale 14.3 samples/s 9.0\n")
    assert gpu_proof_pipeline.last_step(tmp_path) == 3


def test_the_pipeline_config_keeps_to_its_folder(tmp_path):
    cfg = gpu_proof_pipeline.pipeline_config(tmp_path, device="cpu", precision="auto", workers=0)
    assert cfg.profile == "smoke" and cfg.path("data_root") == tmp_path / "data"
    assert cfg.path("pretrained").is_relative_to(tmp_path) and cfg.path("runs_root") == tmp_path / "runs"


@pytest.fixture
def one_process_group(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=0, world_size=1)
    yield
    dist.destroy_process_group()


def test_the_collectives_check_passes_in_a_group_of_one(one_process_group):
    assert gpu_proof_pipeline.check_collectives(torch.device("cpu")) == {
        "all_reduce": True, "all_gather_object": True, "all_gather_with_grad": True}

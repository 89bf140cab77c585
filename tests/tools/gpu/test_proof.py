"""`make gpu-proof`: the CPU dry run through the Makefile writes a complete report, so a broken proof
never waits for a GPU; its options and table on their own."""
import json
import subprocess
import sys

import pytest
import torch

from lib.paths import REPO_ROOT
from tools.gpu import encode as gpu_proof_encode
from tools.gpu import pipeline as gpu_proof_pipeline
from tools.gpu import proof as gpu_proof
from tools.gpu import train as gpu_proof_train

# What the CPU cannot measure (memory, NCCL, the GPU), the README plan's figures (for ViT-bigG-14
# only) and "no error": the only nulls a complete dry-run report may hold.
CPU_NULLS = {"machine.cudnn", "machine.gpu", "machine.gpu_memory_gb", "encode.kit.peak_memory_gb",
             "encode.reference.peak_memory_gb", "encode.plan.kit_images_per_s",
             "encode.plan.reference_images_per_s_a100", "train.trim_text_saving.plan_saving",
             "train.settings.peak_memory_gb", "train.settings.plan_memory_gb",
             "train.settings.plan_samples_per_s", "pipeline.torchrun.nccl_version"}


def leaves(value, path=""):
    """(dotted path, value) of every leaf; list items share their list's path."""
    if isinstance(value, dict):
        for key, item in value.items():
            yield from leaves(item, f"{path}.{key}" if path else key)
    elif isinstance(value, list) and value and isinstance(value[0], dict):
        for item in value:
            yield from leaves(item, path)
    else:
        yield path, value


def shape(value):
    """The keys of a record, nested, without the values."""
    if isinstance(value, dict):
        return {key: shape(item) for key, item in value.items()}
    return None


@pytest.mark.slow
def test_the_cpu_dry_run_through_make_writes_a_complete_report(tmp_path):
    out = tmp_path / "gpu-proof.json"
    done = subprocess.run(["make", "-s", "gpu-proof", f"GPU_PY={sys.executable}",
                           f"ARGS=--cpu-dry-run --out {out} --work-dir {tmp_path}"],
                          cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    report = json.loads(out.read_text())
    assert report["dry_run"] and report["complete"]
    assert shape(report["encode"]) == shape(gpu_proof_encode.template())
    assert shape(report["pipeline"]) == shape(gpu_proof_pipeline.template())
    settings = report["train"]["settings"]
    assert len(settings) == 4 and shape({**report["train"], "settings": None}) == shape(
        {**gpu_proof_train.template(), "settings": None})
    assert all(shape(s) == shape(gpu_proof_train.setting_template(gpu_proof_train.Setting("", 1, False)))
               for s in settings)
    measured = {k: report[k] for k in ("machine", "setup", "encode", "train", "pipeline")}
    nulls = {path for path, value in leaves(measured)
             if value is None and not path.endswith((".error", ".output_tail"))}  # none: nothing failed
    assert nulls == CPU_NULLS
    assert all(report[part]["status"] == "ok" for part in gpu_proof.PARTS)
    assert report["encode"]["encode_speedup_vs_reference_gpu"] > 0
    assert report["encode"]["agreement"]["min_cosine"] > 0.999
    assert all(s["status"] == "ok" and s["samples_per_s"] > 0 for s in settings)
    pipeline = report["pipeline"]
    assert set(s["status"] for s in pipeline["steps"].values()) == {"ok"}
    assert "precision fp32" in pipeline["train_log"] and pipeline["submission_queries"] == 30
    assert pipeline["torchrun"]["backend"] == "gloo" and pipeline["torchrun"]["steps"] == 3
    assert all(pipeline["torchrun"]["collectives"].values())
    assert report["seconds"] < 90, "the dry run should take about 35 s on 2 shared cores (spec: under 60 s)"
    assert "encode_speedup_vs_reference_gpu" in done.stdout and "torchrun" in done.stdout
    assert not list(tmp_path.glob("kit-gpu-proof-*"))  # the scratch folder is gone


def test_options_default_to_the_gpu_sizes_or_the_dry_runs():
    full = gpu_proof.parse_args([])
    assert full.images == gpu_proof.FULL["images"] and full.ladder == (256, 128, 64)
    assert full.parts == list(gpu_proof.PARTS) and not full.cpu_dry_run
    budget = sum(gpu_proof.FULL[f"{part}_budget"] for part in gpu_proof.PARTS)
    assert budget <= 6 * 60, "the parts' budgets leave time for the set-up inside 8 minutes"
    dry = gpu_proof.parse_args(["--cpu-dry-run", "--parts", "encode", "--ladder", "8,4"])
    assert dry.images == gpu_proof.DRY["images"] and dry.parts == ["encode"] and dry.ladder == (8, 4)
    with pytest.raises(SystemExit):
        gpu_proof.parse_args(["--parts", "encode,bench"])


def test_the_table_shows_dashes_for_what_was_not_measured():
    report = {"dry_run": False, "seconds": None,
              "machine": {"gpu": "NVIDIA H200", "torch": "2.11.0", "cuda": "13.0", "open_clip": "3.3.0",
                          "open_clip_from": "installed", "git_commit": "abc"},
              "setup": {**gpu_proof.setup_template(), "model": "ViT-bigG-14"},
              "encode": gpu_proof_encode.template(),
              "train": gpu_proof_train.template(), "pipeline": gpu_proof_pipeline.template()}
    report["train"]["settings"].append({**gpu_proof_train.setting_template(
        gpu_proof_train.Setting("batch 256, checkpointing", 256, True)), "status": "out of memory",
        "error": "out of memory: OutOfMemoryError: CUDA out of memory", "plan_memory_gb": 58.4,
        "plan_samples_per_s": 93.0})
    text = gpu_proof.table(report)
    assert "ViT-bigG-14 on NVIDIA H200" in text and "encode_speedup_vs_reference_gpu" in text
    assert "batch 256, checkpointing" in text and "[out of memory]" in text and "58.4 GB" in text


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_without_a_gpu_it_says_so_and_suggests_the_dry_run(tmp_path, capsys):
    assert gpu_proof.main(["--out", str(tmp_path / "x.json")]) == 2
    assert "--cpu-dry-run" in capsys.readouterr().err
    assert not (tmp_path / "x.json").exists()


def test_a_failed_set_up_fails_its_parts_and_the_report_says_why(tmp_path, monkeypatch):
    def no_model(*args):
        raise RuntimeError("CUDA error: out of memory\nmore")

    monkeypatch.setattr(gpu_proof, "build_model", no_model)
    out = tmp_path / "report.json"
    assert gpu_proof.main(["--cpu-dry-run", "--parts", "encode,train", "--out", str(out),
                           "--work-dir", str(tmp_path)]) == 1
    report = json.loads(out.read_text())
    assert report["setup"]["error"] == "out of memory: RuntimeError: CUDA error: out of memory"
    assert report["encode"]["status"] == report["train"]["status"] == "failed"
    assert report["train"]["error"].startswith("set-up failed: out of memory")
    assert report["pipeline"]["status"] == "skipped" and not report["complete"]

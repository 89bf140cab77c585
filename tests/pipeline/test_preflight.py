"""The competition profile stops at once on a machine without its data, weights or GPU."""
import subprocess
import sys

import pytest
import torch

from lib import config
from lib.paths import REPO_ROOT
from lib.pipeline import preflight


def test_competition_without_data_names_what_is_missing_and_where(tmp_path):
    cfg = config.load("competition", data_root=str(tmp_path / "dataset"))
    found = "\n".join(preflight.problems(cfg))
    assert "train/train_label.txt" in found and "test/test_images" in found
    assert "data/README.md" in found
    if not torch.cuda.is_available():
        assert "needs a CUDA GPU" in found


def test_offline_pretrained_tag_says_how_to_bring_the_weights(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))  # an empty cache
    cfg = config.load("competition", data_root=str(tmp_path))
    found = "\n".join(preflight.weight_problems(cfg))
    assert "laion2b_s39b_b160k" in found and "pretrained" in found and "data/weights" in found


def test_a_missing_weights_file_is_named(tmp_path):
    cfg = config.load("competition", pretrained=str(tmp_path / "bigG.safetensors"))
    assert any("bigG.safetensors" in p for p in preflight.weight_problems(cfg))


@pytest.mark.slow  # seconds: a subprocess or a wait (make test runs it)
def test_make_reproduce_competition_stops_before_any_work_with_the_list(tmp_path):
    done = subprocess.run([sys.executable, "-m", "lib.pipeline", "--profile", "competition",
                           f"data_root={tmp_path}", f"runs_root={tmp_path / 'runs'}"],
                          cwd=REPO_ROOT, capture_output=True, text=True, timeout=120,
                          env={"PATH": "/usr/bin:/bin", "HF_HUB_OFFLINE": "1",
                               "HF_HOME": str(tmp_path / "hf"),
                               "PYTHONPATH": str(REPO_ROOT)})
    assert done.returncode == 1, done.stdout + done.stderr
    assert "cannot run on this machine yet" in done.stderr and "train_label.txt" in done.stderr
    assert not (tmp_path / "runs").exists(), "no run directory before the checks pass"

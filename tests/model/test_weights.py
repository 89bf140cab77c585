"""lib.model.weights: tags, files and local-dir folders, and what to do when weights are not here."""
from __future__ import annotations

import json

import huggingface_hub.constants
import open_clip
import pytest

from lib.model.checkpoints import ChecksumError, save_checkpoint
from lib.model.factory import create_model
from lib.model.weights import WeightsUnavailable, weights_in_folder
from tests.model import MICRO, same_weights, weights


def test_offline_tag_raises_weights_unavailable_with_instructions(tmp_path, monkeypatch):
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)  # never touches the network
    with pytest.raises(WeightsUnavailable) as err:
        create_model("ViT-B-32", "laion2b_s34b_b79k", cache_dir=str(tmp_path))
    message = str(err.value)
    for needed in ("laion2b_s34b_b79k", "laion/CLIP-ViT-B-32-laion2B-s34B-b79K", "data/weights/",
                   "pretrained: data/weights/", "pretrained_sha256", "HF_HUB_OFFLINE=0"):
        assert needed in message, needed


def test_hub_error_is_translated(monkeypatch):
    def unreachable(*args, **kwargs):
        raise ConnectionError("Max retries exceeded with url: huggingface.co")

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(open_clip, "download_pretrained", unreachable)
    with pytest.raises(WeightsUnavailable, match="download failed: ConnectionError") as err:
        create_model("RN50", "openai")
    assert "timm/resnet50_clip.openai" in str(err.value) and "data/weights/RN50_openai" in str(err.value)


def test_local_dir_folder(micro, tmp_path):
    folder = tmp_path / "exported"
    folder.mkdir()
    model_cfg = open_clip.get_model_config(MICRO)
    (folder / "open_clip_config.json").write_text(json.dumps(
        {"model_cfg": model_cfg, "preprocess_cfg": {"mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5]}}))
    digest = save_checkpoint(folder / "open_clip_model.safetensors", {"state_dict": micro.state_dict()})
    for name, pretrained in ((MICRO, f"local-dir:{folder}"), (f"local-dir:{folder}", "")):
        loaded, tokenizer, pre = create_model(name, pretrained, sha256=digest)
        assert same_weights(weights(loaded), weights(micro))
        assert tuple(pre["mean"]) == (0.5, 0.5, 0.5) and tokenizer(["x"]).shape == (1, 77)
    with pytest.raises(ChecksumError):
        create_model(MICRO, f"local-dir:{folder}", sha256="1" * 64)
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "open_clip_config.json").write_text(json.dumps({"model_cfg": model_cfg}))
    with pytest.raises(WeightsUnavailable, match="no weights file"):
        create_model(MICRO, f"local-dir:{empty}")


def test_local_dir_weights_file_preference(tmp_path):
    for name in ("zeta.pth", "alpha.bin", "beta.safetensors", "pytorch_model.bin", "notes.txt"):
        (tmp_path / name).write_bytes(b"x")
    assert weights_in_folder(tmp_path).name == "pytorch_model.bin"  # a preferred name first
    (tmp_path / "pytorch_model.bin").unlink()
    assert weights_in_folder(tmp_path).name == "beta.safetensors"  # then safetensors, bin, pth
    (tmp_path / "beta.safetensors").unlink()
    assert weights_in_folder(tmp_path).name == "alpha.bin"
    for name in ("alpha.bin", "zeta.pth"):
        (tmp_path / name).unlink()
    assert weights_in_folder(tmp_path) is None

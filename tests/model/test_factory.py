"""lib.model.factory: the kit's tiny configs, models from every weights source, verified first."""
from __future__ import annotations

import open_clip
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from lib import config
from lib.config import ConfigError
from lib.files import sha256_file
from lib.model.checkpoints import ChecksumError, load_checkpoint, save_checkpoint
from lib.model.factory import create_model, model_from_config
from lib.model.weights import WeightsUnavailable
from tests.model import MICRO, same_weights, weights


def test_kit_configs_are_registered_with_open_clip():
    models = open_clip.list_models()
    assert "kit-tiny-vit" in models and MICRO in models
    tiny = open_clip.get_model_config("kit-tiny-vit")
    assert tiny["vision_cfg"]["image_size"] == 64 and tiny["vision_cfg"]["patch_size"] == 8
    assert tiny["text_cfg"]["context_length"] == 77 and tiny["text_cfg"]["vocab_size"] == 49408


def test_random_init_gives_model_tokenizer_and_preprocess_cfg(micro):
    net, tokenizer, pre = create_model(MICRO, "", device="cpu")
    assert pre["size"] == (32, 32) and len(pre["mean"]) == 3
    tokens = tokenizer(["a person in a red jacket", "a white sedan"])
    assert tokens.shape == (2, 77)
    assert tokens[:, 0].tolist() == [49406, 49406] and tokens.argmax(dim=1).tolist() == [7, 4]  # SOT, EOT
    pixels = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    net.eval()
    with torch.no_grad():
        image_features, text_features, scale = net(pixels, tokens)
        assert image_features.shape == text_features.shape == (2, 64)
        torch.testing.assert_close(image_features, F.normalize(net.encode_image(pixels), dim=-1))
        torch.testing.assert_close(text_features, F.normalize(net.encode_text(tokens), dim=-1))
    assert float(scale) == pytest.approx(1 / 0.07)  # open_clip's initial logit scale, exp(log(1/0.07))
    assert not same_weights(weights(net), weights(micro))  # a fresh initialisation


def test_image_size_override():
    _, _, pre = create_model(MICRO, image_size=48)
    assert pre["size"] == (48, 48)


def test_ddp_module_prefix_safetensors_and_bare_state_dict(micro, tmp_path):
    ddp = tmp_path / "ddp.pt"
    ddp_state = {f"module.{k}": v for k, v in micro.state_dict().items()}
    save_checkpoint(ddp, {"epoch": 2, "state_dict": ddp_state})
    kit_st = tmp_path / "kit.safetensors"
    save_checkpoint(kit_st, {"state_dict": micro.state_dict()})
    plain_st = tmp_path / "plain.safetensors"  # as downloaded: no sidecar
    save_file({k: v.contiguous() for k, v in micro.state_dict().items()}, str(plain_st))
    bare = tmp_path / "bare.pt"
    torch.save(micro.state_dict(), bare)
    for path in (ddp, kit_st, plain_st, bare):  # the last two have no sidecar: their sha256 is given
        digest = "" if path in (ddp, kit_st) else sha256_file(path)
        loaded, _, _ = create_model(MICRO, str(path), sha256=digest)
        assert same_weights(weights(loaded), weights(micro)), path.name
    assert set(load_checkpoint(kit_st)["state_dict"]) == set(micro.state_dict())


def test_missing_file_and_unknown_model_are_explained():
    with pytest.raises(WeightsUnavailable, match="neither an existing file nor an open_clip tag"):
        create_model(MICRO, "/nonexistent/foundation.pt")
    with pytest.raises(ConfigError, match="kit-tiny-vit"):
        create_model("kit-no-such-model")


def test_model_from_config_resolves_relative_paths_and_checkpoint_override(micro, tmp_path, monkeypatch):
    monkeypatch.setattr("lib.paths.REPO_ROOT", tmp_path)
    digest = save_checkpoint(tmp_path / "data/weights/w.pt", {"state_dict": micro.state_dict()})
    cfg = config.load("smoke", model=MICRO, pretrained="data/weights/w.pt", pretrained_sha256=digest,
                      device="cpu", image_size=0)
    loaded, _, pre = model_from_config(cfg)
    assert same_weights(weights(loaded), weights(micro)) and pre["size"] == (32, 32)
    with pytest.raises(ChecksumError):
        model_from_config(cfg.replace(pretrained_sha256="2" * 64))
    # a run's checkpoint replaces `pretrained`; pretrained_sha256 belongs to the other file
    run_ckpt = tmp_path / "runs/r/checkpoints/epoch_1.pt"
    save_checkpoint(run_ckpt, {"epoch": 1, "state_dict": micro.state_dict()})
    loaded, _, _ = model_from_config(cfg, checkpoint="runs/r/checkpoints/epoch_1.pt")
    assert same_weights(weights(loaded), weights(micro))

"""lib.model: the kit's tiny configs, every weights source, verified atomic checkpoints, offline errors."""
from __future__ import annotations

import json

import huggingface_hub.constants
import open_clip
import pytest
import torch
from safetensors.torch import save_file

from lib import config, model as M

MICRO = "kit-micro-vit"


@pytest.fixture(scope="module")
def micro():
    torch.manual_seed(0)
    net, _, _ = M.create_model(MICRO)
    return net


def _state(net) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in net.state_dict().items()}


def _same_weights(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_kit_configs_are_registered_with_open_clip():
    models = open_clip.list_models()
    assert "kit-tiny-vit" in models and MICRO in models
    tiny = open_clip.get_model_config("kit-tiny-vit")
    assert tiny["vision_cfg"]["image_size"] == 64 and tiny["vision_cfg"]["patch_size"] == 8
    assert tiny["text_cfg"]["context_length"] == 77 and tiny["text_cfg"]["vocab_size"] == 49408


def test_random_init_gives_model_tokenizer_and_preprocess_cfg(micro):
    net, tokenizer, pre = M.create_model(MICRO, "", device="cpu")
    assert pre["size"] == (32, 32) and len(pre["mean"]) == 3
    tokens = tokenizer(["a person in a red jacket", "a white sedan"])
    assert tokens.shape == (2, 77)
    image_features, text_features, _ = net(torch.rand(2, 3, 32, 32), tokens)
    assert image_features.shape == text_features.shape == (2, 64)
    assert not _same_weights(_state(net), _state(micro))  # a fresh initialisation


def test_image_size_override_and_device():
    _, _, pre = M.create_model(MICRO, image_size=48)
    assert pre["size"] == (48, 48)
    assert M.resolve_device("cpu") == torch.device("cpu")
    assert M.resolve_device("auto").type in ("cpu", "cuda")


def test_open_clip_training_checkpoint_round_trip(micro, tmp_path):
    path = tmp_path / "epoch_1.pt"
    opt = torch.optim.AdamW(micro.parameters())
    digest = M.save_checkpoint(path, {"epoch": 1, "step": 10, "name": MICRO,
                                      "state_dict": micro.state_dict(), "optimizer": opt.state_dict()})
    assert (tmp_path / "epoch_1.pt.sha256").read_text() == f"{digest}  epoch_1.pt\n"
    assert digest == M.sha256_file(path)
    loaded, _, _ = M.create_model(MICRO, str(path), sha256=digest)
    assert _same_weights(_state(loaded), _state(micro))
    state = M.load_checkpoint(path, digest)
    assert state["epoch"] == 1 and state["name"] == MICRO and "optimizer" in state


def test_ddp_module_prefix_safetensors_and_bare_state_dict(micro, tmp_path):
    ddp = tmp_path / "ddp.pt"
    ddp_state = {f"module.{k}": v for k, v in micro.state_dict().items()}
    M.save_checkpoint(ddp, {"epoch": 2, "state_dict": ddp_state})
    kit_st = tmp_path / "kit.safetensors"
    M.save_checkpoint(kit_st, {"state_dict": micro.state_dict()})
    plain_st = tmp_path / "plain.safetensors"  # as downloaded: no sidecar
    save_file({k: v.contiguous() for k, v in micro.state_dict().items()}, str(plain_st))
    bare = tmp_path / "bare.pt"
    torch.save(micro.state_dict(), bare)
    for path in (ddp, kit_st, plain_st, bare):
        loaded, _, _ = M.create_model(MICRO, str(path))
        assert _same_weights(_state(loaded), _state(micro)), path.name
    assert set(M.load_checkpoint(kit_st)["state_dict"]) == set(micro.state_dict())


def test_checksum_refusals_name_the_file_and_both_values(micro, tmp_path):
    path = tmp_path / "w.pt"
    good = M.save_checkpoint(path, {"state_dict": micro.state_dict()})
    wrong = "0" * 64
    for call in (lambda: M.create_model(MICRO, str(path), sha256=wrong),
                 lambda: M.load_checkpoint(path, expected_sha256=wrong)):
        with pytest.raises(M.ChecksumError) as err:
            call()
        assert str(path) in str(err.value) and wrong in str(err.value) and good in str(err.value)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    bad = M.sha256_file(path)
    for call in (lambda: M.create_model(MICRO, str(path)), lambda: M.load_checkpoint(path)):
        with pytest.raises(M.ChecksumError) as err:
            call()
        message = str(err.value)
        assert str(path) in message and good in message and bad in message and "corrupt" in message
    with pytest.raises(M.ChecksumError):  # a checksum with nothing to check is a mistake, not ignored
        M.create_model(MICRO, "", sha256=good)


def test_atomic_save_keeps_the_previous_file_on_failure(micro, tmp_path, monkeypatch):
    path = tmp_path / "latest.pt"
    first = M.save_checkpoint(path, {"epoch": 1, "state_dict": micro.state_dict()})

    def dies_half_way(obj, f, *args, **kwargs):
        with open(f, "wb") as out:
            out.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", dies_half_way)
    with pytest.raises(OSError, match="disk full"):
        M.save_checkpoint(path, {"epoch": 2, "state_dict": micro.state_dict()})
    monkeypatch.undo()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["latest.pt", "latest.pt.sha256"]
    assert M.sha256_file(path) == first
    assert M.load_checkpoint(path)["epoch"] == 1
    M.save_checkpoint(path, {"epoch": 3, "state_dict": micro.state_dict()})
    assert M.load_checkpoint(path)["epoch"] == 3


def test_offline_tag_raises_weights_unavailable_with_instructions(tmp_path, monkeypatch):
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)  # never touches the network
    with pytest.raises(M.WeightsUnavailable) as err:
        M.create_model("ViT-B-32", "laion2b_s34b_b79k", cache_dir=str(tmp_path))
    message = str(err.value)
    for needed in ("laion2b_s34b_b79k", "laion/CLIP-ViT-B-32-laion2B-s34B-b79K", "data/weights/",
                   "pretrained: data/weights/", "pretrained_sha256", "HF_HUB_OFFLINE=0"):
        assert needed in message, needed


def test_hub_error_is_translated(monkeypatch):
    def unreachable(*args, **kwargs):
        raise ConnectionError("Max retries exceeded with url: huggingface.co")

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(open_clip, "download_pretrained", unreachable)
    with pytest.raises(M.WeightsUnavailable, match="download failed: ConnectionError") as err:
        M.create_model("RN50", "openai")
    assert "timm/resnet50_clip.openai" in str(err.value) and "data/weights/RN50_openai" in str(err.value)


def test_missing_file_and_unknown_model_are_explained():
    with pytest.raises(M.WeightsUnavailable, match="neither an existing file nor an open_clip tag"):
        M.create_model(MICRO, "/nonexistent/foundation.pt")
    with pytest.raises(ValueError, match="kit-tiny-vit"):
        M.create_model("kit-no-such-model")


def test_local_dir_folder(micro, tmp_path):
    folder = tmp_path / "exported"
    folder.mkdir()
    model_cfg = open_clip.get_model_config(MICRO)
    (folder / "open_clip_config.json").write_text(json.dumps(
        {"model_cfg": model_cfg, "preprocess_cfg": {"mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5]}}))
    digest = M.save_checkpoint(folder / "open_clip_model.safetensors", {"state_dict": micro.state_dict()})
    for name, pretrained in ((MICRO, f"local-dir:{folder}"), (f"local-dir:{folder}", "")):
        loaded, tokenizer, pre = M.create_model(name, pretrained, sha256=digest)
        assert _same_weights(_state(loaded), _state(micro))
        assert tuple(pre["mean"]) == (0.5, 0.5, 0.5) and tokenizer(["x"]).shape == (1, 77)
    with pytest.raises(M.ChecksumError):
        M.create_model(MICRO, f"local-dir:{folder}", sha256="1" * 64)
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "open_clip_config.json").write_text(json.dumps({"model_cfg": model_cfg}))
    with pytest.raises(M.WeightsUnavailable, match="no weights file"):
        M.create_model(MICRO, f"local-dir:{empty}")


def test_model_from_config_resolves_relative_paths_and_checkpoint_override(micro, tmp_path, monkeypatch):
    monkeypatch.setattr(M, "REPO_ROOT", tmp_path)
    digest = M.save_checkpoint(tmp_path / "data/weights/w.pt", {"state_dict": micro.state_dict()})
    cfg = config.load("smoke", model=MICRO, pretrained="data/weights/w.pt", pretrained_sha256=digest,
                      device="cpu", image_size=0)
    loaded, _, pre = M.model_from_config(cfg)
    assert _same_weights(_state(loaded), _state(micro)) and pre["size"] == (32, 32)
    with pytest.raises(M.ChecksumError):
        M.model_from_config(cfg.replace(pretrained_sha256="2" * 64))
    # a run's checkpoint replaces `pretrained`; pretrained_sha256 belongs to the other file
    run_ckpt = tmp_path / "runs/r/checkpoints/epoch_1.pt"
    M.save_checkpoint(run_ckpt, {"epoch": 1, "state_dict": micro.state_dict()})
    loaded, _, _ = M.model_from_config(cfg, checkpoint="runs/r/checkpoints/epoch_1.pt")
    assert _same_weights(_state(loaded), _state(micro))

"""The run parameters: profiles load, bad keys and types are refused with the valid keys listed."""
from pathlib import Path

import pytest
import yaml

from lib import config
from lib.config import ConfigError


@pytest.mark.parametrize("profile", ["demo", "smoke", "competition"])
def test_every_profile_loads(profile):
    cfg = config.load(profile)
    assert cfg.profile == profile
    assert cfg.stop_epoch <= cfg.schedule_epochs


def test_competition_profile_is_the_reference_recipe():
    cfg = config.load("competition")
    assert (cfg.model, cfg.pretrained) == ("ViT-bigG-14", "laion2b_s39b_b160k")
    assert (cfg.batch_size, cfg.lr, cfg.warmup_steps) == (25, 4e-7, 10000)
    assert (cfg.schedule_epochs, cfg.stop_epoch) == (30, 5)
    assert (cfg.beta1, cfg.beta2, cfg.eps, cfg.weight_decay) == (0.9, 0.98, 1e-6, 0.01)


def test_unknown_key_is_refused_with_the_valid_keys():
    with pytest.raises(ConfigError) as err:
        config.load("demo", learning_rate=1e-3)
    assert "learning_rate" in str(err.value) and "lr" in str(err.value) and "batch_size" in str(err.value)


def test_unknown_key_in_a_yaml_file_names_the_file(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text("profile: mine\nbatchsize: 3\n")
    with pytest.raises(ConfigError, match=r"mine\.yaml.*batchsize"):
        config.load(str(path))


@pytest.mark.parametrize(
    "key, value",
    [("batch_size", "64"), ("batch_size", 6.5), ("lr", "fast"), ("augment", "yes"), ("augment", 1),
     ("batch_size", True), ("augment_fields", "colour"), ("augment_fields", ["colour", 3])],
)
def test_wrong_types_are_refused(key, value):
    with pytest.raises(ConfigError, match=key):
        config.load("demo", **{key: value})


def test_int_is_accepted_where_a_float_is_declared():
    assert config.load("demo", lr=1).lr == 1.0


@pytest.mark.parametrize("key, value", [("precision", "fp8"), ("prompt_policy", "shout"),
                                        ("augment_fields", ["colour", "wheels"])])
def test_choices_are_checked(key, value):
    with pytest.raises(ConfigError, match=key):
        config.load("demo", **{key: value})


def test_colour_jitter_is_off_in_the_reference_recipe_and_checked():
    assert config.load("competition").color_jitter_prob == 0.0
    assert config.load("demo", color_jitter=[0, 0.4, 0, 0]).color_jitter == [0.0, 0.4, 0.0, 0.0]  # YAML ints
    for bad in ({"color_jitter": [0.3, 0.4, 0.3]}, {"color_jitter": [0.3, -0.1, 0.3, 0.0]},
                {"color_jitter": [0.3, 0.4, 0.3, 0.6]}, {"color_jitter_prob": 1.5}):
        with pytest.raises(ConfigError, match="color_jitter"):
            config.load("demo", **bad)


def test_foundation_pretraining_never_jitters():
    from lib.foundation import pretraining_config
    assert pretraining_config(config.load("demo", color_jitter_prob=0.8)).color_jitter_prob == 0.0


def test_stop_epoch_past_the_horizon_is_refused():
    with pytest.raises(ConfigError, match="stop_epoch"):
        config.load("demo", stop_epoch=9, schedule_epochs=8)


def test_missing_profile_lists_the_profiles():
    with pytest.raises(ConfigError, match="demo.*smoke|competition"):
        config.load("nope")


def test_cli_overrides_parse_as_yaml():
    over = config.parse_overrides(["lr=1e-5", "augment=false", "augment_fields=[colour, brand]", "run_name="])
    assert over == {"lr": "1e-5", "augment": False, "augment_fields": ["colour", "brand"], "run_name": ""}
    cfg = config.load("demo", **over)
    assert (cfg.lr, cfg.augment, cfg.augment_fields) == (1e-5, False, ["colour", "brand"])
    with pytest.raises(ConfigError, match="key=value"):
        config.parse_overrides(["lr"])
    with pytest.raises(ConfigError, match="lrr"):
        config.parse_overrides(["lrr=1"])


def test_save_and_load_saved_round_trip(tmp_path):
    cfg = config.load("smoke", lr=3e-5)
    config.save(cfg, tmp_path / "params.yaml", extra={"git_sha": "abc"})
    assert yaml.safe_load((tmp_path / "params.yaml").read_text())["_run"] == {"git_sha": "abc"}
    assert config.load_saved(tmp_path / "params.yaml") == cfg


def test_paths_resolve_against_the_repository_root():
    cfg = config.load("demo")
    assert cfg.path("data_root") == config.REPO_ROOT / "data" / "demo"
    assert config.load("demo", data_root="/abs").path("data_root") == Path("/abs")


def test_replace_validates():
    cfg = config.load("demo")
    assert cfg.replace(lr=2e-4).lr == 2e-4
    with pytest.raises(ConfigError):
        cfg.replace(lr="x")
    with pytest.raises(ConfigError, match="valid keys"):
        cfg.replace(nope=1)

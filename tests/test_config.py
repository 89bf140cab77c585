"""lib.config: profiles load, bad keys, types and ranges are refused with the key and what is allowed."""
from pathlib import Path

import pytest
import yaml

from lib import config
from lib.config import ConfigError
from lib.paths import REPO_ROOT


@pytest.mark.parametrize("profile", ["demo", "smoke", "competition"])
def test_every_profile_loads_with_what_its_file_says(profile):
    cfg = config.load(profile)
    assert cfg.profile == profile and cfg.stop_epoch <= cfg.schedule_epochs
    said = yaml.safe_load((config.CONFIG_DIR / f"{profile}.yaml").read_text())
    base = said.pop("extends", None)
    for key, value in said.items():
        assert getattr(cfg, key) == value, key
    if base:  # what the base says and this profile does not
        inherited = config.load(base)
        for key in set(config.differences(inherited)) - set(said) - {"profile"}:
            assert getattr(cfg, key) == getattr(inherited, key), key


def test_profiles_hold_only_what_differs_from_the_reference_recipe():
    defaults = config.Config()
    for path in config.CONFIG_DIR.glob("*.yaml"):
        said = yaml.safe_load(path.read_text())
        same = [k for k, v in said.items() if k not in ("profile", "extends") and getattr(defaults, k) == v]
        assert not same, f"{path.name} repeats defaults: {same}"


def test_competition_profile_is_the_reference_recipe():
    cfg = config.load("competition")
    assert (cfg.model, cfg.pretrained) == ("ViT-bigG-14", "laion2b_s39b_b160k")
    assert (cfg.batch_size, cfg.lr, cfg.warmup_steps) == (25, 4e-7, 10000)
    assert (cfg.schedule_epochs, cfg.stop_epoch) == (30, 5)
    assert (cfg.beta1, cfg.beta2, cfg.eps, cfg.weight_decay) == (0.9, 0.98, 1e-6, 0.01)
    # the reference's attribute-augmentation steps and its fixed epoch (docs/reference.md)
    assert (cfg.attribute_fields, cfg.augment_padded_images) == (["colour", "brand", "type"], False)
    assert (cfg.car_caption_form, cfg.augment_val, cfg.submit_epoch) == ("attributes", True, 5)


def test_the_demo_keeps_the_reference_steps_but_the_padding_its_ablation_measured():
    demo, competition = config.load("demo"), config.load("competition")
    keys = ("attribute_fields", "car_caption_form", "augment_val", "submit_epoch", "query_policy", "soup",
            "rerank")
    assert {k: getattr(demo, k) for k in keys} == {k: getattr(competition, k) for k in keys}
    assert (demo.augment_padded_images, demo.photometric_jitter_prob) == (True, 0.8)  # its departures


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
    [("batch_size", "64"), ("batch_size", 6.5), ("lr", "fast"), ("attribute_augmentation", "yes"),
     ("attribute_augmentation", 1),
     ("batch_size", True), ("attribute_fields", "colour"), ("attribute_fields", ["colour", 3])],
)
def test_wrong_types_are_refused(key, value):
    with pytest.raises(ConfigError, match=key):
        config.load("demo", **{key: value})


def test_int_is_accepted_where_a_float_is_declared():
    assert config.load("demo", lr=1).lr == 1.0


@pytest.mark.parametrize("key, value", [("precision", "fp8"), ("query_policy", "shout"),
                                        ("attribute_fields", ["colour", "wheels"]), ("rerank", "shuffle"),
                                        ("a3r_reciprocal", "both")])
def test_choices_are_checked(key, value):
    with pytest.raises(ConfigError, match=key):
        config.load("demo", **{key: value})


def test_photometric_jitter_is_off_in_the_reference_recipe_and_checked():
    assert config.load("competition").photometric_jitter_prob == 0.0
    cfg = config.load("demo", photometric_jitter=[0, 0.4, 0, 0])
    assert cfg.photometric_jitter == [0.0, 0.4, 0.0, 0.0]  # YAML ints
    for bad in ({"photometric_jitter": [0.3, 0.4, 0.3]}, {"photometric_jitter": [0.3, -0.1, 0.3, 0.0]},
                {"photometric_jitter": [0.3, 0.4, 0.3, 0.6]}, {"photometric_jitter_prob": 1.5}):
        with pytest.raises(ConfigError, match="photometric_jitter"):
            config.load("demo", **bad)


def test_foundation_pretraining_never_jitters():
    from lib.demo.foundation import pretraining_config
    assert pretraining_config(config.load("demo", photometric_jitter_prob=0.8)).photometric_jitter_prob == 0.0


def test_soups_are_off_in_the_reference_recipe_and_alphas_are_checked():
    cfg = config.load("competition")
    assert cfg.soup == "none" and cfg.wise_alphas[0] == 0.0 and cfg.wise_alphas[-1] == 1.0
    assert config.load("demo", soup="wise", wise_alphas=[0, 1]).wise_alphas == [0.0, 1.0]  # YAML ints
    for bad in ({"soup": "stew"}, {"wise_alphas": [0.5, 1.5]}, {"wise_alphas": [-0.1]}, {"wise_alphas": []}):
        with pytest.raises(ConfigError, match=next(iter(bad))):
            config.load("demo", **bad)


def test_stop_epoch_past_the_horizon_is_refused():
    with pytest.raises(ConfigError, match="stop_epoch"):
        config.load("demo", stop_epoch=9, schedule_epochs=8)


def test_missing_profile_lists_the_profiles():
    with pytest.raises(ConfigError, match="demo.*smoke|competition"):
        config.load("nope")


def test_cli_overrides_parse_as_yaml():
    over = config.parse_overrides(["lr=1e-5", "attribute_augmentation=false",
                                   "attribute_fields=[colour, brand]", "run_name="])
    assert over == {"lr": "1e-5", "attribute_augmentation": False, "attribute_fields": ["colour", "brand"],
                    "run_name": ""}
    cfg = config.load("demo", **over)
    assert (cfg.lr, cfg.attribute_augmentation, cfg.attribute_fields) == (1e-5, False, ["colour", "brand"])
    with pytest.raises(ConfigError, match="key=value"):
        config.parse_overrides(["lr"])
    with pytest.raises(ConfigError, match="lrr"):
        config.parse_overrides(["lrr=1"])


def test_to_yaml_and_load_saved_round_trip(tmp_path):
    cfg = config.load("smoke", lr=3e-5)
    (tmp_path / "params.yaml").write_text(config.to_yaml(cfg, {"git_sha": "abc"}))
    assert yaml.safe_load((tmp_path / "params.yaml").read_text())["_run"] == {"git_sha": "abc"}
    assert config.load_saved(tmp_path / "params.yaml") == cfg


def test_paths_resolve_against_the_repository_root():
    cfg = config.load("demo")
    assert cfg.path("data_root") == REPO_ROOT / "data" / "demo"
    assert config.load("demo", data_root="/abs").path("data_root") == Path("/abs")


def test_replace_validates():
    cfg = config.load("demo")
    assert cfg.replace(lr=2e-4).lr == 2e-4
    with pytest.raises(ConfigError):
        cfg.replace(lr="x")
    with pytest.raises(ConfigError, match="valid keys"):
        cfg.replace(nope=1)


def test_reranking_is_off_in_the_reference_recipe_and_its_knobs_are_checked():
    cfg = config.load("competition")
    assert cfg.rerank == "none" and config.load("demo").rerank == "none"
    assert (cfg.rerank_depth_car, cfg.rerank_depth_person, cfg.rerank_m, cfg.rerank_k) == (25, 50, 10, 10)
    assert (cfg.a3r_flip, cfg.a3r_adapted_query, cfg.a3r_reciprocal) == (True, True, "embedded")
    for key, bad in (("rerank_depth_car", 0), ("rerank_m", 0), ("rerank_k", 0), ("aqe_alpha", -1.0),
                     ("kreciprocal_lambda", 1.5), ("kreciprocal_lambda", -0.1), ("kreciprocal_k2", 0)):
        with pytest.raises(ConfigError, match=key):
            config.load("demo", **{key: bad})
    assert config.load("demo", rerank="kreciprocal", kreciprocal_lambda=1).kreciprocal_lambda == 1.0


def test_reranking_keeps_its_k_and_m_within_the_depth():
    assert config.load("demo", topk=30).topk == 30  # no re-ranking: the depths do not matter
    for method, key, value in (("a3r", "topk", 30), ("a3r", "rerank_m", 26), ("a3r", "rerank_k", 40),
                               ("kreciprocal", "kreciprocal_k2", 26), ("aqe", "rerank_m", 26)):
        with pytest.raises(ConfigError, match=f"re-ranks the first 25 candidates.*{key}={value}"):
            config.load("demo", rerank=method, **{key: value})
    assert config.load("demo", rerank="a3r", topk=30, rerank_depth_car=30).topk == 30
    assert config.load("demo", rerank="aqe", rerank_k=40).rerank_k == 40  # a knob aQE does not use

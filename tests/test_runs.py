"""Run directories: named from their parameters, never reused by accident, `latest` follows."""
import datetime as dt

import pytest

from lib import config, runs


def test_run_name_says_model_lr_and_batch():
    cfg = config.load("demo", lr=1e-4, batch_size=64)
    name = runs.default_run_name(cfg, now=dt.datetime(2026, 1, 2, 3, 4, 5))
    assert name == "2026_01_02-03_04_05-kit-tiny-vit-lr0.0001-b64"


def test_create_refuses_an_existing_run_and_points_latest(tmp_path):
    cfg = config.load("smoke", runs_root=str(tmp_path), run_name="a")
    run_dir = runs.create_run_dir(cfg)
    (run_dir / "out.log").write_text("x")
    assert (tmp_path / "latest").resolve() == run_dir.resolve()
    with pytest.raises(runs.RunDirError, match="already exists"):
        runs.create_run_dir(cfg)
    other = runs.create_run_dir(cfg.replace(run_name="b"))
    assert runs.resolve_run_dir(cfg) == other.resolve()


def test_resolve_without_any_run_says_what_to_do(tmp_path):
    cfg = config.load("smoke", runs_root=str(tmp_path))
    with pytest.raises(runs.RunDirError, match="01_prepare"):
        runs.resolve_run_dir(cfg)


def test_params_record_every_parameter_and_the_code_version(tmp_path):
    cfg = config.load("smoke", runs_root=str(tmp_path), run_name="p")
    path = runs.save_params(cfg, runs.create_run_dir(cfg))
    assert config.load_saved(path) == cfg
    assert "git_sha" in path.read_text() and "open_clip" in path.read_text()

"""Run directories: named from their parameters, never reused by accident, `latest` follows."""
import datetime as dt
import os

import pytest

from lib import config, runs


def test_run_name_says_model_lr_and_batch():
    cfg = config.load("demo", lr=1e-4, batch_size=64)
    name = runs.default_run_name(cfg, now=dt.datetime(2026, 1, 2, 3, 4, 5))
    assert name == "2026_01_02-03_04_05-kit-tiny-vit-lr0.0001-b64"


def test_create_refuses_an_existing_run_and_points_latest(tmp_path):
    cfg = config.load("smoke", runs_root=str(tmp_path), run_name="a")
    run_dir = runs.create_run(cfg)
    (run_dir / "out.log").write_text("x")
    assert (tmp_path / "latest").resolve() == run_dir.resolve()
    with pytest.raises(runs.RunDirError, match="already exists"):
        runs.create_run(cfg)
    other = runs.create_run(cfg.replace(run_name="b"))
    assert runs.find_run(tmp_path / "latest") == other.resolve()


def test_finding_no_run_says_what_to_do(tmp_path):
    with pytest.raises(runs.RunDirError, match="01_prepare"):
        runs.find_run(tmp_path / "latest")
    (tmp_path / "empty").mkdir()
    with pytest.raises(runs.RunDirError, match="params.yaml"):
        runs.find_run(tmp_path / "empty")


def test_params_record_every_parameter_and_the_code_version(tmp_path):
    cfg = config.load("smoke", runs_root=str(tmp_path), run_name="p")
    run_dir = runs.create_run(cfg)
    path = run_dir / runs.PARAMS
    assert runs.read_params(run_dir) == cfg
    assert "git_sha" in path.read_text() and "open_clip" in path.read_text()


def test_no_run_given_means_the_newest_latest_of_any_profile(tmp_path, monkeypatch):
    monkeypatch.setattr(runs, "DEFAULT_RUNS_ROOT", tmp_path)
    with pytest.raises(runs.RunDirError, match="no run under .* yet: make reproduce"):
        runs.find_run("")
    demo = runs.create_run(config.load("smoke", runs_root=str(tmp_path / "demo"), run_name="d"))
    smoke = runs.create_run(config.load("smoke", runs_root=str(tmp_path / "smoke"), run_name="s"))
    os.utime(tmp_path / "demo" / "latest", (1000, 1000), follow_symlinks=False)
    os.utime(tmp_path / "smoke" / "latest", (2000, 2000), follow_symlinks=False)
    assert runs.find_run("") == smoke.resolve()  # the link pointed last, whatever the profile
    os.utime(tmp_path / "demo" / "latest", (3000, 3000), follow_symlinks=False)
    assert runs.find_run("") == demo.resolve()


def test_a_file_is_not_a_run_and_the_way_on_names_the_run(tmp_path):
    (tmp_path / "README.md").write_text("x")
    with pytest.raises(runs.RunDirError, match="is a file, not a run folder"):
        runs.find_run(tmp_path / "README.md")
    assert runs.resume_command(runs.REPO_ROOT / "runs" / "demo" / "x") == "make reproduce RESUME=runs/demo/x"

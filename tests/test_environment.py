"""The environment files agree, so conda and pip users get the same pinned packages; the Makefile's
front door: every profile listed, nothing deleted without asking, an active conda environment used."""
import os
import re
import subprocess

import yaml

from lib.paths import REPO_ROOT


def _requirements() -> list[str]:
    lines = (REPO_ROOT / "requirements.txt").read_text().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


def test_environment_yml_installs_requirements_txt_with_python_311():
    env = yaml.safe_load((REPO_ROOT / "environment.yml").read_text())
    deps = env["dependencies"]
    assert "python=3.11" in deps
    pip_block = next(d["pip"] for d in deps if isinstance(d, dict) and "pip" in d)
    assert pip_block == ["-r requirements.txt"], "environment.yml must defer to requirements.txt"
    conda_pkgs = {re.split(r"[=<>]", d)[0] for d in deps if isinstance(d, str)}
    assert conda_pkgs <= {"python", "pip"}, f"packages pinned twice: {conda_pkgs - {'python', 'pip'}}"


def test_requirements_pin_the_known_good_trio_and_every_package():
    reqs = _requirements()
    for pin in ("torch==2.14.1", "torchvision==0.29.1", "open_clip_torch==3.3.0"):
        assert pin in reqs
    unpinned = [r for r in reqs if "==" not in r]
    assert not unpinned, f"unpinned requirements: {unpinned}"
    names = {r.split("==")[0].lower() for r in reqs}
    for needed in ("opencv-python-headless", "pandas", "papermill", "nbval", "pytest", "jupyter", "ipykernel",
                   "ruff", "import-linter"):
        assert needed in names


def _make(*args: str, cwd=REPO_ROOT, stdin=subprocess.DEVNULL) -> subprocess.CompletedProcess:
    return subprocess.run(["make", "-s", "-f", str(REPO_ROOT / "Makefile"), *args], cwd=cwd, stdin=stdin,
                          capture_output=True, text=True, timeout=60)


def test_make_help_lists_every_profile():
    profiles = sorted(p.stem for p in (REPO_ROOT / "configs").glob("*.yaml"))
    assert f"PROFILE={'|'.join(profiles)}|FILE.yaml" in _make("help").stdout


def test_make_clean_never_removes_a_run_and_clean_runs_asks_first(tmp_path):
    run = tmp_path / "runs" / "demo" / "2026_x"
    run.mkdir(parents=True)
    (run / "params.yaml").write_text("lr: 1\n")
    (tmp_path / "data" / "demo").mkdir(parents=True)
    assert _make("clean", cwd=tmp_path).returncode == 0
    assert run.is_dir() and not (tmp_path / "data" / "demo").exists()
    refused = _make("clean-runs", cwd=tmp_path)  # no one to answer: nothing is deleted
    assert refused.returncode != 0 and "kept runs/" in refused.stdout and run.is_dir()
    done = _make("clean-runs", "CONFIRM=yes", cwd=tmp_path)
    assert done.returncode == 0 and "deleted runs/ (1 run(s))" in done.stdout
    assert not (tmp_path / "runs").exists()


def test_an_active_conda_environment_of_the_kit_is_the_one_make_uses():
    dry = subprocess.run(["make", "-n", "setup"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=60,
                         env={**os.environ, "CONDA_DEFAULT_ENV": "fmc-track2-kit",
                              "CONDA_PREFIX": "/opt/conda/envs/kit"})
    assert "/opt/conda/envs/kit/bin/python -m pip install" in dry.stdout and ".venv" not in dry.stdout

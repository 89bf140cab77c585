"""The environment files agree, so conda and pip users get the same pinned packages."""
import re

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

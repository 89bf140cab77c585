"""The GPU machine's wheels: the pins, the completeness check, the offline install, open_clip's import."""
import importlib.metadata
import importlib.util
import os
import sys
import zipfile

import pytest

from lib.paths import REPO_ROOT
from tools.gpu import wheels as gpu_wheels


def make_wheel(folder, name, version, requires=(), python=">=3.9", module=None):
    """A minimal wheel: its METADATA (and a module `module` printing nothing) in the dist-info layout."""
    path = folder / f"{name}-{version}-py3-none-any.whl"
    meta = ["Metadata-Version: 2.1", f"Name: {name}", f"Version: {version}", f"Requires-Python: {python}"]
    meta += [f"Requires-Dist: {r}" for r in requires]
    with zipfile.ZipFile(path, "w") as z:
        z.writestr(f"{name}-{version}.dist-info/METADATA", "\n".join(meta) + "\n")
        if module:
            z.writestr(f"{module}/__init__.py", "VALUE = 42\n")
    return path


def test_the_pins_are_the_kits():
    """open_clip_torch as requirements.txt pins it; ftfy and wcwidth as the venv the tests run in has them."""
    pins = dict(line.split("==") for line in (REPO_ROOT / "requirements.txt").read_text().splitlines()
                if "==" in line and not line.startswith("#"))
    assert gpu_wheels.WHEELS["open_clip_torch"] == pins["open_clip_torch"]
    for name, version in gpu_wheels.WHEELS.items():
        assert importlib.metadata.version(name) == version, name


def test_check_finds_what_the_machine_would_miss(tmp_path):
    make_wheel(tmp_path, "open_clip_torch", "3.3.0", ["torch>=2.0", "ftfy", "timm>=1.0.17",
                                                      'pytest; extra == "test"'])
    make_wheel(tmp_path, "ftfy", "6.3.1", ["wcwidth"])
    make_wheel(tmp_path, "wcwidth", "0.9.4", ['backports.functools-lru-cache; python_version < "3.2"'])
    assert gpu_wheels.check(tmp_path) == []  # extras and other Pythons' needs do not count

    make_wheel(tmp_path, "ftfy", "6.3.1", ["wcwidth", "somethingelse>=1"])
    assert gpu_wheels.check(tmp_path) == [
        "ftfy-6.3.1-py3-none-any.whl requires somethingelse>=1: not on the GPU machine, no wheel for it"]

    make_wheel(tmp_path, "ftfy", "6.3.1", ["wcwidth"], python=">=3.13")
    make_wheel(tmp_path, "wcwidth", "0.2.0")
    problems = gpu_wheels.check(tmp_path)
    assert any("2 wheels" in p and p.startswith("wcwidth") for p in problems)
    assert any("Requires-Python >=3.13 excludes 3.12" in p for p in problems)


def test_install_without_pip_unpacks_and_use_site_reaches_children(tmp_path, monkeypatch):
    wheel = make_wheel(tmp_path, "kitprobe", "1.0", module="kitprobe_mod")
    target = tmp_path / "site"
    monkeypatch.setattr(gpu_wheels.importlib.util, "find_spec",
                        lambda name, *a: None if name == "pip" else importlib.util.find_spec(name, *a))
    gpu_wheels.install([wheel], target)
    monkeypatch.setattr(sys, "path", list(sys.path))
    monkeypatch.setenv("PYTHONPATH", "/somewhere")
    gpu_wheels.use_site(target)
    assert sys.path[0] == str(target)
    assert os.environ["PYTHONPATH"].split(os.pathsep) == [str(target), "/somewhere"]
    import kitprobe_mod

    assert kitprobe_mod.VALUE == 42
    monkeypatch.delitem(sys.modules, "kitprobe_mod")


def test_ensure_open_clip_says_present_here_and_asks_for_wheels_where_none_are(tmp_path, monkeypatch):
    assert gpu_wheels.ensure_open_clip() == "present"
    monkeypatch.setitem(sys.modules, "open_clip", None)  # `import open_clip` raises ImportError
    with pytest.raises(gpu_wheels.WheelsMissing, match="make gpu-wheels"):
        gpu_wheels.ensure_open_clip(wheel_dir=tmp_path, target=tmp_path / "site")


@pytest.mark.skipif(not list(gpu_wheels.WHEEL_DIR.glob("*.whl")), reason="no .whl/ here: make gpu-wheels")
def test_the_downloaded_wheels_are_complete_for_the_gpu_machine():
    assert gpu_wheels.check() == []

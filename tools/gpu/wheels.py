"""The packages `make gpu-proof` needs that the lent GPU machine lacks, carried there as wheels.

That machine (Python 3.12, x86-64, torch 2.11, no network) has torch, torchvision, timm, OpenCV,
numpy, pandas, matplotlib, tqdm, regex, huggingface-hub, safetensors, PyYAML and Pillow, and
nothing can be installed there from a registry. What the proof imports beyond them is
open_clip_torch and ftfy with its dependency wcwidth (wcwidth's wheel is built for CPython >= 3.10
on manylinux x86-64, the other two are pure Python):
    python -m tools.gpu.wheels download [--dir .whl]   (make gpu-wheels: here, where pip reaches PyPI)
    python -m tools.gpu.wheels check [--dir .whl]      (every Requires-Dist met by the machine or a wheel)
`ensure_open_clip` is the proof's first step there: when `import open_clip` fails it installs the
wheels into a temporary target and puts it on sys.path and PYTHONPATH (torchrun's children inherit it).
Only the standard library here: this module runs before anything that needs open_clip is imported.
"""
from __future__ import annotations

import argparse
import importlib
import importlib.util
import os
import re
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from lib.errors import KitError
from lib.paths import REPO_ROOT

WHEEL_DIR = REPO_ROOT / ".whl"  # ignored (.gitignore); the device tool's `carry: [".whl"]` takes it along
SITE = Path(tempfile.gettempdir()) / "kit-gpu-site"  # where the wheels are installed on the GPU machine
# open_clip_torch as requirements.txt pins it; ftfy and wcwidth as pip resolves them for it in the
# kit's venv (tests/tools/gpu/test_wheels.py checks both).
WHEELS = {"open_clip_torch": "3.3.0", "ftfy": "6.3.1", "wcwidth": "0.9.4"}
PYTHON = "3.12"  # the GPU machine's
PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64")
MACHINE_PACKAGES = frozenset({  # already on the GPU machine (the device tool's list), normalised names
    "torch", "torchvision", "timm", "opencv-python-headless", "numpy", "pandas", "matplotlib", "tqdm",
    "regex", "huggingface-hub", "safetensors", "pyyaml", "pillow", "packaging", "pip"})
MARKER_ENV = {"python_version": PYTHON, "python_full_version": f"{PYTHON}.0", "sys_platform": "linux",
              "platform_system": "Linux", "platform_machine": "x86_64", "os_name": "posix",
              "implementation_name": "cpython", "platform_python_implementation": "CPython", "extra": ""}


class WheelsMissing(KitError, RuntimeError):
    """open_clip cannot be imported and no usable wheels were carried."""


def normalise(name: str) -> str:
    """A distribution name as PEP 503 compares them (open_clip_torch == open-clip-torch)."""
    return re.sub(r"[-_.]+", "-", name).lower()


def wheel_name(path: Path) -> str:
    return normalise(path.name.split("-")[0])


def download(dest: Path = WHEEL_DIR) -> list[Path]:
    """pip download each wheel for the GPU machine's Python into `dest`; other versions of them there
    are removed first (two versions of one package stop the whole install)."""
    dest.mkdir(parents=True, exist_ok=True)
    versions = {normalise(n): v for n, v in WHEELS.items()}
    for old in dest.glob("*.whl"):
        if wheel_name(old) in versions and old.name.split("-")[1] != versions[wheel_name(old)]:
            old.unlink()
    platforms = [arg for p in PLATFORMS for arg in ("--platform", p)]
    for name, version in WHEELS.items():
        subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--disable-pip-version-check",
                        "--no-deps", "--only-binary=:all:", "--python-version", PYTHON,
                        "--implementation", "cp", *platforms, "-d", str(dest), f"{name}=={version}"],
                       check=True)
    return sorted(dest.glob("*.whl"))


def metadata(wheel: Path) -> str:
    """The wheel's METADATA file (Requires-Dist, Requires-Python)."""
    with zipfile.ZipFile(wheel) as z:
        name = next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))
        return z.read(name).decode("utf-8")


def check(wheel_dir: Path = WHEEL_DIR) -> list[str]:
    """What would be missing on the GPU machine: a wheel not there (or twice), a wheel that refuses its
    Python, a requirement (extras aside) that neither the machine nor a wheel provides. [] = complete."""
    try:
        from packaging.requirements import Requirement
        from packaging.specifiers import SpecifierSet
    except ImportError:  # a Python without it still has pip's copy (download needs pip anyway)
        from pip._vendor.packaging.requirements import Requirement
        from pip._vendor.packaging.specifiers import SpecifierSet

    wheels = sorted(wheel_dir.glob("*.whl"))
    have = [wheel_name(w) for w in wheels]
    problems = [f"{name}: {have.count(normalise(name))} wheels in {wheel_dir} (expected 1; make gpu-wheels)"
                for name in WHEELS if have.count(normalise(name)) != 1]
    provided = MACHINE_PACKAGES | set(have)
    for wheel in wheels:
        for line in metadata(wheel).splitlines():
            key, _, value = line.partition(": ")
            if key == "Requires-Python" and PYTHON + ".0" not in SpecifierSet(value):
                problems.append(f"{wheel.name}: Requires-Python {value} excludes {PYTHON}")
            if key == "Requires-Dist":
                req = Requirement(value)
                if req.marker is not None and not req.marker.evaluate(MARKER_ENV):
                    continue  # an extra, or another platform's
                if normalise(req.name) not in provided:
                    problems.append(f"{wheel.name} requires {value}: not on the GPU machine, no wheel for it")
    return problems


def install(wheels: list[Path], target: Path = SITE) -> None:
    """Install the wheels into `target`: with pip, offline; without pip, by unpacking them (a wheel
    without scripts or data files, as these are, is its site-packages layout)."""
    target.mkdir(parents=True, exist_ok=True)
    if importlib.util.find_spec("pip") is not None:
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--disable-pip-version-check",
                        "--no-index", "--no-deps", "--no-compile", "--no-cache-dir", "--upgrade",
                        "--target", str(target), *map(str, wheels)], check=True)
        return
    for wheel in wheels:
        with zipfile.ZipFile(wheel) as z:
            z.extractall(target)


def use_site(target: Path = SITE) -> None:
    """`target` first on this process's import path and on PYTHONPATH (for the processes it starts)."""
    if str(target) not in sys.path:
        sys.path.insert(0, str(target))
    parts = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p and p != str(target)]
    os.environ["PYTHONPATH"] = os.pathsep.join([str(target), *parts])
    importlib.invalidate_caches()


def ensure_open_clip(wheel_dir: Path = WHEEL_DIR, target: Path = SITE) -> str:
    """Make `import open_clip` work; says how: "present" or "installed from <wheel_dir> into <target>"."""
    try:
        import open_clip  # noqa: F401
        return "present"
    except ImportError as err:
        reason = f"{type(err).__name__}: {err}"
    wheels = sorted(wheel_dir.glob("*.whl"))
    if not wheels:
        raise WheelsMissing(f"open_clip cannot be imported here ({reason}) and {wheel_dir} holds no wheels: "
                            "run `make gpu-wheels` where pip reaches PyPI and bring that folder along")
    install(wheels, target)
    use_site(target)
    import open_clip  # noqa: F401,F811 - fails loudly if the wheels were not enough

    return f"installed from {wheel_dir} into {target}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.gpu.wheels",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("action", choices=("download", "check"))
    parser.add_argument("--dir", type=Path, default=WHEEL_DIR, help="the wheel folder (default .whl/)")
    args = parser.parse_args(argv)
    if args.action == "download":
        for wheel in download(args.dir):
            print(f"{args.dir / wheel.name}")
    problems = check(args.dir)
    for problem in problems:
        print(f"missing: {problem}", file=sys.stderr)
    if not problems:
        print(f"{args.dir}: complete for the GPU machine (Python {PYTHON}, x86-64): "
              f"{', '.join(f'{n} {v}' for n, v in WHEELS.items())}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())

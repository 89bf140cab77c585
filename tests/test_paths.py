"""lib.paths: stored paths are relative to the repository root when inside it, absolute otherwise."""
from pathlib import Path

from lib.paths import REPO_ROOT, portable, resolve


def test_portable_and_resolve_round_trip(tmp_path):
    inside = REPO_ROOT / "data" / "demo" / "x.jpg"
    assert portable(inside) == "data/demo/x.jpg" and resolve("data/demo/x.jpg") == inside
    assert portable(tmp_path / "y.jpg") == str(tmp_path / "y.jpg")
    assert resolve(str(tmp_path / "y.jpg")) == tmp_path / "y.jpg"
    assert (REPO_ROOT / "lib" / "paths.py").is_file() and isinstance(resolve("a"), Path)

"""The package layout is a rule: the import contracts hold, tests/ mirrors lib/ and tools/ module by
module, and no code loads a module of the kit by a string name (an import the contracts cannot see)."""
import re
import subprocess
import sys
from pathlib import Path

from lib.paths import REPO_ROOT

ENTRY_POINTS = {"__init__.py", "__main__.py"}  # a docstring; `python -m` running another module's main
TOP_LEVEL = {"config.py", "runs.py", "steps.py", "files.py", "paths.py", "progress.py", "errors.py",
             "__init__.py"}


def test_the_import_contracts_hold():
    done = subprocess.run([str(Path(sys.executable).with_name("lint-imports"))], cwd=REPO_ROOT,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    assert "0 broken" in done.stdout


def test_every_module_has_its_test_module():
    missing = []
    for package, tests in (("lib", Path("tests")), ("tools", Path("tests") / "tools")):
        for module in sorted((REPO_ROOT / package).rglob("*.py")):
            if module.name in ENTRY_POINTS:
                continue
            rel = module.relative_to(REPO_ROOT / package)
            expected = REPO_ROOT / tests / rel.parent / f"test_{module.name}"
            if not expected.is_file():
                missing.append(f"{module.relative_to(REPO_ROOT)} -> {expected.relative_to(REPO_ROOT)}")
    assert not missing, "\n".join(missing)


def test_the_top_of_lib_holds_the_parameters_and_files_layer_and_package_folders():
    top = {p.name for p in (REPO_ROOT / "lib").iterdir() if p.suffix == ".py"}
    assert top <= TOP_LEVEL, sorted(top - TOP_LEVEL)


def test_no_code_loads_a_module_of_the_kit_by_name():
    by_name = re.compile(r"importlib\.import_module\(|__import__\(|[\"'](?:lib|tools)\.[\w.]+:\w+[\"']")
    found = [str(p.relative_to(REPO_ROOT)) for package in ("lib", "tools")
             for p in (REPO_ROOT / package).rglob("*.py") if by_name.search(p.read_text(encoding="utf-8"))]
    assert not found, found


def test_no_module_level_getattr_reexports():
    found = [str(p.relative_to(REPO_ROOT)) for p in (REPO_ROOT / "lib").rglob("*.py")
             if "\ndef __getattr__(" in p.read_text(encoding="utf-8")]
    assert not found, found

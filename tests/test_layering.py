"""The package layout is a rule: the import contracts hold, and tests/ mirrors lib/ module by module."""
import subprocess
import sys
from pathlib import Path

from lib.paths import REPO_ROOT

# Entry points that only run another module's main (tested through their command lines).
NO_TEST_OF_THEIR_OWN = {"lib/labels.py", "lib/metrics.py", "lib/soup.py", "lib/submission.py",
                        "lib/train/__main__.py"}


def test_the_import_contracts_hold():
    done = subprocess.run([str(Path(sys.executable).with_name("lint-imports"))], cwd=REPO_ROOT,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    assert "0 broken" in done.stdout


def test_every_lib_module_has_its_test_module():
    missing = []
    for module in sorted((REPO_ROOT / "lib").rglob("*.py")):
        rel = module.relative_to(REPO_ROOT)
        if module.name == "__init__.py" or str(rel) in NO_TEST_OF_THEIR_OWN:
            continue
        expected = REPO_ROOT / "tests" / rel.parent.relative_to("lib") / f"test_{module.name}"
        if not expected.is_file():
            missing.append(f"{rel} -> {expected.relative_to(REPO_ROOT)}")
    assert not missing, "\n".join(missing)


def test_no_module_level_getattr_reexports():
    found = [str(p.relative_to(REPO_ROOT)) for p in (REPO_ROOT / "lib").rglob("*.py")
             if "\ndef __getattr__(" in p.read_text(encoding="utf-8")]
    assert not found, found

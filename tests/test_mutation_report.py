"""tests/mutation_report.py, the score of `make mutation`: every survivor killed or listed, nothing listed
in vain, GPU-only survivors apart from the equivalent ones."""
from __future__ import annotations

import json
import sys

import pytest

from lib.paths import REPO_ROOT

sys.path.insert(0, str(REPO_ROOT / "tests"))
import mutation_report  # noqa: E402  (a script beside the tests, not a package module)

NAME = "lib.eval.topk.x_topk__mutmut_{}"


@pytest.fixture
def workspace(tmp_path, monkeypatch):
    """A repository root with one mutated file whose mutants ended 1 (killed), 0 (survived), 33 (no
    tests) and 36 (timeout)."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "pyproject.toml").write_text('[tool.mutmut]\nonly_mutate = ["lib/eval/topk.py"]\n')
    meta = tmp_path / "mutants" / "lib" / "eval" / "topk.py.meta"
    meta.parent.mkdir(parents=True)
    codes = {NAME.format(1): 1, NAME.format(2): 0, NAME.format(3): 0, NAME.format(4): 0,
             NAME.format(5): 33, NAME.format(6): 36}
    meta.write_text(json.dumps({"exit_code_by_key": codes}))
    monkeypatch.setattr(mutation_report, "change", lambda name, source: "old  ->  new")
    return tmp_path


def test_survivors_are_counted_as_listed_and_the_rest_named(workspace):
    (workspace / "tests").mkdir()
    (workspace / "tests" / "mutation_equivalents.md").write_text(
        f"# x\n## lib/eval/topk.py\n- `{NAME.format(2)}`: why.\n## Not equivalent: killed only on a GPU\n"
        f"- `{NAME.format(3)}`: why.\n")
    equivalent, gpu_only = mutation_report.listed_equivalents()
    assert (equivalent, gpu_only) == ({NAME.format(2)}, {NAME.format(3)})
    rows, unexplained, surviving, timeouts = mutation_report.score_table(equivalent, gpu_only)
    assert rows == [{"module": "lib/eval/topk.py", "mutants": 6, "killed": 2, "equivalent": 1, "gpu": 1}]
    assert unexplained == [(NAME.format(4), "survived", "lib/eval/topk.py"),
                           (NAME.format(5), "no tests", "lib/eval/topk.py")]
    assert timeouts == [(NAME.format(6), "lib/eval/topk.py")]  # counted as killed, and named
    assert mutation_report.main([]) == 1


def test_a_listed_mutant_that_no_longer_survives_fails_the_report(workspace, capsys):
    (workspace / "tests").mkdir()
    listed = [NAME.format(k) for k in (1, 2, 3, 4)]  # 1 was killed: listed in vain
    (workspace / "tests" / "mutation_equivalents.md").write_text("".join(f"- `{n}`\n" for n in listed))
    assert mutation_report.main([]) == 1
    out = capsys.readouterr().out
    assert "name no surviving mutant" in out and f"  {NAME.format(1)}\n" in out
    assert "1 surviving mutants are neither killed nor listed" in out  # the one without tests


def test_the_repositorys_equivalents_name_mutants_of_the_mutated_files():
    equivalent, gpu_only = mutation_report.listed_equivalents(REPO_ROOT / "tests" / "mutation_equivalents.md")
    mutated = mutation_report.mutated_files(REPO_ROOT / "pyproject.toml")
    modules = {path[:-3].replace("/", ".") for path in mutated}
    assert equivalent and not equivalent & gpu_only
    assert {name.split(".x", 1)[0] for name in equivalent | gpu_only} <= modules

"""The score of `make mutation`, per module, from mutmut's results in mutants/ (run from the repository root).

For each file in `[tool.mutmut] only_mutate` (pyproject.toml): how many mutants mutmut made, how many the
tests killed, how many survivors tests/mutation_equivalents.md lists as equivalent (a change no observable
result can show) or as showing only on a GPU (its section "Not equivalent: ..."), and the score killed /
mutants. Every other survivor is listed with its change, and so is every entry of the equivalents file
that no longer names a survivor (stale). Exit 1 when there is either: no unexplained survivor is the rule,
not a goal. Mutants counted as killed because the tests ran past mutmut's time limit are named too.

`--markdown` prints the table as the README's rows instead of the plain table.
Not a test module (no `test_` prefix): `make mutation` runs it after `mutmut run`.
"""
from __future__ import annotations

import argparse
import json
import re
import sys
import tomllib
from pathlib import Path

EQUIVALENTS = Path("tests/mutation_equivalents.md")
MUTANT_NAME = re.compile(r"`(lib\.[^`\s]+__mutmut_\d+)`")
# mutmut's exit codes (mutmut.stats.status_by_exit_code): what counts as detected by the tests.
KILLED = {1, 3}  # a test failed (3: pytest's internal error, a crash of the mutant)
TIMEOUT = {36, -24, 24, 152, 255}  # the mutant made the tests run past mutmut's limit: detected
SURVIVED = {0}
NO_TESTS = {5, 33}  # no selected test reaches the mutated function


def mutated_files(pyproject: Path = Path("pyproject.toml")) -> list[str]:
    return tomllib.loads(pyproject.read_text(encoding="utf-8"))["tool"]["mutmut"]["only_mutate"]


def listed_equivalents(path: Path = EQUIVALENTS) -> tuple[set[str], set[str]]:
    """(equivalent, GPU only): the mutant names written in backticks in the equivalents file, those under
    a heading that starts "## Not equivalent" (changes that show only on a GPU) apart."""
    equivalent, gpu_only, section = set(), set(), ""
    for line in path.read_text(encoding="utf-8").splitlines() if path.exists() else []:
        if line.startswith("## "):
            section = line
        listed = gpu_only if section.startswith("## Not equivalent") else equivalent
        listed.update(MUTANT_NAME.findall(line))
    return equivalent, gpu_only


def results(source: str) -> dict[str, int | None]:
    """mutant name -> mutmut's exit code (None: not run) for one mutated file."""
    meta = Path("mutants") / (source + ".meta")
    if not meta.exists():
        raise SystemExit(f"no mutmut results for {source} ({meta} missing): run `make mutation` first")
    return json.loads(meta.read_text(encoding="utf-8"))["exit_code_by_key"]


def change(name: str, source: str) -> str:
    """The mutated line(s) of one mutant, `old -> new`, from mutmut's own diff."""
    from mutmut.mutation.diff_apply import get_diff_for_mutant

    lines = get_diff_for_mutant(name, path=source).splitlines()[2:]
    old = " ".join(line[1:].strip() for line in lines if line.startswith("-"))
    new = " ".join(line[1:].strip() for line in lines if line.startswith("+"))
    return f"{old}  ->  {new}"


def score_table(equivalents: set[str], gpu_only: set[str]) -> tuple[list[dict], list[tuple], set[str], list]:
    """(a row per module, the unexplained survivors (name, status, source), the names still surviving,
    the timed-out mutants (name, source))."""
    rows, unexplained, surviving, timeouts = [], [], set(), []
    for source in mutated_files():
        codes = results(source)
        row = {"module": source, "mutants": len(codes), "killed": 0, "equivalent": 0, "gpu": 0}
        for name, code in sorted(codes.items()):
            if code in KILLED or code in TIMEOUT:
                row["killed"] += 1
                if code in TIMEOUT:
                    timeouts.append((name, source))
                continue
            surviving.add(name)
            if code in SURVIVED and name in equivalents | gpu_only:
                row["equivalent" if name in equivalents else "gpu"] += 1
                continue
            status = ("survived" if code in SURVIVED else "no tests" if code in NO_TESTS
                      else "not run" if code is None else f"exit code {code}")
            unexplained.append((name, status, source))
        rows.append(row)
    return rows, unexplained, surviving, timeouts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--markdown", action="store_true", help="print the README table rows")
    args = parser.parse_args(argv)
    equivalents, gpu_only = listed_equivalents()
    rows, unexplained, surviving, timeouts = score_table(equivalents, gpu_only)
    total = {key: sum(row[key] for row in rows) for key in ("mutants", "killed", "equivalent", "gpu")}
    rows.append({"module": "all", **total})
    if args.markdown:
        print("| module | mutants | killed | equivalent (listed) | shows only on a GPU (listed) | score |")
        print("|---|---:|---:|---:|---:|---:|")
    else:
        print(f"{'module':<26}{'mutants':>8}{'killed':>8}{'equiv.':>8}{'GPU':>5}{'score':>9}"
              "   killed or listed")
    for row in rows:
        score = row["killed"] / row["mutants"] if row["mutants"] else 1.0
        explained = (row["killed"] + row["equivalent"] + row["gpu"]) / max(row["mutants"], 1)
        if args.markdown:
            name = f"`{row['module']}`" if row["module"] != "all" else "**all**"
            print(f"| {name} | {row['mutants']} | {row['killed']} | {row['equivalent']} | {row['gpu']} "
                  f"| {score:.1%} |")
        else:
            print(f"{row['module']:<26}{row['mutants']:>8}{row['killed']:>8}{row['equivalent']:>8}{row['gpu']:>5}"
                  f"{score:>9.1%}   {explained:.1%}")
    if timeouts:
        print(f"\n{len(timeouts)} of the killed mutants made the tests run past mutmut's time limit "
              "(a mutant that loops for ever; if it cannot, look at the run):")
        for name, source in timeouts:
            print(f"  {name}: {change(name, source)}")
    stale = sorted((equivalents | gpu_only) - surviving)
    if unexplained:
        print(f"\n{len(unexplained)} surviving mutants are neither killed nor listed in {EQUIVALENTS}:")
        for name, status, source in unexplained:
            print(f"  {name} [{status}]: {change(name, source)}")
    if stale:
        print(f"\n{len(stale)} entries of {EQUIVALENTS} name no surviving mutant (killed now, or renumbered "
              "after a change of the function): remove them or name the new mutant")
        for name in stale:
            print(f"  {name}")
    return 1 if unexplained or stale else 0


if __name__ == "__main__":
    sys.exit(main())

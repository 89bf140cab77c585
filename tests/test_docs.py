"""The README and docs/ name only what exists: every `python -m` module, every file path, every make
target; the README stays a quickstart; nothing speaks of how the kit was written."""
from __future__ import annotations

import importlib.util
import re
import subprocess

import pytest

from lib.paths import REPO_ROOT
from tools.study import ablation

PAGES = [REPO_ROOT / "README.md", REPO_ROOT / "data" / "README.md", REPO_ROOT / "lib" / "README.md",
         *sorted((REPO_ROOT / "docs").glob("*.md"))]
PATH = re.compile(r"`((?:lib|tests|configs|notebooks|docs|data|best-result-review)/[\w./-]*\w)`")
MODULE = re.compile(r"python3? -m ([a-z_][\w.]*)")
TARGET = re.compile(r"`make ([a-z-]+)")


def _text(page) -> str:
    return page.read_text(encoding="utf-8")


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(REPO_ROOT)))
def test_every_named_path_module_and_target_exists(page):
    text = _text(page)
    generated = ("data/demo", "data/dataset", "data/weights", "data/smoke", "data/rehearsal")  # made, brought
    reference = ("data/augmented_ViT-bigG-14_",)  # the A3R repository's files, cited by docs/reference.md
    missing = [p for p in PATH.findall(text) if not (REPO_ROOT / p).exists()
               and not p.startswith(generated + reference) and "<" not in p]
    assert not missing, f"{page.name} names files that do not exist: {missing}"
    modules = [m for m in MODULE.findall(text) if m.startswith(("lib", "tools"))]
    unknown = [m for m in modules if importlib.util.find_spec(m) is None]
    assert not unknown, f"{page.name} names modules that do not exist: {unknown}"
    makefile = _text(REPO_ROOT / "Makefile")
    targets = [t for t in TARGET.findall(text) if not re.search(rf"^{t}:", makefile, re.M)]
    assert not targets, f"{page.name} names make targets that do not exist: {targets}"


def test_the_readme_is_a_quickstart():
    lines = _text(REPO_ROOT / "README.md").splitlines()
    assert len(lines) <= 200
    for needed in ("make reproduce", "make test", "runs/demo/latest", "papermill", '"image_names"',
                   "make lab"):
        assert needed in "\n".join(lines), needed


def test_nothing_speaks_of_how_it_was_written():
    phrases = re.compile(r"session that wrote|no gpu was lent|device tool|give_back|was not reachable from|"
                         r"not available to measure", re.I)
    found = [(p.name, m.group(0)) for p in PAGES for m in phrases.finditer(_text(p))]
    assert not found, found


TABLE = re.compile(r"<!-- table: (docs/tables/[\w.-]+\.md) \(written by make ablation --publish; "
                   r"do not edit\) -->\n(.*?)\n<!-- /table -->", re.S)


def test_the_docs_ablation_tables_are_the_committed_files_and_their_csv():
    """Each table the docs show is its docs/tables/ file, which git tracks, and which is its CSV's
    figures as the ablation writes them (so the CSV's per-seed and per-query files are what it says)."""
    shown = [(page, match) for page in PAGES for match in TABLE.finditer(_text(page))]
    assert {match.group(1) for _, match in shown} >= {"docs/tables/world0-ablation.md",
                                                      "docs/tables/world1-confirm.md"}
    listed = subprocess.run(["git", "ls-files", "docs/tables"], cwd=REPO_ROOT, capture_output=True,
                            text=True)
    tracked = set(listed.stdout.split()) if listed.returncode == 0 else None
    for page, match in shown:
        path = REPO_ROOT / match.group(1)
        assert path.read_text(encoding="utf-8").rstrip("\n") == match.group(2), f"{page.name}: {path.name}"
        frame = ablation.read_table(path.with_suffix(".csv").read_text(encoding="utf-8"))
        assert ablation.markdown(frame) == match.group(2), f"{path.name} is not its CSV"
        stem = path.with_suffix("").name
        for companion in (path.with_suffix(".csv"), path.with_name(f"{stem}-seeds.csv"),
                          path.with_name(f"{stem}-per-query.csv.gz")):
            assert companion.is_file(), companion
            if tracked is not None:  # a checkout with its git history
                assert companion.relative_to(REPO_ROOT).as_posix() in tracked, f"{companion} is not committed"


def _github_anchor(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped (not - or _), spaces as -."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def test_every_link_to_a_section_names_a_heading_of_its_page():
    """A link's #anchor is the GitHub anchor of a heading in the page it points at."""
    assert _github_anchor("The reference's steps: `make x`") == "the-references-steps-make-x"
    broken = []
    for page in PAGES:
        for target, anchor in re.findall(r"\]\(([\w./-]*\.md)?#([\w-]+)\)", _text(page)):
            linked = (page.parent / target) if target else page
            headings = re.findall(r"^#+ (.+)$", _text(linked), re.M)
            if anchor not in {_github_anchor(h) for h in headings}:
                broken.append(f"{page.name} -> {target}#{anchor}")
    assert not broken, broken

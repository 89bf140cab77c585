"""The committed review record reruns to the same outputs (nbval, strict: every output compared), with
its own empty embedding cache so that everything is computed again; and a changed preprocessing is
caught even with a warm cache."""
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from lib.paths import REPO_ROOT

RECORD = REPO_ROOT / "best-result-review" / "05_quick_review.ipynb"


def test_review_record_exists_and_is_complete():
    assert RECORD.exists(), "no review record: make reproduce, then make promote RUN=runs/<name>"
    for name in ("params.yaml", "submission.json", "metrics.jsonl", "checksums.sha256", "checkpoint.pt"):
        assert (RECORD.parent / name).exists(), name


def nbval(repo: Path, cache: Path) -> subprocess.CompletedProcess:
    """Rerun repo's record notebook under nbval with the code of `repo` and the embedding cache `cache`."""
    env = {k: v for k, v in os.environ.items() if k != "MPLBACKEND"}  # figures as the record has them
    env.update(PYTHONPATH=str(repo), HF_HUB_OFFLINE="1", KIT_EMBEDDING_CACHE=str(cache))
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--nbval",
         str(repo / "best-result-review" / RECORD.name),
         "--nbval-sanitize-with", str(REPO_ROOT / "tests" / "nbval_sanitize.cfg"),
         "--nbval-current-env", "--nbval-cell-timeout", "600", "-o", "addopts="],
        cwd=repo, env=env, capture_output=True, text=True, timeout=900)


@pytest.fixture(scope="module")
def warm_cache(tmp_path_factory) -> Path:
    """The record's own embedding cache: empty before its rerun, warm after it."""
    return tmp_path_factory.mktemp("record-embeddings")


@pytest.mark.slow
def test_review_record_reruns_identically_under_nbval(warm_cache):
    assert not any(warm_cache.iterdir())
    done = nbval(REPO_ROOT, warm_cache)
    assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-2000:]
    assert list(warm_cache.glob("*.npy")), "the rerun encoded its galleries into its own cache"


@pytest.mark.slow
def test_a_changed_padding_fails_the_record_even_with_a_warm_cache(warm_cache, tmp_path):
    """With .cache filled, changing the padding fill in the code once passed this record test: the
    cache key did not cover the code that turns an image into a tensor."""
    if not list(warm_cache.glob("*.npy")):
        pytest.skip("needs the warm cache of test_review_record_reruns_identically_under_nbval")
    copy = tmp_path / "repo"
    for name in ("lib", "best-result-review"):
        shutil.copytree(REPO_ROOT / name, copy / name, ignore=shutil.ignore_patterns("__pycache__"))
    (copy / "data").symlink_to(REPO_ROOT / "data")  # the demo data the first rerun made
    transforms = copy / "lib" / "data" / "transforms.py"
    source = transforms.read_text()
    assert source.count("fill=pp.fill_color)") == 2
    transforms.write_text(source.replace("fill=pp.fill_color)", "fill=128)"))
    done = nbval(copy, warm_cache)
    assert done.returncode != 0, "the record passed with grey padding: stale embeddings were reused"
    assert "differ from the stored submission" in done.stdout or "queries differ" in done.stdout, (
        done.stdout[-4000:])

"""The committed review record reruns to the same outputs (nbval, strict: every output compared)."""
import os
import subprocess
import sys

import pytest

from lib.paths import REPO_ROOT

RECORD = REPO_ROOT / "best-result-review" / "05_quick_review.ipynb"


def test_review_record_exists_and_is_complete():
    assert RECORD.exists(), "no review record: make reproduce, then make promote RUN=runs/<name>"
    for name in ("params.yaml", "submission.json", "metrics.jsonl", "checksums.sha256", "checkpoint.pt"):
        assert (RECORD.parent / name).exists(), name


@pytest.mark.slow
def test_review_record_reruns_identically_under_nbval():
    env = {k: v for k, v in os.environ.items() if k != "MPLBACKEND"}  # figures as the record has them
    env.update(PYTHONPATH=str(REPO_ROOT), HF_HUB_OFFLINE="1")
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--nbval", str(RECORD),
         "--nbval-sanitize-with", str(REPO_ROOT / "tests" / "nbval_sanitize.cfg"),
         "--nbval-current-env", "--nbval-cell-timeout", "600", "-o", "addopts="],
        cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-2000:]

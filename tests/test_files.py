"""lib.files: a write is whole or not at all, and leaves no temporary file behind."""
import hashlib
import os

import pytest

from lib.files import atomic_write, atomic_write_text, sha256_file


def test_atomic_write_replaces_whole_files_with_mode_644(tmp_path):
    path = atomic_write_text(tmp_path / "sub" / "a.txt", "first\n")
    assert path.read_text() == "first\n" and (path.stat().st_mode & 0o777) == 0o644
    atomic_write(path, lambda f: f.write(b"second"))
    assert path.read_bytes() == b"second" and os.listdir(path.parent) == ["a.txt"]


def test_a_failed_write_keeps_the_old_file_and_no_temporary(tmp_path):
    path = atomic_write_text(tmp_path / "a.txt", "old")

    def dies(f):
        f.write(b"half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        atomic_write(path, dies)
    assert path.read_text() == "old" and os.listdir(tmp_path) == ["a.txt"]


def test_sha256_file(tmp_path):
    path = atomic_write_text(tmp_path / "x", "abc")
    assert sha256_file(path) == hashlib.sha256(b"abc").hexdigest()

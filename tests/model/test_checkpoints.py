"""lib.model.checkpoints: atomic saves with a sha256 sidecar, the same bytes for the same state, refusals."""
from __future__ import annotations

import pytest
import torch

from lib.files import sha256_file
from lib.model.checkpoints import ChecksumError, load_checkpoint, save_checkpoint, verify_file
from lib.model.factory import create_model
from tests.model import MICRO, same_weights, weights


def test_open_clip_training_checkpoint_round_trip(micro, tmp_path):
    path = tmp_path / "epoch_1.pt"
    opt = torch.optim.AdamW(micro.parameters())
    digest = save_checkpoint(path, {"epoch": 1, "step": 10, "name": MICRO,
                                      "state_dict": micro.state_dict(), "optimizer": opt.state_dict()})
    assert (tmp_path / "epoch_1.pt.sha256").read_text() == f"{digest}  epoch_1.pt\n"
    assert digest == sha256_file(path)
    loaded, _, _ = create_model(MICRO, str(path), sha256=digest)
    assert same_weights(weights(loaded), weights(micro))
    state = load_checkpoint(path, digest)
    assert state["epoch"] == 1 and state["name"] == MICRO and "optimizer" in state


def test_checksum_refusals_name_the_file_and_both_values(micro, tmp_path):
    path = tmp_path / "w.pt"
    good = save_checkpoint(path, {"state_dict": micro.state_dict()})
    wrong = "0" * 64
    for call in (lambda: create_model(MICRO, str(path), sha256=wrong),
                 lambda: load_checkpoint(path, expected_sha256=wrong)):
        with pytest.raises(ChecksumError) as err:
            call()
        assert str(path) in str(err.value) and wrong in str(err.value) and good in str(err.value)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    bad = sha256_file(path)
    for call in (lambda: create_model(MICRO, str(path)), lambda: load_checkpoint(path)):
        with pytest.raises(ChecksumError) as err:
            call()
        message = str(err.value)
        assert str(path) in message and good in message and bad in message and "corrupt" in message
    with pytest.raises(ChecksumError):  # a checksum with nothing to check is a mistake, not ignored
        create_model(MICRO, "", sha256=good)


def test_atomic_save_keeps_the_previous_file_on_failure(micro, tmp_path, monkeypatch):
    path = tmp_path / "latest.pt"
    first = save_checkpoint(path, {"epoch": 1, "state_dict": micro.state_dict()})

    def dies_half_way(obj, f, *args, **kwargs):
        f.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", dies_half_way)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(path, {"epoch": 2, "state_dict": micro.state_dict()})
    monkeypatch.undo()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["latest.pt", "latest.pt.sha256"]
    assert sha256_file(path) == first
    assert load_checkpoint(path)["epoch"] == 1
    save_checkpoint(path, {"epoch": 3, "state_dict": micro.state_dict()})
    assert load_checkpoint(path)["epoch"] == 3


def test_the_same_state_gives_the_same_bytes(micro, tmp_path):
    """The archive inside a .pt is named "archive", never after the temporary file of the atomic write,
    so equal weights give equal files (and equal cache keys)."""
    a = save_checkpoint(tmp_path / "a" / "one.pt", {"epoch": 1, "state_dict": micro.state_dict()})
    b = save_checkpoint(tmp_path / "b" / "two.pt", {"epoch": 1, "state_dict": micro.state_dict()})
    assert a == b
    c = save_checkpoint(tmp_path / "c.pt", {"epoch": 2, "state_dict": micro.state_dict()})
    assert c != a


def test_a_file_without_any_digest_is_refused_and_every_other_source_accepted(micro, tmp_path):
    """A checkpoint without its sidecar loaded silently even when damaged: now it needs a digest from
    somewhere: given, beside it, in its name (open_clip's downloads) or the hub cache's blob name."""
    bare = tmp_path / "bare.pt"
    torch.save({"state_dict": micro.state_dict()}, bare)
    digest = sha256_file(bare)
    with pytest.raises(ChecksumError, match=rf"bare\.pt has no sha256.*{digest}.*sha256sum bare\.pt"):
        load_checkpoint(bare)
    assert load_checkpoint(bare, expected_sha256=digest)["state_dict"].keys() == micro.state_dict().keys()
    named = tmp_path / f"vit-laion-{digest[:8]}.pt"
    named.write_bytes(bare.read_bytes())
    assert verify_file(named) == digest
    wrong = tmp_path / "vit-laion-0123abcd.pt"
    wrong.write_bytes(bare.read_bytes())
    with pytest.raises(ChecksumError, match="its name says 0123abcd"):
        verify_file(wrong)
    dated = tmp_path / "run-20261202.pt"  # digits only: a date, not a hash, so still no digest
    dated.write_bytes(bare.read_bytes())
    with pytest.raises(ChecksumError, match="no sha256"):
        verify_file(dated)
    blobs = tmp_path / "hub" / "blobs"
    blobs.mkdir(parents=True)
    (blobs / digest).write_bytes(bare.read_bytes())
    snapshot = tmp_path / "hub" / "open_clip_model.pt"
    snapshot.symlink_to(blobs / digest)
    assert verify_file(snapshot) == digest
    (blobs / digest).write_bytes(bare.read_bytes()[:-1] + b"x")
    with pytest.raises(ChecksumError, match="hub cache stored it"):
        verify_file(snapshot)


def test_mmap_load_gives_the_same_weights_and_still_verifies(micro, tmp_path):
    path = tmp_path / "epoch_1.pt"
    save_checkpoint(path, {"epoch": 1, "state_dict": micro.state_dict()})
    mapped = load_checkpoint(path, mmap=True)["state_dict"]
    assert same_weights(mapped, weights(micro))
    with pytest.raises(ChecksumError):
        load_checkpoint(path, expected_sha256="0" * 64, mmap=True)

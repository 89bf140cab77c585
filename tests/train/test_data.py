"""lib.train.data: a seeded, sharded, resumable epoch order; a sample's randomness independent of workers."""
from __future__ import annotations

import random

import pytest
import torch

from lib.data.transforms import train_transform
from lib.model.factory import create_model
from lib.train.data import Collate, EpochBatchSampler, PairDataset, read_table, train_loader
from tests.train import make_table


def test_epoch_order_is_seeded_sharded_and_resumable():
    full = list(EpochBatchSampler(18, 4, seed=0, epoch=1))
    assert len(full) == 4 and all(len(b) == 4 for b in full)  # 18 // 4, last partial batch dropped
    assert all(e == 1 for b in full for e, _ in b)
    assert list(EpochBatchSampler(18, 4, seed=0, epoch=1, start=2)) == full[2:]
    assert full == list(EpochBatchSampler(18, 4, seed=0, epoch=1))
    assert full != list(EpochBatchSampler(18, 4, seed=0, epoch=2))
    assert full != list(EpochBatchSampler(18, 4, seed=1, epoch=1))
    shards = [[i for b in EpochBatchSampler(18, 4, 0, 1, rank=r, world_size=2) for _, i in b] for r in (0, 1)]
    assert len(shards[0]) == len(shards[1]) == 8 and not set(shards[0]) & set(shards[1])


@pytest.mark.parametrize("jitter", [0.0, 0.8])
def test_augmentation_does_not_depend_on_workers(tmp_path, jitter):
    """The same (seed, epoch, index) gives the same crop (and colour jitter, whose coin is Python's
    `random`) in the main process and in workers."""
    table = read_table(make_table(tmp_path / "images", n=8))
    model, tokenizer, pp = create_model("kit-micro-vit", "")
    transform = train_transform(pp, photometric_jitter=(0.3, 0.4, 0.3, 0.0), photometric_jitter_prob=jitter)
    dataset, collate = PairDataset(table, transform, seed=3), Collate(tokenizer)
    before, py_before = torch.get_rng_state(), random.getstate()
    runs = [[b["images"] for b in train_loader(dataset, collate, EpochBatchSampler(8, 4, 3, 0), workers, 3)]
            for workers in (0, 2)]
    # the main process's generators are left alone
    assert torch.equal(torch.get_rng_state(), before) and random.getstate() == py_before
    assert all(torch.equal(a, b) for a, b in zip(*runs)) and len(runs[0]) == 2
    again = [b["images"] for b in train_loader(dataset, collate, EpochBatchSampler(8, 4, 3, 0), 0, 3)]
    assert torch.equal(again[0], runs[0][0])
    assert not torch.equal(dataset[(1, 0)][0], dataset[(0, 0)][0])  # another epoch, another crop

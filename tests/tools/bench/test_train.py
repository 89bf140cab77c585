"""tools.bench.train: the training race's arithmetic and its two sides' settings."""
from __future__ import annotations

import pytest

from tools.bench import train as bench_train


def test_samples_per_s_skips_the_warmup_steps():
    stamps = [0.0, 10.0, 11.0, 13.0]  # the first step (start-up) is slow and must not count
    assert bench_train.samples_per_s(stamps, batch_size=4, warmup=1) == pytest.approx(4 * 2 / 3.0)
    with pytest.raises(ValueError, match="optimizer steps"):
        bench_train.samples_per_s(stamps[:2], batch_size=4, warmup=1)


def test_kit_side_of_the_training_race_runs_open_clip_trains_augmentation():
    """open_clip_train is raced with its default augmentation: the kit may not carry extra work
    (the demo's photometric jitter) into the race, nor drop the optimiser settings both sides share."""
    spec = {"model": "kit-micro-vit", "batch_size": 8, "workers": 0, "seed": 0, "lr": 1e-4,
            "weight_decay": 0.1, "beta1": 0.9, "beta2": 0.98, "eps": 1e-6, "threads": 2}
    cfg = bench_train.kit_config(spec)
    assert cfg.photometric_jitter_prob == 0.0 and (cfg.lr, cfg.weight_decay, cfg.batch_size) == (1e-4, 0.1, 8)
    assert cfg.threads == 2  # the race's thread count reaches the kit's loop (its own config would pin 1)
    args = bench_train.peer_args({**spec, "csv": "x.csv", "workdir": "w"})
    assert "--aug-cfg" not in args

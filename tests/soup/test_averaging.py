"""lib.soup.averaging: the streaming mean and the interpolation are exact where they must be, refuse
weights that do not match (naming the key), and read checkpoints memory-mapped."""
from __future__ import annotations

import pytest
import torch

from lib.files import sha256_file
from lib.model.checkpoints import save_checkpoint
from lib.model.factory import create_model
from lib.soup import averaging
from lib.soup.averaging import AveragingError
from tests.model import MICRO, same_weights, weights


def micro_state(seed: int) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    return weights(create_model(MICRO)[0])


def save(path, state, epoch=1, name=MICRO, **extra):
    save_checkpoint(path, {"epoch": epoch, "name": name, "state_dict": state, **extra})
    return path


def test_mean_of_identical_checkpoints_is_the_checkpoint_bit_for_bit(tmp_path):
    state = micro_state(0)
    paths = [save(tmp_path / f"epoch_{n}.pt", state, n) for n in (1, 2, 3)]
    mean, ingredients = averaging.mean_of(paths, MICRO)
    assert same_weights(mean, state)
    assert [i.record() for i in ingredients] == [
        {"file": p.name, "sha256": sha256_file(p), "epoch": n} for n, p in zip((1, 2, 3), paths)]


def test_mean_of_different_checkpoints_is_their_mean(tmp_path):
    states = [micro_state(seed) for seed in (0, 1, 2)]
    opt = {"state": {}, "param_groups": []}  # a training checkpoint's optimizer is never needed
    paths = [save(tmp_path / f"epoch_{n}.pt", s, n, optimizer=opt) for n, s in enumerate(states, 1)]
    mean, _ = averaging.mean_of(paths, MICRO)
    for key, value in mean.items():
        if value.is_floating_point():
            expected = sum(s[key].double() for s in states) / 3
            torch.testing.assert_close(value, expected.float(), rtol=1e-6, atol=1e-7)
        else:
            assert torch.equal(value, states[0][key])
    assert mean.keys() == states[0].keys() and list(mean) == list(states[0])  # the same order: same bytes


def test_non_floats_come_from_the_first_and_equal_infinities_survive():
    a = {"w": torch.tensor([1.0, -float("inf"), 3.0]), "ids": torch.tensor([1, 2, 3])}
    b = {"w": torch.tensor([2.0, -float("inf"), 3.0]), "ids": torch.tensor([7, 8, 9])}
    mean = averaging.add_to_mean(averaging.float32(a), 1, b)
    assert torch.equal(mean["w"], torch.tensor([1.5, -float("inf"), 3.0]))
    assert torch.equal(mean["ids"], a["ids"])
    assert torch.equal(a["w"], torch.tensor([1.0, -float("inf"), 3.0]))  # not in place: a trial


def test_half_precision_checkpoints_are_averaged_in_float32_and_come_back_in_their_dtype(tmp_path):
    a = {"w": torch.tensor([1.0, 2.0], dtype=torch.float16)}
    b = {"w": torch.tensor([2.0, 5.0], dtype=torch.float16)}
    mean, _ = averaging.mean_of([save(tmp_path / "a.pt", a), save(tmp_path / "b.pt", b)], MICRO)
    assert mean["w"].dtype == torch.float16 and mean["w"].tolist() == [1.5, 3.5]


def test_interpolation_ends_are_exact_and_alpha_is_checked():
    start, end = micro_state(0), micro_state(1)
    assert same_weights(averaging.interpolate(start, end, 0.0), start)
    assert same_weights(averaging.interpolate(start, end, 1.0), end)
    half = averaging.interpolate(start, end, 0.5)
    torch.testing.assert_close(half["visual.proj"], (start["visual.proj"] + end["visual.proj"]) / 2)
    for alpha in (-0.1, 1.5):
        with pytest.raises(AveragingError, match=r"alpha=.* out of \[0, 1\]"):
            averaging.interpolate(start, end, alpha)


def test_mismatched_keys_shapes_and_models_are_refused_naming_them(tmp_path):
    state = micro_state(0)
    good = save(tmp_path / "epoch_1.pt", state)
    missing = save(tmp_path / "epoch_2.pt", {k: v for k, v in state.items() if k != "visual.proj"})
    with pytest.raises(AveragingError, match=r"epoch_2\.pt lacks key 'visual\.proj'"):
        averaging.mean_of([good, missing], MICRO)
    extra = save(tmp_path / "epoch_3.pt", {**state, "head.bias": torch.zeros(3)})
    with pytest.raises(AveragingError, match=r"epoch_3\.pt has an extra key 'head\.bias'"):
        averaging.mean_of([good, extra], MICRO)
    wider = save(tmp_path / "epoch_4.pt", {**state, "visual.proj": torch.zeros(3, 3)})
    with pytest.raises(AveragingError, match=r"'visual\.proj' is torch\.float32 \(3, 3\)"):
        averaging.mean_of([good, wider], MICRO)
    other = save(tmp_path / "epoch_5.pt", state, name="ViT-B-32")
    with pytest.raises(AveragingError, match="holds a ViT-B-32 model, not model=kit-micro-vit"):
        averaging.mean_of([good, other], MICRO)
    with pytest.raises(AveragingError, match="lacks key"):
        averaging.interpolate(state, {k: v for k, v in state.items() if k != "visual.proj"}, 0.5)

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


def test_half_precision_interpolation_is_worked_in_float32_and_rounded_once():
    """alpha 0.3 between float16 4 and 17: 0.7 * 4 + 0.3 * 17 = 7.9, rounded once to float16 (steps of
    1/256 between 4 and 8): 2022/256 = 7.8984375. Rounding either product to float16 first (0.7 * 4 ->
    2.80078125) would land on 7.90234375. Integer buffers are the start's, in the start's key order."""
    start = {"ids": torch.tensor([1, 2, 3]), "w": torch.tensor([4.0, 1.0], dtype=torch.float16)}
    end = {"ids": torch.tensor([7, 8, 9]), "w": torch.tensor([17.0, 1.0], dtype=torch.float16)}
    mixed = averaging.interpolate(start, end, 0.3)
    assert list(mixed) == ["ids", "w"] and torch.equal(mixed["ids"], start["ids"])
    assert mixed["w"].dtype == torch.float16 and mixed["w"].tolist() == [7.8984375, 1.0]


def test_interpolation_at_alpha_1_is_the_end_bit_for_bit_and_a_mismatch_names_the_fine_tuned_weights():
    """alpha 1 copies the fine-tuned weights, a -0.0 included (0 * 0.5 + -0.0 would make it +0.0)."""
    mixed = averaging.interpolate({"w": torch.tensor([0.5, 2.0])}, {"w": torch.tensor([-0.0, 3.0])}, 1.0)
    assert mixed["w"].tolist() == [0.0, 3.0] and torch.signbit(mixed["w"]).tolist() == [True, False]
    with pytest.raises(AveragingError) as refused:
        averaging.interpolate({"w": torch.zeros(2), "b": torch.zeros(1)}, {"w": torch.zeros(2)}, 0.5)
    assert str(refused.value) == ("the fine-tuned weights lacks key 'b': not the same model as the weights "
                                  "it is averaged with")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_weights_on_the_gpu_are_averaged_and_interpolated_on_the_cpu():
    """Weights still on the GPU (a model's state_dict) are averaged and interpolated in host memory:
    the same numbers as from the CPU copies, on the CPU."""
    start, end = micro_state(0), micro_state(1)
    gpu_start, gpu_end = ({k: v.cuda() for k, v in s.items()} for s in (start, end))
    copied = averaging.float32(gpu_start)
    assert {v.device.type for v in copied.values()} == {"cpu"} and same_weights(copied, start)
    on_gpu = averaging.interpolate(gpu_start, gpu_end, 0.3)
    assert {v.device.type for v in on_gpu.values()} == {"cpu"}
    assert same_weights(on_gpu, averaging.interpolate(start, end, 0.3))
    mean = averaging.add_to_mean(averaging.float32(start), 1, gpu_end)
    assert {v.device.type for v in mean.values()} == {"cpu"}
    assert same_weights(mean, averaging.add_to_mean(averaging.float32(start), 1, end))


def test_a_mean_of_nothing_is_refused_in_words():
    with pytest.raises(AveragingError) as refused:
        averaging.mean_of([], MICRO)
    assert str(refused.value) == "no checkpoints to average"


def test_double_precision_checkpoints_are_averaged_in_float32_and_come_back_in_float64(tmp_path):
    """The arithmetic is float32 whatever the checkpoints hold: 1 + 2**-30 is 1 in float32 (23 bits
    after the point), so the mean of 1 + 2**-30 and 1 is 1 in either order, and that of 3 and 4 is 3.5."""
    a = {"w": torch.tensor([1.0 + 2**-30, 1.0, 3.0], dtype=torch.float64)}
    b = {"w": torch.tensor([1.0, 1.0 + 2**-30, 4.0], dtype=torch.float64)}
    mean, _ = averaging.mean_of([save(tmp_path / "a.pt", a), save(tmp_path / "b.pt", b)], MICRO)
    assert mean["w"].dtype == torch.float64 and mean["w"].tolist() == [1.0, 1.0, 3.5]


def test_an_in_place_mean_replaces_the_tensors_of_the_dict_it_was_given():
    """mean_of's one copy of the weights: with inplace the dict passed in is the one updated (1 and 3
    make 2); without, it is left as it was (a greedy soup's trial)."""
    mean = averaging.float32({"w": torch.tensor([1.0])})
    trial = averaging.add_to_mean(mean, 1, {"w": torch.tensor([3.0])})
    assert trial is not mean and mean["w"].tolist() == [1.0] and trial["w"].tolist() == [2.0]
    updated = averaging.add_to_mean(mean, 1, {"w": torch.tensor([3.0])}, inplace=True)
    assert updated is mean and mean["w"].tolist() == [2.0]


def test_only_float_tensors_go_back_to_the_recorded_dtype():
    state = {"w": torch.tensor([1.5]), "ids": torch.tensor([7], dtype=torch.int32)}
    back = averaging.restore_dtypes(state, {"w": torch.float16, "ids": torch.int64})
    assert back["w"].dtype == torch.float16 and back["w"].tolist() == [1.5]
    assert back["ids"] is state["ids"]


def test_weights_that_do_not_match_are_refused_with_the_whole_reason():
    """Keys, shapes and float-ness must match (a float16 copy of float32 weights, or int32 ids for
    int64, may be averaged); each refusal names the file, the key and what differs."""
    reference = {"w": torch.zeros(2), "ids": torch.tensor([1, 2])}
    averaging.check_compatible(reference, {"w": torch.zeros(2, dtype=torch.float16),
                                           "ids": torch.tensor([1, 2], dtype=torch.int32)}, "b.pt")
    unlike = "not the same model as the weights it is averaged with"
    for other, reason in (
            ({"w": torch.zeros(2)}, f"b.pt lacks key 'ids': {unlike}"),
            ({**reference, "x": torch.zeros(1)}, f"b.pt has an extra key 'x': {unlike}"),
            ({**reference, "w": torch.zeros(3)},
             f"b.pt: 'w' is torch.float32 (3,), not torch.float32 (2,): {unlike}"),
            ({**reference, "ids": torch.tensor([1.0, 2.0])},
             f"b.pt: 'ids' is torch.float32 (2,), not torch.int64 (2,): {unlike}")):
        with pytest.raises(AveragingError) as refused:
            averaging.check_compatible(reference, other, "b.pt")
        assert str(refused.value) == reason


def test_a_checkpoint_is_read_with_its_digest_and_epoch_or_refused_in_words(tmp_path):
    """A checkpoint without a sidecar (saved by torch.save, its sha256 in its name, hub style) is recorded
    with its file's sha256; one that names no model is taken, one of another model or without a
    state_dict is refused saying so."""
    state = {"w": torch.tensor([1.0])}
    torch.save({"state_dict": state, "epoch": 3}, tmp_path / "saved.pt")
    bare = tmp_path / f"epoch_3-{sha256_file(tmp_path / 'saved.pt')}.pt"
    (tmp_path / "saved.pt").rename(bare)
    weights_read, ingredient = averaging.read_weights(bare, MICRO)
    assert same_weights(weights_read, state)
    assert ingredient.record() == {"file": bare.name, "sha256": sha256_file(bare), "epoch": 3}
    other = save(tmp_path / "other.pt", state, name="ViT-B-32")
    with pytest.raises(AveragingError) as refused:
        averaging.read_weights(other, MICRO)
    assert str(refused.value) == f"{other} holds a ViT-B-32 model, not model={MICRO}: not this run's weights"
    no_weights = tmp_path / "no_weights.pt"
    save_checkpoint(no_weights, {"name": MICRO, "weights": state})
    with pytest.raises(AveragingError) as refused:
        averaging.read_weights(no_weights, MICRO)
    assert str(refused.value) == f"{no_weights} holds no state_dict: not a checkpoint of this kit"

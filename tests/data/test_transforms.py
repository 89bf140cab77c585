"""lib.data.transforms: pad then open_clip's transform; the two-stage cut equals the whole, bit for bit."""
from __future__ import annotations

import pickle
import random
import warnings

import numpy as np
import open_clip
import pytest
import torch
from open_clip.transform import PreprocessCfg
from PIL import Image

from lib.data import transforms

RNG = np.random.default_rng(0)


def noise(h, w, c=3):
    return RNG.integers(0, 256, (h, w, c), dtype=np.uint8)


MEAN, STD = (0.5, 0.25, 0.125), (0.5, 0.25, 0.5)


def cfg(size=64, **kw):
    return PreprocessCfg(size=size, mean=MEAN, std=STD, **kw)


def normalised(value):
    return [(value - m) / s for m, s in zip(MEAN, STD)]


@pytest.mark.parametrize("make", [transforms.eval_transform, transforms.train_transform])
def test_transform_shape_dtype_and_normalisation_come_from_the_cfg(make):
    t = make(cfg())
    out = t(np.full((30, 50, 3), 255, np.uint8))
    assert out.shape == (3, 64, 64) and out.dtype == torch.float32
    grey = t(np.full((40, 40, 3), 102, np.uint8))  # square: no padding, one grey value everywhere
    expected = torch.tensor(normalised(102 / 255)).view(3, 1, 1).expand(3, 64, 64)
    torch.testing.assert_close(grey, expected, atol=1e-3, rtol=0)


@pytest.mark.parametrize("shape", [(16, 64), (20, 100), (64, 16), (30, 300)])
def test_eval_transform_pads_instead_of_cropping(shape):
    """A wide (tall) white image on black: the padding survives as black rows (columns)."""
    out = transforms.eval_transform(cfg())(np.full(shape + (3,), 255, np.uint8))
    if shape[0] > shape[1]:  # tall: look at columns instead of rows
        out = out.transpose(1, 2)
    black = torch.tensor(normalised(0.0)).view(3, 1).expand(3, 64)
    white = torch.tensor(normalised(1.0)).view(3, 1).expand(3, 64)
    torch.testing.assert_close(out[:, 0, :], black, atol=1e-3, rtol=0)  # top (left) padding
    torch.testing.assert_close(out[:, -1, :], black, atol=1e-3, rtol=0)  # bottom (right) padding
    torch.testing.assert_close(out[:, 32, :], white, atol=2e-2, rtol=0)  # the content, not cropped


def test_train_transform_uses_scale_and_keeps_the_padding():
    t = transforms.train_transform(cfg(), scale=(0.9, 1.0))
    crops = [s for s in t.inner.transforms if type(s).__name__ == "RandomResizedCrop"]
    assert len(crops) == 1 and tuple(crops[0].scale) == (0.9, 1.0) and tuple(crops[0].size) == (64, 64)
    black = torch.tensor(normalised(0.0)).view(3, 1).expand(3, 64)
    torch.manual_seed(0)
    for _ in range(10):  # a crop of >= 90% of a 64² square starts within a few pixels of the top
        out = t(np.full((16, 64, 3), 255, np.uint8))
        assert out.shape == (3, 64, 64)
        torch.testing.assert_close(out[:, 0, :], black, atol=1e-3, rtol=0)
    assert tuple(transforms.train_transform(cfg(), scale=(0.5, 1.0)).inner.transforms[0].scale) == (0.5, 1.0)


def test_eval_transform_is_open_clips_own_after_padding():
    img = noise(48, 48)  # already square: pad is a no-op, so the result must be open_clip's exactly
    ours = transforms.eval_transform(cfg(size=32))(img)
    theirs = open_clip.transform.image_transform_v2(cfg(size=32), is_train=False)(Image.fromarray(img))
    torch.testing.assert_close(ours, theirs)


def test_transforms_accept_the_models_preprocess_dict_and_pickle():
    as_model_has_it = {"size": (32, 32), "mean": MEAN, "std": STD, "interpolation": "bicubic",
                       "resize_mode": "shortest", "fill_color": 0, "mode": "RGB"}
    t = transforms.eval_transform(as_model_has_it)
    assert t(noise(10, 30)).shape == (3, 32, 32)
    sized = transforms.eval_transform({"image_size": 24, "mean": MEAN, "std": STD})
    assert sized(noise(9, 5)).shape == (3, 24, 24)
    t2 = pickle.loads(pickle.dumps(transforms.train_transform(as_model_has_it)))
    assert t2(noise(10, 30)).shape == (3, 32, 32)
    with pytest.raises(ValueError, match="RGB"):
        t(noise(10, 10, 4))


JITTER = dict(photometric_jitter=(0.3, 0.4, 0.3, 0.0), photometric_jitter_prob=0.8)


@pytest.mark.parametrize("shape", [(48, 48), (10, 30), (37, 11)])
@pytest.mark.parametrize("kind", ["eval", "train", "train+jitter"])
def test_two_stage_batch_equals_the_per_image_transform(shape, kind):
    """Workers send uint8, the batch is normalised once: the result must not change by one bit,
    and a random crop (and colour jitter) must draw the same numbers as the whole transform does."""
    extra = JITTER if kind == "train+jitter" else {}
    split = (transforms.eval_two_stage(cfg(size=32)) if kind == "eval"
             else transforms.train_two_stage(cfg(size=32), (0.5, 1.0), **extra))
    whole = (transforms.eval_transform(cfg(size=32)) if kind == "eval"
             else transforms.train_transform(cfg(size=32), (0.5, 1.0), **extra))
    imgs = [noise(*shape), noise(*shape[::-1]), noise(*shape)]
    sent, expected = [], []
    for i, img in enumerate(imgs):
        torch.manual_seed(i), random.seed(i)
        sent.append(split.to_uint8(img))
        torch.manual_seed(i), random.seed(i)
        expected.append(whole(img))
    sent = torch.stack(sent)
    assert sent.dtype == torch.uint8 and sent.shape == (3, 3, 32, 32)
    assert torch.equal(split.normalise(sent), torch.stack(expected))


def test_photometric_jitter_is_open_clips_colour_jitter_and_only_when_asked():
    from open_clip.transform import color_jitter
    plain = transforms.train_transform(cfg(size=32))
    jittered = transforms.train_transform(cfg(size=32), **JITTER)
    assert not any(isinstance(t, color_jitter) for t in plain.inner.transforms)
    found = [t for t in jittered.inner.transforms if isinstance(t, color_jitter)]
    assert len(found) == 1 and found[0].p == 0.8 and found[0].transf.hue is None  # hue 0: colours kept
    assert found[0].transf.contrast == (0.6, 1.4)
    # it changes pixels, and only through the seeded generators: same seeds, same image
    img = noise(20, 40)
    outs = []
    for t in (plain, jittered, jittered):
        torch.manual_seed(5), random.seed(3)
        outs.append(t(img))
    assert not torch.equal(outs[0], outs[1]) and torch.equal(outs[1], outs[2])
    with pytest.raises(ValueError, match="brightness, contrast, saturation, hue"):
        transforms.train_transform(cfg(size=32), photometric_jitter=(0.3, 0.4), photometric_jitter_prob=0.5)


@pytest.mark.parametrize("shape", [(10, 30), (37, 11)])
def test_flipped_two_stage_is_the_transform_of_the_mirror_image(shape):
    """A3R's flip TTA: the mirror is taken of the image as read, then padded and resized as usual."""
    img = noise(*shape)
    flipped = transforms.eval_two_stage(cfg(size=32), flip=True).to_uint8(img)
    of_mirror = transforms.eval_two_stage(cfg(size=32)).to_uint8(np.ascontiguousarray(img[:, ::-1]))
    assert torch.equal(flipped, of_mirror)
    assert not torch.equal(flipped, transforms.eval_two_stage(cfg(size=32)).to_uint8(img))


def test_two_stage_refuses_a_transform_it_does_not_know():
    from torchvision.transforms import Compose, ToTensor
    with pytest.raises(ValueError, match="cannot cut"):
        transforms.TwoStageTransform(transforms.PadThen(Compose([ToTensor()])))


# --- what mutation testing asked for: the config sources, the fill, PIL input, the cut's checks --------
def test_a_clip_model_gives_its_own_preprocess_cfg(clip):
    model, _, _ = clip
    pp = transforms.as_preprocess_cfg(model)
    assert pp == transforms.as_preprocess_cfg(open_clip.get_model_preprocess_cfg(model))
    assert transforms.eval_transform(model)(noise(10, 30)).shape == (3, *pp.size)
    assert transforms.as_preprocess_cfg(pp) is pp
    with pytest.raises(ValueError) as err:
        transforms.as_preprocess_cfg(42)
    assert str(err.value) == "expected an open_clip PreprocessCfg, dict or model, got int"


def test_image_size_stands_in_for_size_only_when_size_is_missing():
    both = transforms.as_preprocess_cfg({"size": 32, "image_size": 24, "mean": MEAN, "std": STD})
    assert both.size == 32
    assert transforms.as_preprocess_cfg({"mean": MEAN, "std": STD}).size == PreprocessCfg().size


@pytest.mark.parametrize("make", [transforms.eval_transform, transforms.train_transform,
                                  transforms.eval_two_stage, transforms.train_two_stage])
def test_the_padding_takes_the_cfgs_fill_colour(make):
    t = make(cfg(size=32, fill_color=255))
    wide = np.zeros((8, 32, 3), np.uint8)  # black content, 12 rows of padding above and below
    torch.manual_seed(0)
    out = t(wide) if callable(t) else t.normalise(t.to_uint8(wide)[None])[0]
    white = torch.tensor(normalised(1.0)).view(3, 1).expand(3, 32)
    torch.testing.assert_close(out[:, 0, :], white, atol=1e-3, rtol=0)


def test_pad_then_pads_with_0_by_default_and_says_so():
    t = transforms.PadThen(np.asarray)  # the inner transform sees the padded PIL image
    assert t(np.full((1, 3, 3), 9, np.uint8))[:, :, 0].tolist() == [[0, 0, 0], [9, 9, 9], [0, 0, 0]]
    assert repr(transforms.PadThen(np.asarray, fill=3)) == f"PadThen(pad_to_square(fill=3), {np.asarray!r})"


@pytest.mark.parametrize("mode", ["RGBA", "L", "RGB"])
def test_pil_images_of_any_mode_are_taken_as_rgb(mode):
    rgb = noise(10, 10)
    pil = Image.fromarray(rgb).convert(mode)
    t = transforms.eval_transform(cfg(size=16))
    torch.testing.assert_close(t(pil), t(np.asarray(pil.convert("RGB"))))


def test_two_stage_equals_the_whole_for_a_grey_image_too():
    grey = noise(12, 20)[..., 0]  # H×W: the whole transform makes it RGB
    split, whole = transforms.eval_two_stage(cfg(size=16)), transforms.eval_transform(cfg(size=16))
    sent = split.to_uint8(grey)
    assert sent.shape == (3, 16, 16)
    assert torch.equal(split.normalise(sent[None])[0], whole(grey))


def test_two_stage_refuses_transforms_not_ending_in_to_tensor_then_normalize():
    from open_clip.transform import MaybeToTensor
    from torchvision.transforms import CenterCrop, Compose, Normalize

    norm = Normalize(MEAN, STD)
    for inner in (lambda img: img, Compose([CenterCrop(4), MaybeToTensor(), CenterCrop(2)]),
                  Compose([MaybeToTensor(), CenterCrop(4), norm])):
        padded = transforms.PadThen(inner)
        with pytest.raises(ValueError) as err:
            transforms.TwoStageTransform(padded)
        assert str(err.value) == f"unexpected open_clip transform, cannot cut it at ToTensor: {inner!r}"


def test_train_transform_keeps_open_clips_unused_items_warning_quiet_and_names_the_jitter():
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        transforms.train_transform(cfg(size=32), **JITTER)
    assert [str(w.message) for w in caught] == []
    with pytest.raises(ValueError) as err:
        transforms.train_transform(cfg(size=32), photometric_jitter=(0.3, 0.4), photometric_jitter_prob=0.5)
    assert str(err.value) == ("photometric_jitter needs (brightness, contrast, saturation, hue), "
                              "got (0.3, 0.4)")


def test_train_transform_still_shows_torchvisions_warning_of_a_reversed_scale():
    # only open_clip's "unused items" warning is silenced: a scale given as (max, min) is still warned of
    with pytest.warns(UserWarning, match=r"^Scale and ratio should be of kind \(min, max\)$"):
        transforms.train_transform(cfg(size=32), scale=(1.0, 0.5))


def test_two_stage_equals_the_whole_for_a_mean_and_std_computed_with_numpy():
    # a dataset's own statistics come as numpy float64 numbers: the batch is normalised in float32, as
    # torchvision's Normalize does each image, so the result stays the same to the bit
    imgs = np.random.default_rng(1).integers(0, 256, (4, 20, 30, 3), dtype=np.uint8)
    pixels = imgs.reshape(-1, 3) / 255
    own = PreprocessCfg(size=16, mean=tuple(pixels.mean(axis=0)), std=tuple(pixels.std(axis=0)))
    assert isinstance(own.mean[0], np.float64) and isinstance(own.std[0], np.float64)
    split, whole = transforms.eval_two_stage(own), transforms.eval_transform(own)
    batch = split.normalise(torch.stack([split.to_uint8(img) for img in imgs]))
    assert batch.dtype == torch.float32
    assert torch.equal(batch, torch.stack([whole(img) for img in imgs]))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_normalise_runs_on_the_batchs_device():
    """Workers send CPU uint8, the batch is normalised where it lands (the GPU)."""
    split = transforms.eval_two_stage(cfg(size=16))
    batch = torch.stack([split.to_uint8(noise(10, 20)) for _ in range(2)])
    on_gpu = split.normalise(batch.cuda())
    assert on_gpu.device.type == "cuda"
    torch.testing.assert_close(on_gpu.cpu(), split.normalise(batch))


def test_unpadded_two_stage_is_open_clips_transform_alone_a_centre_crop():
    """The reference's zero-shot augmentation: open_clip's val transform on the image as stored
    (shortest side to the size, centre crop): a wide car loses its ends instead of gaining bars."""
    img = np.zeros((20, 60, 3), dtype=np.uint8)
    img[:, :10] = 255  # a white left end, cut away by the centre crop
    unpadded = transforms.eval_two_stage(cfg(size=20), pad=False).to_uint8(img)
    inner = open_clip.transform.image_transform_v2(cfg(size=20), is_train=False).transforms[:-2]
    pil = Image.fromarray(img)
    for step in inner:
        pil = step(pil)
    assert torch.equal(unpadded, torch.from_numpy(np.array(pil)).permute(2, 0, 1))
    assert unpadded.shape == (3, 20, 20) and int(unpadded.max()) == 0  # only the dark middle is left
    padded = transforms.eval_two_stage(cfg(size=20)).to_uint8(img)
    assert int(padded.max()) == 255  # the whole car, shrunk, between bars

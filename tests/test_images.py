"""Images: exact square padding, RGB reading, bad-image checks and the open_clip-based transforms."""
from __future__ import annotations

import pickle
import random

import cv2
import numpy as np
import open_clip
import pandas as pd
import pytest
import torch
from open_clip.transform import PreprocessCfg
from PIL import Image

from lib import images
from lib.images import ImageError, TooManyBadImages

RNG = np.random.default_rng(0)


def write(path, img_rgb, params=()):
    assert cv2.imwrite(str(path), cv2.cvtColor(img_rgb, cv2.COLOR_RGB2BGR), list(params))
    return path


def noise(h, w, c=3):
    return RNG.integers(0, 256, size=(h, w, c) if c else (h, w), dtype=np.uint8)


# ------------------------------------------------------------------ pad_to_square

@pytest.mark.parametrize("h, w", [(1, 1), (1, 2), (2, 1), (1, 7), (7, 1), (1, 300), (300, 1), (3, 8),
                                  (8, 3), (4, 9), (9, 4), (10, 10), (17, 40), (40, 17), (5, 6)])
@pytest.mark.parametrize("channels", [3, 1, 4, None])
def test_pad_to_square_places_content_exactly(h, w, channels):
    img = noise(h, w, channels)
    out = images.pad_to_square(img, fill=7)
    s = max(h, w)
    assert out.shape == (s, s) + img.shape[2:] and out.dtype == np.uint8
    top, left = (s - h) // 2, (s - w) // 2
    np.testing.assert_array_equal(out[top:top + h, left:left + w], img)
    mask = np.ones((s, s), bool)
    mask[top:top + h, left:left + w] = False
    assert (out[mask] == 7).all()


def test_odd_padding_goes_bottom_right():
    out = images.pad_to_square(np.full((2, 5, 3), 200, np.uint8))  # 3 rows of padding: 1 top, 2 bottom
    assert [int(out[r, 0, 0]) for r in range(5)] == [0, 200, 200, 0, 0]
    out = images.pad_to_square(np.full((4, 1), 9, np.uint8))  # 3 columns: 1 left, 2 right
    assert out[0].tolist() == [0, 9, 0, 0]


def test_square_input_comes_back_unchanged_as_a_copy():
    img = noise(6, 6)
    out = images.pad_to_square(img)
    np.testing.assert_array_equal(out, img)
    out[0, 0, 0] ^= 1
    assert out[0, 0, 0] != img[0, 0, 0]


@pytest.mark.parametrize("bad", [np.zeros((4, 5, 3), np.float32), np.zeros((4, 5), np.int64),
                                 np.zeros(5, np.uint8), np.zeros((2, 3, 4, 3), np.uint8),
                                 np.zeros((0, 4, 3), np.uint8), [[0, 1]]])
def test_pad_to_square_refuses_wrong_input(bad):
    with pytest.raises(ValueError, match="pad_to_square"):
        images.pad_to_square(bad)


def test_pad_to_square_refuses_a_fill_out_of_range():
    with pytest.raises(ValueError, match="fill"):
        images.pad_to_square(noise(2, 3), fill=256)


# ------------------------------------------------------------------ read_image

def test_read_image_is_rgb(tmp_path):
    red = np.zeros((12, 20, 3), np.uint8)
    red[..., 0] = 255
    png = images.read_image(write(tmp_path / "red.png", red))
    np.testing.assert_array_equal(png, red)
    jpg = images.read_image(write(tmp_path / "red.jpg", red))
    assert jpg.shape == (12, 20, 3) and jpg.dtype == np.uint8
    assert jpg[..., 0].min() > 200 and jpg[..., 1:].max() < 60


def test_read_image_gives_three_channels_for_grey_and_alpha(tmp_path):
    assert cv2.imwrite(str(tmp_path / "g.png"), noise(5, 9, None))
    assert images.read_image(tmp_path / "g.png").shape == (5, 9, 3)
    assert cv2.imwrite(str(tmp_path / "a.png"), noise(5, 9, 4))
    assert images.read_image(tmp_path / "a.png").shape == (5, 9, 3)


def bad_files(tmp_path):
    """name -> (path, word expected in the reason)."""
    good = write(tmp_path / "good.jpg", noise(40, 60), [cv2.IMWRITE_JPEG_QUALITY, 90])
    data = good.read_bytes()
    (tmp_path / "truncated.jpg").write_bytes(data[: len(data) // 2])
    (tmp_path / "empty.jpg").write_bytes(b"")
    (tmp_path / "text.jpg").write_text("this is not an image\n")
    png = write(tmp_path / "cut.png", noise(30, 30)).read_bytes()
    (tmp_path / "cut.png").write_bytes(png[: len(png) // 2])
    return {
        "truncated.jpg": (tmp_path / "truncated.jpg", "truncated"),
        "missing.jpg": (tmp_path / "missing.jpg", "missing"),
        "empty.jpg": (tmp_path / "empty.jpg", "empty"),
        "text.jpg": (tmp_path / "text.jpg", "decod"),
        "cut.png": (tmp_path / "cut.png", "decod"),
    }


def test_read_image_errors_name_the_path_and_the_reason(tmp_path):
    for name, (path, word) in bad_files(tmp_path).items():
        with pytest.raises(ImageError) as err:
            images.read_image(path)
        assert str(path) in str(err.value) and word in err.value.reason, (name, str(err.value))
        assert err.value.path == str(path)
    assert issubclass(ImageError, ValueError)


def test_jpeg_with_bytes_after_its_end_marker_is_fine(tmp_path):
    path = write(tmp_path / "trailer.jpg", noise(20, 30))
    path.write_bytes(path.read_bytes() + b"camera trailer" * 20)
    assert images.read_image(path).shape == (20, 30, 3)


def test_jpeg_truncated_but_decoded_by_opencv_is_still_refused(tmp_path, monkeypatch):
    """Older OpenCV builds decode a cut JPEG partly (grey bottom) with only a warning."""
    data = write(tmp_path / "x.jpg", noise(32, 32)).read_bytes()
    (tmp_path / "x.jpg").write_bytes(data[: len(data) * 2 // 3])
    monkeypatch.setattr(images.cv2, "imdecode", lambda buf, flags: np.zeros((32, 32, 3), np.uint8))
    with pytest.raises(ImageError, match="truncated"):
        images.read_image(tmp_path / "x.jpg")


# ------------------------------------------------------------------ verify_images

def test_verify_lists_every_bad_image_with_its_reason(tmp_path):
    bad = bad_files(tmp_path)
    goods = [write(tmp_path / f"ok{i}.png", noise(8, 8 + i)) for i in range(5)]
    paths = goods[:2] + [p for p, _ in bad.values()] + goods[2:]
    report_path = tmp_path / "out" / "bad_images.csv"
    report = images.verify_images(paths, max_bad_fraction=0.5, report_path=report_path, progress=False)
    assert list(report.columns) == ["image", "path", "reason"]
    assert list(report["image"]) == list(bad)  # input order
    for (name, (path, word)), row in zip(bad.items(), report.itertuples()):
        assert row.path == str(path) and word in row.reason
    assert report.attrs["checked"] == 10 and report.attrs["bad_fraction"] == 0.5
    written = pd.read_csv(report_path)
    assert list(written["image"]) == list(bad) and list(written.columns) == ["image", "path", "reason"]


def test_verify_fails_by_default_naming_images_count_report_and_parameter(tmp_path):
    bad = bad_files(tmp_path)
    good = write(tmp_path / "fine.png", noise(8, 8))
    report_path = tmp_path / "bad.csv"
    with pytest.raises(TooManyBadImages) as err:
        images.verify_images([good] + [p for p, _ in bad.values()], report_path=report_path, progress=False)
    msg = str(err.value)
    for name in ["truncated.jpg", "missing.jpg", "empty.jpg", "text.jpg"]:
        assert name in msg
    assert "5 of 6" in msg and str(report_path) in msg and "max_bad_image_fraction" in msg
    assert report_path.exists() and len(err.value.report) == 5  # written before failing
    assert isinstance(err.value, ImageError)


def test_verify_fraction_threshold(tmp_path):
    goods = [write(tmp_path / f"ok{i}.png", noise(4, 4)) for i in range(9)]
    paths = goods + [tmp_path / "gone.jpg"]  # 10% bad
    with pytest.raises(TooManyBadImages):
        images.verify_images(paths, max_bad_fraction=0.05, progress=False)
    assert len(images.verify_images(paths, max_bad_fraction=0.1, progress=False)) == 1


def test_verify_all_good_writes_an_empty_report_with_header(tmp_path):
    goods = [write(tmp_path / f"ok{i}.jpg", noise(10, 12)) for i in range(3)]
    report = images.verify_images(goods, report_path=tmp_path / "r.csv", progress=False)
    assert len(report) == 0 and report.attrs["bad_fraction"] == 0.0
    assert (tmp_path / "r.csv").read_text().strip() == "image,path,reason"
    assert len(images.verify_images([], report_path=tmp_path / "none.csv", progress=False)) == 0


@pytest.mark.parametrize("workers", [1, 3, 0])
def test_verify_threads_keep_order(tmp_path, workers):
    good = write(tmp_path / "ok.png", noise(6, 6))
    paths = [good] * 100
    paths[17], paths[80] = tmp_path / "a_missing.jpg", tmp_path / "b_missing.jpg"
    report = images.verify_images(paths, max_bad_fraction=0.02, workers=workers, progress=False)
    assert list(report["image"]) == ["a_missing.jpg", "b_missing.jpg"]


# ------------------------------------------------------------------ transforms

MEAN, STD = (0.5, 0.25, 0.125), (0.5, 0.25, 0.5)


def cfg(size=64, **kw):
    return PreprocessCfg(size=size, mean=MEAN, std=STD, **kw)


def normalised(value):
    return [(value - m) / s for m, s in zip(MEAN, STD)]


@pytest.mark.parametrize("make", [images.eval_transform, images.train_transform])
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
    out = images.eval_transform(cfg())(np.full(shape + (3,), 255, np.uint8))
    if shape[0] > shape[1]:  # tall: look at columns instead of rows
        out = out.transpose(1, 2)
    black = torch.tensor(normalised(0.0)).view(3, 1).expand(3, 64)
    white = torch.tensor(normalised(1.0)).view(3, 1).expand(3, 64)
    torch.testing.assert_close(out[:, 0, :], black, atol=1e-3, rtol=0)  # top (left) padding
    torch.testing.assert_close(out[:, -1, :], black, atol=1e-3, rtol=0)  # bottom (right) padding
    torch.testing.assert_close(out[:, 32, :], white, atol=2e-2, rtol=0)  # the content, not cropped


def test_train_transform_uses_scale_and_keeps_the_padding():
    t = images.train_transform(cfg(), scale=(0.9, 1.0))
    crops = [s for s in t.inner.transforms if type(s).__name__ == "RandomResizedCrop"]
    assert len(crops) == 1 and tuple(crops[0].scale) == (0.9, 1.0) and tuple(crops[0].size) == (64, 64)
    black = torch.tensor(normalised(0.0)).view(3, 1).expand(3, 64)
    torch.manual_seed(0)
    for _ in range(10):  # a crop of >= 90% of a 64² square starts within a few pixels of the top
        out = t(np.full((16, 64, 3), 255, np.uint8))
        assert out.shape == (3, 64, 64)
        torch.testing.assert_close(out[:, 0, :], black, atol=1e-3, rtol=0)
    assert tuple(images.train_transform(cfg(), scale=(0.5, 1.0)).inner.transforms[0].scale) == (0.5, 1.0)


def test_eval_transform_is_open_clips_own_after_padding():
    img = noise(48, 48)  # already square: pad is a no-op, so the result must be open_clip's exactly
    ours = images.eval_transform(cfg(size=32))(img)
    theirs = open_clip.transform.image_transform_v2(cfg(size=32), is_train=False)(Image.fromarray(img))
    torch.testing.assert_close(ours, theirs)


def test_transforms_accept_the_models_preprocess_dict_and_pickle():
    as_model_has_it = {"size": (32, 32), "mean": MEAN, "std": STD, "interpolation": "bicubic",
                       "resize_mode": "shortest", "fill_color": 0, "mode": "RGB"}
    t = images.eval_transform(as_model_has_it)
    assert t(noise(10, 30)).shape == (3, 32, 32)
    assert images.eval_transform({"image_size": 24, "mean": MEAN, "std": STD})(noise(9, 5)).shape == (3, 24, 24)
    t2 = pickle.loads(pickle.dumps(images.train_transform(as_model_has_it)))
    assert t2(noise(10, 30)).shape == (3, 32, 32)
    with pytest.raises(ValueError, match="RGB"):
        t(noise(10, 10, 4))


JITTER = dict(color_jitter=(0.3, 0.4, 0.3, 0.0), color_jitter_prob=0.8)


@pytest.mark.parametrize("shape", [(48, 48), (10, 30), (37, 11)])
@pytest.mark.parametrize("kind", ["eval", "train", "train+jitter"])
def test_split_batch_equals_the_per_image_transform(shape, kind):
    """Workers send uint8, the batch is normalised once: the result must not change by one bit,
    and a random crop (and colour jitter) must draw the same numbers as the whole transform does."""
    extra = JITTER if kind == "train+jitter" else {}
    split = images.eval_split(cfg(size=32)) if kind == "eval" else images.train_split(cfg(size=32), (0.5, 1.0), **extra)
    whole = (images.eval_transform(cfg(size=32)) if kind == "eval"
             else images.train_transform(cfg(size=32), (0.5, 1.0), **extra))
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


def test_colour_jitter_is_open_clips_and_only_when_asked():
    from open_clip.transform import color_jitter
    plain = images.train_transform(cfg(size=32))
    jittered = images.train_transform(cfg(size=32), **JITTER)
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
        images.train_transform(cfg(size=32), color_jitter=(0.3, 0.4), color_jitter_prob=0.5)


def test_split_refuses_a_transform_it_does_not_know():
    from torchvision.transforms import Compose, ToTensor
    with pytest.raises(ValueError, match="cannot split"):
        images.TensorSplit(images.PadThen(Compose([ToTensor()])))


def test_read_for_model(tmp_path):
    path = write(tmp_path / "x.png", noise(10, 30))
    assert images.read_for_model(path, images.eval_transform(cfg(size=16))).shape == (3, 16, 16)

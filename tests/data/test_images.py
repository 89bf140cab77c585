"""lib.data.images: exact square padding, RGB reading, bad-image checks."""
from __future__ import annotations

import cv2
import numpy as np
import pandas as pd
import pytest

from lib.data import images
from lib.data.images import ImageError, TooManyBadImages

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
    for fill in (256, -1):
        with pytest.raises(ValueError) as err:
            images.pad_to_square(noise(2, 3), fill=fill)
        assert str(err.value) == f"fill must be within 0..255, got {fill}"


@pytest.mark.parametrize("fill", [0, 255])
def test_pad_to_square_fills_with_any_byte_value(fill):
    out = images.pad_to_square(np.full((1, 3), 100, np.uint8), fill=fill)
    assert out.tolist() == [[fill] * 3, [100] * 3, [fill] * 3]


def test_pad_to_square_names_what_it_got():
    with pytest.raises(ValueError) as err:
        images.pad_to_square([[0, 1]])
    assert str(err.value) == "pad_to_square needs a numpy array, got list"


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


TRUNCATED = "truncated JPEG (data ends before the end-of-image marker FFD9)"


def test_read_image_errors_name_the_path_and_the_reason(tmp_path):
    for name, (path, word) in bad_files(tmp_path).items():
        with pytest.raises(ImageError) as err:
            images.read_image(path)
        assert str(path) in str(err.value) and word in err.value.reason, (name, str(err.value))
        assert err.value.path == str(path)
    assert issubclass(ImageError, ValueError)


def _reason(path) -> str:
    with pytest.raises(ImageError) as err:
        images.read_image(path)
    assert err.value.path == str(path) and str(err.value) == f"{path}: {err.value.reason}"
    return err.value.reason


def test_read_image_reasons_word_for_word(tmp_path):
    bad = {name: path for name, (path, _) in bad_files(tmp_path).items()}
    assert _reason(bad["missing.jpg"]) == "missing (no such file)"
    assert _reason(bad["empty.jpg"]) == "empty file (0 bytes)"
    assert _reason(bad["truncated.jpg"]) == TRUNCATED
    assert _reason(bad["text.jpg"]) == "not a decodable image (OpenCV could not decode its 21 bytes)"
    assert _reason(tmp_path) == "missing (a directory, not an image file)"


@pytest.mark.parametrize("error, reason", [
    (PermissionError(13, "Permission denied"), "unreadable (Permission denied)"),
    (OSError("the mount went away"), "unreadable (the mount went away)"),
])
def test_read_image_names_a_file_it_cannot_read(tmp_path, monkeypatch, error, reason):
    path = write(tmp_path / "x.png", noise(4, 4))

    def refuse(self):
        raise error

    monkeypatch.setattr(images.Path, "read_bytes", refuse)
    assert _reason(path) == reason


@pytest.mark.parametrize("trailer, reason", [
    (b"", "not a decodable image (OpenCV could not decode its 24 bytes)"),
    (b"\x00\x00 \r\n\t", "not a decodable image (OpenCV could not decode its 30 bytes)"),
    (b"XX", TRUNCATED),  # other bytes after the end marker: the strict decode decides
])
def test_a_broken_jpeg_is_truncated_unless_only_padding_follows_its_end_marker(tmp_path, trailer, reason):
    """The end marker FFD9, then nothing but NUL or whitespace padding: the file is whole, just broken."""
    path = tmp_path / "broken.jpg"
    path.write_bytes(b"\xff\xd8" + b"not a jpeg body " + b"\xff\xd9" + b"\x00" * 4 + trailer)
    assert _reason(path) == reason


def test_a_jpeg_too_large_for_pils_bomb_check_is_not_called_truncated(tmp_path, monkeypatch):
    """A trailer after the end marker sends the JPEG to PIL's strict decode; PIL refusing a huge image
    says nothing about truncation."""
    path = write(tmp_path / "big.jpg", noise(20, 30))
    whole = images.read_image(path)
    path.write_bytes(path.read_bytes() + b"camera trailer")
    monkeypatch.setattr(images.Image, "MAX_IMAGE_PIXELS", 100)  # 600 pixels: a "bomb"
    got = images.read_image(path)
    assert got.shape == (20, 30, 3) and np.array_equal(got, whole)


@pytest.mark.parametrize("decode", ["raises", "empty"])
def test_read_image_when_opencv_fails_or_returns_nothing(tmp_path, monkeypatch, decode):
    path = write(tmp_path / "x.png", noise(4, 4))

    def imdecode(buf, flags):
        if decode == "raises":
            raise images.cv2.error("broken")
        return np.zeros((0, 0, 3), np.uint8)

    monkeypatch.setattr(images.cv2, "imdecode", imdecode)
    size = path.stat().st_size
    assert _reason(path) == f"not a decodable image (OpenCV could not decode its {size} bytes)"


def test_jpeg_with_bytes_after_its_end_marker_is_fine(tmp_path):
    path = write(tmp_path / "trailer.jpg", noise(20, 30))
    whole = images.read_image(path)
    path.write_bytes(path.read_bytes() + b"camera trailer" * 20)
    got = images.read_image(path)
    assert got.shape == (20, 30, 3) and np.array_equal(got, whole)  # the same pixels, trailer ignored


def test_jpeg_truncated_but_decoded_by_opencv_is_still_refused(tmp_path, monkeypatch):
    """Older OpenCV builds decode a cut JPEG partly (grey bottom) with only a warning."""
    data = write(tmp_path / "x.jpg", noise(32, 32)).read_bytes()
    (tmp_path / "x.jpg").write_bytes(data[: len(data) * 2 // 3])
    monkeypatch.setattr(images.cv2, "imdecode", lambda buf, flags: np.zeros((32, 32, 3), np.uint8))
    assert _reason(tmp_path / "x.jpg") == TRUNCATED


# ------------------------------------------------------------------ verify_images

def test_verify_lists_every_bad_image_with_its_reason(tmp_path):
    bad = bad_files(tmp_path)
    goods = [write(tmp_path / f"ok{i}.png", noise(8, 8 + i)) for i in range(5)]
    paths = goods[:2] + [p for p, _ in bad.values()] + goods[2:]
    report_path = tmp_path / "out" / "check" / "bad_images.csv"  # folders made as needed
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


def test_verify_fraction_is_a_share_of_0_to_1(tmp_path):
    path = tmp_path / "gone.jpg"
    assert len(images.verify_images([path], max_bad_fraction=1.0, progress=False)) == 1  # anything goes
    with pytest.raises(ValueError) as err:
        images.verify_images([path], max_bad_fraction=1.5, progress=False)
    assert str(err.value) == "max_bad_fraction must be within 0..1, got 1.5"


def _too_many(paths, **kw) -> TooManyBadImages:
    with pytest.raises(TooManyBadImages) as err:
        images.verify_images(paths, progress=False, **kw)
    return err.value


def test_verify_failure_message_word_for_word(tmp_path):
    good = write(tmp_path / "ok.png", noise(4, 4))
    err = _too_many([good, tmp_path / "a.jpg", good])  # no report file
    assert str(err) == (
        "1 of 3 images (33.33%) are missing or unreadable, more than max_bad_image_fraction=0 allows:\n"
        "  a.jpg: missing (no such file)\n"
        "Restore or replace those files, or set max_bad_image_fraction=... (e.g. 0.338) to leave them out "
        "and go on.")
    assert (err.path, err.report_path, err.reason) == ("", None, str(err))
    report = tmp_path / "bad.csv"
    err = _too_many([tmp_path / "a.jpg", tmp_path / "b.jpg"], max_bad_fraction=0.5, report_path=report)
    assert str(err) == (
        "2 of 2 images (100.00%) are missing or unreadable, more than max_bad_image_fraction=0.5 allows:\n"
        "  a.jpg: missing (no such file)\n  b.jpg: missing (no such file)\n"
        f"Full list: {report}.\n"
        "Restore or replace those files, or set max_bad_image_fraction=... (e.g. 1) to leave them out "
        "and go on.")
    assert (err.path, err.report_path) == (str(report), report)


@pytest.mark.parametrize("n_bad, tail", [(5, ""), (6, "\n  ... and 1 more"), (7, "\n  ... and 2 more")])
def test_verify_failure_shows_five_bad_images_then_counts_the_rest(tmp_path, n_bad, tail):
    err = _too_many([tmp_path / f"{i}.jpg" for i in range(n_bad)])
    shown = str(err).split(" allows:\n", 1)[1].split("\nRestore", 1)[0]
    assert shown == "\n".join(f"  {i}.jpg: missing (no such file)" for i in range(5)) + tail


def test_verify_shows_a_progress_bar_unless_told_not_to(tmp_path, capsys):
    goods = [write(tmp_path / f"ok{i}.png", noise(4, 4)) for i in range(3)]
    images.verify_images(goods)
    err = capsys.readouterr().err
    assert "checking images: 100%" in err and "3/3" in err and "img/s" in err
    images.verify_images(goods, progress=False)
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize("workers", [1, 3, 0])
def test_verify_threads_keep_order(tmp_path, workers):
    good = write(tmp_path / "ok.png", noise(6, 6))
    paths = [good] * 100
    paths[17], paths[80] = tmp_path / "a_missing.jpg", tmp_path / "b_missing.jpg"
    report = images.verify_images(paths, max_bad_fraction=0.02, workers=workers, progress=False)
    assert list(report["image"]) == ["a_missing.jpg", "b_missing.jpg"]


def test_verify_works_where_the_cpu_count_is_unknown(tmp_path, monkeypatch):
    monkeypatch.setattr(images.os, "cpu_count", lambda: None)  # os.cpu_count() may return None
    good = write(tmp_path / "ok.png", noise(6, 6))
    paths = [good] * 70
    paths[3] = tmp_path / "gone.jpg"
    report = images.verify_images(paths, max_bad_fraction=0.5, progress=False)
    assert list(report["image"]) == ["gone.jpg"] and report.attrs["checked"] == 70


# ------------------------------------------------------------------ transforms

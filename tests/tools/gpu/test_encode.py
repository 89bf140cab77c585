"""Part 1 of the GPU proof on the CPU with kit-micro-vit: every field filled, both sides agree."""
import numpy as np
import pytest
import torch

from tools import workload
from tools.gpu import encode as gpu_proof_encode


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    return workload.make_images(tmp_path_factory.mktemp("gallery"), 10, size=gpu_proof_encode.real_size)


def test_real_sizes_are_wide_cars_and_tall_persons(images):
    rng = np.random.default_rng(0)
    sizes = [gpu_proof_encode.real_size(i, rng) for i in range(2000)]
    cars = [(w, h) for w, h in sizes if w > h]
    assert abs(len(cars) / len(sizes) - gpu_proof_encode.CAR_SHARE) < 0.04
    assert all(200 <= w <= 420 for w, _ in cars)
    assert all(160 <= h <= 360 and w < 0.5 * h for w, h in sizes if w <= h)
    import cv2

    assert cv2.imread(str(images[0])).shape[2] == 3  # make_images wrote them at those sizes


def test_the_record_is_complete_and_both_sides_embed_alike(clip, images):
    model, _, pp = clip
    out = gpu_proof_encode.measure_encode(model, "kit-micro-vit", pp, images, batch_size=4, workers=0,
                                          reference_images=6, budget_s=60)
    assert out["status"] == "ok" and out["device"] == "cpu"
    assert out["kit"]["images"] == 10 and out["reference"]["images"] == 6
    assert out["reference"]["batch_size"] == 6  # the reference's 2000, capped by the images
    assert out["kit"]["precision"] == "fp32" and out["reference"]["tf32_matmul"] is False
    assert out["agreement"]["images"] == 6 and out["agreement"]["min_cosine"] > 0.999
    assert out["encode_speedup_vs_reference_gpu"] > 0
    assert out["projected_test_gallery_s"]["kit"] == pytest.approx(
        17_611 / out["kit"]["images_per_s"], rel=0.01)
    assert out["kit"]["peak_memory_gb"] is None  # the CPU cannot say
    assert set(out["plan"]) == set(gpu_proof_encode.PLAN) and set(out["plan"].values()) == {None}
    assert set(out) == set(gpu_proof_encode.template())


def test_out_of_time_it_encodes_fewer_and_says_so(clip, images):
    model, _, pp = clip
    out = gpu_proof_encode.measure_encode(model, "kit-micro-vit", pp, images, batch_size=4, workers=0,
                                          reference_images=6, budget_s=0, plan=True)
    assert out["status"] == "cut short" and out["kit"]["images"] == 1 and out["reference"]["images"] == 1
    assert out["plan"] == gpu_proof_encode.PLAN


def test_fp32_matmuls_turns_tf32_off_and_restores_it():
    before = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = True
    try:
        with gpu_proof_encode.fp32_matmuls():
            assert torch.backends.cuda.matmul.allow_tf32 is False
        assert torch.backends.cuda.matmul.allow_tf32 is True
    finally:
        torch.backends.cuda.matmul.allow_tf32 = before

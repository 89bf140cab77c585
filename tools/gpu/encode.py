"""GPU proof, part 1: gallery encoding by the kit's path and by the reference's way, one model.

The kit: lib.model.encode.encode_images, as the competition profile runs it (its eval batch and
DataLoader workers, OpenCV decoding in the workers, uint8 batches normalised on the device,
bf16 autocast on a GPU). The reference (A3R's src/infer/open_clip_infer_prompt.py with
script/run_infer.sh): PIL decoding and open_clip's preprocess image by image in the one process,
fp32 with TF32 matmuls off (PyTorch 1.12's default, which it ran on), `--image_batch 2000`
(tools.workload.naive_encode). The reference encodes only the first few hundred images: at fp32
it is the slow side. Both embed those the same way or the ratio compares different work, so their
cosine agreement is reported beside it.

Images: tools.workload.make_images at sizes like the competition's (`real_size`). A part that
runs out of time encodes fewer images (the warm-up's rate says how many fit) and says so.
"""
from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

import numpy as np
import torch
from open_clip.transform import image_transform_v2

from lib.data.transforms import as_preprocess_cfg
from lib.model.device import resolve_precision
from lib.model.encode import encode_images, model_device
from tools.gpu.measure import Budget, fit_count, free, peak_gb, reset_peak, timed
from tools.workload import naive_encode

TEST_GALLERY = 17_611  # images in the competition's test gallery
REFERENCE_BATCH = 2000  # script/run_infer.sh: --image_batch 2000
CAR_SHARE = 7_611 / 17_611  # the test gallery's cars
# docs/gpu.md's plan: bf16 on an H100 at 40 % of 990 TFLOP/s, 967.5 GFLOPs an
# image; and the reference's own measurement: 31 minutes for the gallery at fp32 on an A100.
PLAN = {"kit_images_per_s": 400.0, "reference_images_per_s_a100": 9.5}
KIT_SHARE = 0.5  # of the part's time: the kit's timed run (the reference and warm-ups take the rest)


def real_size(i: int, rng: np.random.Generator) -> tuple[int, int]:
    """(width, height) like the competition's crops, as assumed here (their images are not in the kit):
    43 % cars, wider than tall (200-420 px wide, 0.6-0.85 as high), the rest persons, tall and narrow
    (160-360 px high, 0.33-0.45 as wide)."""
    if rng.random() < CAR_SHARE:
        w = int(rng.integers(200, 421))
        return w, int(w * rng.uniform(0.6, 0.85))
    h = int(rng.integers(160, 361))
    return int(h * rng.uniform(0.33, 0.45)), h


def template() -> dict[str, Any]:
    """Every field of the part's record, None until measured."""
    side = {"images": None, "batch_size": None, "seconds": None, "images_per_s": None, "peak_memory_gb": None}
    return {"status": None, "error": None, "model": None, "device": None, "seconds": None,
            "kit": {**side, "precision": None, "workers": None},
            "reference": {**side, "precision": "fp32", "tf32_matmul": None},
            "encode_speedup_vs_reference_gpu": None,
            "agreement": {"images": None, "min_cosine": None, "mean_cosine": None},
            "test_gallery_images": TEST_GALLERY,
            "projected_test_gallery_s": {"kit": None, "reference": None},
            "plan": dict.fromkeys(PLAN)}  # docs/gpu.md's figures, for ViT-bigG-14 only


@contextlib.contextmanager
def fp32_matmuls():
    """TF32 matmuls off (the reference's PyTorch 1.12 default), restored afterwards."""
    before = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    try:
        yield before
    finally:
        torch.backends.cuda.matmul.allow_tf32 = before


def measure_encode(model: torch.nn.Module, model_name: str, preprocess_cfg: dict, paths: list[Path], *,
                   batch_size: int, workers: int, reference_images: int,
                   reference_batch: int = REFERENCE_BATCH, budget_s: float, plan: bool = False,
                   out: dict | None = None) -> dict[str, Any]:
    """Fill (and return) the part's record `out`; `plan`: the model is the plan's (ViT-bigG-14)."""
    out = out if out is not None else template()
    budget, device = Budget(budget_s), model_device(model)
    out.update(status="running", model=model_name, device=str(device))
    if plan:
        out["plan"] = dict(PLAN)
    kit, ref = out["kit"], out["reference"]
    kit.update(batch_size=batch_size, workers=workers, precision=resolve_precision("auto", device))

    def kit_encode(items: list[Path]) -> torch.Tensor:
        return encode_images(model, items, preprocess_cfg, batch_size=batch_size, workers=workers,
                             precision="auto", progress=False)

    _, warm_s = timed(lambda: kit_encode(paths[:2 * batch_size]), device)  # workers, kernels, page cache
    n = fit_count(len(paths), min(len(paths), 2 * batch_size) / warm_s, budget.left() * KIT_SHARE)
    reset_peak(device)
    kit_emb, kit_s = timed(lambda: kit_encode(paths[:n]), device)
    kit.update(images=n, seconds=round(kit_s, 3), images_per_s=round(n / kit_s, 2),
               peak_memory_gb=peak_gb(device))
    free(device)

    # open_clip's eval transform for the model, as create_model_and_transforms gave it to the reference
    preprocess = image_transform_v2(as_preprocess_cfg(preprocess_cfg), is_train=False)
    fill = int(preprocess_cfg.get("fill_color", 0))
    with fp32_matmuls():
        ref["tf32_matmul"] = torch.backends.cuda.matmul.allow_tf32
        few = paths[:min(4, len(paths))]
        _, warm_s = timed(lambda: naive_encode(model, few, preprocess, len(few), fill), device)
        m = fit_count(min(reference_images, len(paths)), len(few) / warm_s, budget.left() * 0.9)
        batch = min(reference_batch, m)
        reset_peak(device)
        ref_emb, ref_s = timed(lambda: naive_encode(model, paths[:m], preprocess, batch, fill), device)
    ref.update(images=m, batch_size=batch, seconds=round(ref_s, 3), images_per_s=round(m / ref_s, 2),
               peak_memory_gb=peak_gb(device))
    free(device)

    k = min(n, m)
    cosine = (kit_emb[:k].float() * ref_emb[:k].float()).sum(dim=-1)
    out["agreement"] = {"images": k, "min_cosine": round(float(cosine.min()), 5),
                        "mean_cosine": round(float(cosine.mean()), 5)}
    out["encode_speedup_vs_reference_gpu"] = round(kit["images_per_s"] / ref["images_per_s"], 2)
    out["projected_test_gallery_s"] = {"kit": round(TEST_GALLERY / kit["images_per_s"], 1),
                                       "reference": round(TEST_GALLERY / ref["images_per_s"], 1)}
    short = n < len(paths) or m < min(reference_images, len(paths))
    out.update(status="cut short" if short else "ok", seconds=round(budget.elapsed(), 1))
    return out

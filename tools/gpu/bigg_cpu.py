"""`make bigg-cpu`: what a CPU proves about the competition architecture, with no GPU and no download.

    python -m tools.gpu.bigg_cpu [--model ViT-bigG-14] [--captions 16] [--images 2] [--out runs/bigg-cpu.json]

ViT-bigG-14 is built with random weights through the kit's factory (nothing downloaded; exactly as
large as laion2b's), on the CPU, in fp32, one process:
1. `build`: the parameter count against the plan's 2.54 B, the build's seconds, and the process's
   peak resident memory (VmHWM) against the plan's fp32 weights (10.2 GB, docs/gpu.md);
2. `preprocessing`: the kit's eval transform for the model, step by step, against the one the
   reference printed (notebook-quick-review.ipynb:25-32: pad, Resize 224 bicubic, CenterCrop 224,
   RGB, ToTensor, Normalize with OpenAI's mean and std);
3. `text_trim`: real competition captions (tools/assets/real_captions.txt, the val labels' texts)
   through the trimmed text tower and open_clip's untrimmed one: the positions each used and the
   largest difference of their normalised features (the trim is exact up to float rounding);
4. `encode`: a few gallery images of the competition's sizes through the kit's encode_images and
   through the reference's loop (tools.gpu.encode.measure_encode): seconds an image and the cosine
   agreement of the two embeddings.
The report is a table on stdout and a JSON file. `--model kit-micro-vit` runs the same in seconds
(the test suite does); the plan's figures are then null.
"""
from __future__ import annotations

import argparse
import json
import platform
import re
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import open_clip
import torch
import torch.nn.functional as F

from lib.data.transforms import PadThen, eval_transform
from lib.errors import KitError
from lib.files import atomic_write_text
from lib.model import text_trim
from lib.model.factory import create_model
from lib.paths import REPO_ROOT, portable
from tools.gpu.encode import measure_encode, real_size
from tools.gpu.measure import GB
from tools.gpu.proof import PLAN_MODEL
from tools.workload import captions, make_images

DEFAULT_OUT = REPO_ROOT / "runs" / "bigg-cpu.json"
# docs/gpu.md's plan for ViT-bigG-14: parameters and fp32 weights
PLAN = {"parameters": 2.54e9, "fp32_weights_gb": 10.2}
# the reference's test transform as its quick-review notebook printed it (notebook-quick-review.ipynb:25-32)
REFERENCE_TRANSFORM = ["pad to square (black)", "Resize(224, bicubic)", "CenterCrop(224, 224)", "RGB",
                       "ToTensor", "Normalize(mean=(0.48145466, 0.4578275, 0.40821073), "
                       "std=(0.26862954, 0.26130258, 0.27577711))"]


def describe(transform: PadThen) -> list[str]:
    """The kit's eval transform as steps comparable with REFERENCE_TRANSFORM."""
    steps = [f"pad to square ({'black' if transform.fill == 0 else transform.fill})"]
    for step in transform.inner.transforms:
        kind = type(step).__name__
        if kind == "Resize":
            steps.append(f"Resize({step.size}, {step.interpolation.value})")
        elif kind == "CenterCrop":
            steps.append(f"CenterCrop({step.size[0]}, {step.size[1]})")
        elif kind in ("MaybeConvertMode", "_convert_to_rgb"):
            steps.append(getattr(step, "mode", "RGB"))
        elif kind in ("MaybeToTensor", "ToTensor"):
            steps.append("ToTensor")
        elif kind == "Normalize":
            steps.append(f"Normalize(mean={tuple(step.mean)}, std={tuple(step.std)})")
        else:
            steps.append(repr(step))
    return steps


def peak_rss_gb() -> float | None:
    """This process's peak resident memory (VmHWM), in GB; None where /proc has no status."""
    status = Path("/proc/self/status")
    if not status.is_file():
        return None
    found = re.search(r"^VmHWM:\s+(\d+) kB", status.read_text(), re.MULTILINE)
    return round(int(found.group(1)) * 1024 / GB, 2) if found else None


def text_trim_check(model: torch.nn.Module, tokenizer: Any, texts: list[str]) -> dict[str, Any]:
    """The trimmed text tower against open_clip's own on the same tokens, fp32."""
    tokens = tokenizer(texts)
    with torch.inference_mode():
        start = time.perf_counter()
        full = F.normalize(open_clip.CLIP.encode_text(model, tokens), dim=-1)
        full_s = time.perf_counter() - start
        start = time.perf_counter()
        trimmed = F.normalize(text_trim.encode_text(model, tokens), dim=-1)
        trimmed_s = time.perf_counter() - start
    lengths = tokens.argmax(dim=-1) + 1
    return {"captions": len(texts), "context": int(tokens.shape[1]),
            "used_positions": text_trim.used_length(tokens),
            "mean_caption_positions": round(float(lengths.float().mean()), 1),
            "max_abs_difference": float((full - trimmed).abs().max()),
            "min_cosine": round(float((full * trimmed).sum(dim=-1).min()), 7),
            "untrimmed_s": round(full_s, 2), "trimmed_s": round(trimmed_s, 2)}


def run(model_name: str, n_captions: int, n_images: int, work_dir: Path) -> dict[str, Any]:
    plan = model_name == PLAN_MODEL
    machine = {"cpu": platform.processor() or platform.machine(), "torch": torch.__version__,
               "threads": torch.get_num_threads()}
    report: dict[str, Any] = {"model": model_name, "machine": machine}
    start = time.perf_counter()
    model, tokenizer, preprocess_cfg = create_model(model_name, "", device="cpu", trim_text=False)
    model.eval()
    parameters = sum(p.numel() for p in model.parameters())
    report["build"] = {"seconds": round(time.perf_counter() - start, 1), "parameters": parameters,
                       "fp32_weights_gb": round(parameters * 4 / GB, 2), "peak_rss_gb": peak_rss_gb(),
                       "plan": PLAN if plan else None}
    steps = describe(eval_transform(preprocess_cfg))
    report["preprocessing"] = {"kit": steps, "reference": REFERENCE_TRANSFORM,
                               "same": steps == REFERENCE_TRANSFORM if plan else None}
    report["text_trim"] = text_trim_check(model, tokenizer, captions(n_captions))
    paths = make_images(work_dir / "gallery", n_images, size=real_size)
    report["encode"] = measure_encode(model, model_name, preprocess_cfg, paths,
                                      batch_size=max(1, n_images // 2), workers=0,
                                      reference_images=n_images, budget_s=3600.0)
    report["peak_rss_gb"] = peak_rss_gb()
    return report


def summary(report: dict[str, Any]) -> str:
    build, trim, enc = report["build"], report["text_trim"], report["encode"]
    plan = build["plan"] or {}
    kit_s = enc["kit"]["seconds"] / enc["kit"]["images"]
    ref_s = enc["reference"]["seconds"] / enc["reference"]["images"]
    rows = [("parameters", f"{build['parameters']:,}", f"{plan['parameters']:,.0f}" if plan else "–"),
            ("fp32 weights", f"{build['fp32_weights_gb']} GB",
             f"{plan['fp32_weights_gb']} GB" if plan else "–"),
            ("peak memory after the build (RSS)", f"{build['peak_rss_gb']} GB", "–"),
            ("peak memory of the whole proof (RSS)", f"{report['peak_rss_gb']} GB", "–"),
            ("build, random init", f"{build['seconds']} s", "–"),
            ("preprocessing = the reference's", str(report["preprocessing"]["same"]), "True"),
            ("text: positions used of the context",
             f"{trim['used_positions']} of {trim['context']} ({trim['captions']} captions, "
             f"{trim['mean_caption_positions']} on average)", "–"),
            ("text: trimmed vs untrimmed, largest |difference|", f"{trim['max_abs_difference']:.2e}",
             "≈ 1e-6"),
            ("text tower, untrimmed / trimmed", f"{trim['untrimmed_s']} s / {trim['trimmed_s']} s", "–"),
            ("image, the kit's encode (fp32)", f"{kit_s:.1f} s an image", "–"),
            ("image, the reference's loop (fp32)", f"{ref_s:.1f} s an image", "–"),
            ("kit vs reference embeddings, min cosine", str(enc["agreement"]["min_cosine"]), "≥ 0.99")]
    width = max(len(r[0]) for r in rows)
    return "\n".join(f"{name:<{width}}  {value}   (expected: {planned})" for name, value, planned in rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.gpu.bigg_cpu",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("--model", default=PLAN_MODEL)
    parser.add_argument("--captions", type=int, default=16, help="real validation captions (default 16)")
    parser.add_argument("--images", type=int, default=2, help="gallery images encoded each way (default 2)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args(argv)
    try:
        with tempfile.TemporaryDirectory(prefix="bigg-cpu-") as tmp:
            report = run(args.model, args.captions, args.images, Path(tmp))
    except KitError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    args.out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out, json.dumps(report, indent=1) + "\n")
    print(summary(report))
    print(f"report: {portable(args.out)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

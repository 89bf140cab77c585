"""The golden fingerprint: what the smoke pipeline makes, committed, so that a change that moves the
numbers cannot pass unnoticed.

    python -m tools.fingerprint          # run the smoke pipeline, compare with the committed one
    python -m tools.fingerprint --write  # ... and write it (a change that moves the numbers)

The fingerprint holds the submission's sha256, its rankings (each test query's 10 gallery names),
the per-epoch val figures and test scores, with the machine signature they were made on. Floating
point on the CPU is reproducible bit for bit on one kind of processor, not necessarily across kinds
(oneDNN and MKL pick kernels by instruction set; two sessions' machines were seen to differ in the
5th decimal of the demo's val mAP after one epoch of training). So the bytes are compared where the
signature matches; elsewhere the rankings are (a last-bit difference may swap a near tie: at most
RANKING_SLACK queries may differ, each by one name in or out of its top 10) and the figures within
FIGURE_TOLERANCE. Either way a changed transform, loss or schedule fails: on 2 intra-op threads
instead of 1, which changes the weights' last bits, the smoke run ranks every query the same.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

import torch

from lib import config
from lib.errors import KitError
from lib.files import atomic_write_text, sha256_file
from lib.paths import REPO_ROOT
from lib.pipeline import runner

FINGERPRINT = REPO_ROOT / "tests" / "fixtures" / "smoke_fingerprint.json"
FIGURE_TOLERANCE = 2e-3  # mAP@10 on 30 queries moves by 1/30 per rank change; rounding moves it far less
RANKING_SLACK = 2  # queries whose top 10 may differ on another processor (one name each)
SPLITS = ("val", "test", "test_A", "test_B")
CPU_FLAGS = ("avx2", "avx512f", "avx512_bf16", "avx512_fp16", "amx_tile", "amx_bf16")


def machine_signature() -> dict[str, Any]:
    """What the CPU numerics depend on: torch's kernels and the instruction sets the libraries pick."""
    flags: set[str] = set()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
                break
    return {"torch": str(torch.__version__), "cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "cpu_flags": [f for f in CPU_FLAGS if f in flags]}


def measure(run_dir: Path) -> dict[str, Any]:
    """The fingerprint of a finished smoke run."""
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
    scores = json.loads((run_dir / "scores.json").read_text())
    results = json.loads((run_dir / "submission.json").read_text())["results"]
    return {"submission_sha256": sha256_file(run_dir / "submission.json"),
            "top10": [entry["image_names"] for entry in results],
            "val_map10_official_by_epoch": [r["val_map10_official"] for r in rows],
            "train_loss_by_epoch": [r["train_loss"] for r in rows],
            "scores": {split: scores[split]["map10_official"] for split in SPLITS},
            "machine": machine_signature()}


def differences(expected: dict[str, Any], got: dict[str, Any]) -> list[str]:
    """What differs: bytes only on the machine signature the fingerprint was made on."""
    found = []
    same_machine = expected["machine"] == got["machine"]
    want, have = expected["submission_sha256"], got["submission_sha256"]
    if same_machine and want != have:
        found.append(f"submission sha256 {have} (fingerprint {want})")
    tolerance = 0.0 if same_machine else FIGURE_TOLERANCE
    by_epoch = zip(expected["val_map10_official_by_epoch"], got["val_map10_official_by_epoch"])
    pairs = [(f"val at epoch {i}", a, b) for i, (a, b) in enumerate(by_epoch)]
    pairs += [(f"{split} official mAP@10", expected["scores"][split], got["scores"].get(split))
              for split in expected["scores"]]
    for name, a, b in pairs:
        if b is None or abs(a - b) > tolerance:
            found.append(f"{name}: {b} (fingerprint {a})")
    if len(expected["val_map10_official_by_epoch"]) != len(got["val_map10_official_by_epoch"]):
        found.append("a different number of evaluations")
    if not same_machine:
        found += ranking_differences(expected["top10"], got.get("top10", []))
    return found


def ranking_differences(expected: list[list[str]], got: list[list[str]]) -> list[str]:
    """Where another processor's rankings stray beyond a swapped near tie (see the module docstring)."""
    if len(expected) != len(got):
        return [f"{len(got)} ranked queries (fingerprint {len(expected)})"]
    changed = [(q, len(set(want) - set(have))) for q, (want, have) in enumerate(zip(expected, got))
               if want != have]
    found = [f"query {q}: {lost} of its top 10 replaced" for q, lost in changed if lost > 1]
    if len(changed) > RANKING_SLACK:
        found.append(f"{len(changed)} queries ranked differently (at most {RANKING_SLACK} may: near ties)")
    return found


def run_smoke(workdir: Path) -> Path:
    """The smoke pipeline in its own data and runs folders (the tests' smoke run does the same)."""
    cfg = config.load("smoke", data_root=str(workdir / "data"), runs_root=str(workdir / "runs"),
                      pretrained=str(workdir / "data" / "foundation" / "foundation.pt"), run_name="smoke-run")
    return runner.run_pipeline(cfg)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.fingerprint",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("--write", action="store_true", help=f"write {FINGERPRINT.relative_to(REPO_ROOT)}")
    args = parser.parse_args(argv)
    try:
        with tempfile.TemporaryDirectory(prefix="kit-fingerprint-") as tmp:
            got = measure(run_smoke(Path(tmp)))
    except KitError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    if args.write:
        atomic_write_text(FINGERPRINT, json.dumps(got, indent=1) + "\n")
        print(f"wrote {FINGERPRINT}")
        return 0
    found = differences(json.loads(FINGERPRINT.read_text()), got)
    print("\n".join(found) if found else "the smoke pipeline matches the committed fingerprint")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())

"""Pretrain the demo's foundation model again from its recipe and compare it with the shipped one.

`make foundation`: exit 0 when the bytes are those of data/foundation/ (lib/demo/foundation.py);
--ship writes the result as the shipped checkpoint instead.

    python -m tools.foundation [--profile demo] [--ship] [key=value ...]
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

import torch

from lib import config as config_mod
from lib.config import Config
from lib.demo.dataset import ensure_demo_data
from lib.demo.foundation import SHIPPED_DIR, FoundationError, ensure_foundation, recipe, shipped_for
from lib.errors import KitError
from lib.files import atomic_write_text, sha256_file
from lib.paths import portable


def processor() -> str:
    """The CPU's model name and torch's kernel level: what a pretraining's last bits depend on."""
    cpuinfo = Path("/proc/cpuinfo")
    names = [line.split(":", 1)[1].strip() for line in cpuinfo.read_text().splitlines()
             if line.startswith("model name")] if cpuinfo.is_file() else []
    kernels = torch.backends.cpu.get_cpu_capability()
    return f"{names[0] if names else 'unknown CPU'}, torch {torch.__version__} {kernels}"


def rebuild(cfg: Config, ship: bool = False, progress: bool = True) -> int:
    """Pretrain the foundation again in a scratch folder and compare it with the shipped one (exit 0: the
    same bytes); `ship` writes it as the shipped checkpoint instead."""
    ensure_demo_data(cfg, progress=progress)
    scratch = cfg.path("data_root") / "foundation-rebuild" / "foundation.pt"
    for stale in (scratch, scratch.with_name(scratch.name + ".recipe.json")):
        stale.unlink(missing_ok=True)
    made = ensure_foundation(cfg.replace(pretrained=str(scratch)), progress=progress, use_shipped=False)
    wanted, digest = recipe(cfg), sha256_file(made)
    name = f"{cfg.profile}-seed{cfg.demo_seed}"
    if ship:
        SHIPPED_DIR.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(made, SHIPPED_DIR / f"{name}.pt")
        meta = {"recipe": wanted, "sha256": digest, "made_on": processor(),
                "command": "make foundation ARGS=--ship"}
        atomic_write_text(SHIPPED_DIR / f"{name}.json", json.dumps(meta, indent=1) + "\n")
        print(f"shipped {portable(SHIPPED_DIR / (name + '.pt'))}: sha256 {digest}")
        return 0
    shipped = shipped_for(wanted)
    if shipped is None:
        print(f"made {portable(made)} (sha256 {digest}); nothing ships for this recipe "
              f"({portable(SHIPPED_DIR)}): --ship makes it the shipped one")
        return 1
    meta = json.loads(shipped.with_suffix(".json").read_text())
    if digest == meta["sha256"]:
        print(f"same bytes as the shipped {portable(shipped)}: sha256 {digest}")
        return 0
    print(f"differs from the shipped {portable(shipped)}: sha256 {digest} here, {meta['sha256']} shipped; "
          f"shipped made on {meta['made_on']}, this is {processor()} (another processor's kernels change "
          "the last bits of a pretraining; the same kind gives the same bytes)")
    return 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.foundation", description=__doc__.split("\n")[0])
    parser.add_argument("--profile", default="demo")
    parser.add_argument("--ship", action="store_true", help="write the result as the shipped checkpoint")
    parser.add_argument("overrides", nargs="*", help="key=value parameter overrides")
    args = parser.parse_args(argv)
    try:
        cfg = config_mod.load(args.profile, **config_mod.parse_overrides(args.overrides))
        if not cfg.generate_demo_data:
            raise FoundationError(f"profile {args.profile} downloads its pretrained weights: nothing to "
                                  "rebuild")
        return rebuild(cfg, ship=args.ship)
    except KitError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

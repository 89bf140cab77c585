"""Shared fixtures: a smoke-profile pipeline run in a temporary folder, notebooks executed once."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

FIXTURES = Path(__file__).parent / "fixtures"


@pytest.fixture(scope="session")
def smoke_workspace(tmp_path_factory) -> dict:
    """Where the smoke pipeline writes: its own data and runs folders, never the repo's."""
    root = tmp_path_factory.mktemp("smoke")
    overrides = {"data_root": str(root / "data"), "runs_root": str(root / "runs"),
                 "pretrained": str(root / "data" / "foundation" / "foundation.pt"),
                 "run_name": "smoke-run"}
    return {"root": root, "overrides": overrides, "executed": {},
            "parameters": {"expect_improvement": False}}  # one smoke epoch promises no gain


@pytest.fixture(scope="session")
def smoke_notebook(smoke_workspace):
    """Execute a pipeline notebook on the smoke profile (each at most once, in pipeline order)."""
    from lib import config, pipeline, runs

    cfg = config.load("smoke", **smoke_workspace["overrides"])
    executed = smoke_workspace["executed"]

    def params(run_dir: Path) -> dict:
        return {"profile": "smoke", "run_dir": str(run_dir), "overrides": smoke_workspace["overrides"],
                **smoke_workspace["parameters"]}

    def run(name: str) -> Path:
        if name not in executed:
            if "run_dir" not in smoke_workspace:
                smoke_workspace["run_dir"] = runs.create_run_dir(cfg)
            run_dir = smoke_workspace["run_dir"]
            for step in pipeline.PIPELINE[: pipeline.PIPELINE.index(name)]:
                if step not in executed and (pipeline.NOTEBOOK_DIR / f"{step}.ipynb").exists():
                    executed[step] = pipeline.run_notebook(step, run_dir, params(run_dir), timeout_s=600)
            executed[name] = pipeline.run_notebook(name, run_dir, params(run_dir), timeout_s=600)
        return executed[name]

    return run

"""lib.train.launch: a run's files, no clobbering, torchrun with two CPU processes, the CLI."""
from __future__ import annotations

import json
import math
import re

import pytest
import torch

from lib import runs
from lib.model.checkpoints import load_checkpoint
from lib.model.factory import model_from_config
from lib.runs import RunDirError
from lib.train.launch import launch, process_group_backend, train
from tests.train import make_table, tiny_cfg


def test_run_writes_log_metrics_and_checkpoints(reference):
    run, result = reference["root"] / "run", reference["result"]
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [(r["epoch"], r["step"]) for r in rows] == [(0, 0), (1, 4), (2, 8)]
    assert rows[0]["train_loss"] is None and rows[1]["train_loss"] > 0
    assert all(math.isfinite(r["val_loss"]) and r["val_recall@1"] == 0.25 for r in rows)
    assert [r["val_map10_official"] for r in rows] == pytest.approx([0.6, 0.9, 0.7])
    assert reference["calls"] == [False, False, False]  # the evaluator sees the model in eval mode
    log = (run / "out.log").read_text()
    assert log.count("| step ") == 4 and "step 2/8 epoch 1 loss" in log and "samples/s" in log
    assert log.count("| eval epoch") == 3 and "logit_scale" in log
    assert (run / "params.yaml").is_file()
    assert runs.read_params(run) == reference["cfg"]
    assert [p.name for p in result.checkpoints] == ["epoch_1.pt", "epoch_2.pt"]
    assert (result.best_epoch, result.best_by) == (1, "val_map10_official")  # not the last epoch
    assert result.best_checkpoint.name == "epoch_1.pt"
    for name in ("epoch_1.pt", "epoch_2.pt", "latest.pt"):
        ckpt = load_checkpoint(run / "checkpoints" / name)  # verified against its .sha256
        assert {"epoch", "step", "name", "state_dict", "optimizer", "scaler", "rng", "config"} <= set(ckpt)
    last = load_checkpoint(run / "checkpoints" / "latest.pt")
    assert (last["epoch"], last["step"], last["name"]) == (2, 8, "kit-micro-vit")
    assert last["state_dict"]["logit_scale"] <= math.log(100)
    model, _, _ = model_from_config(reference["cfg"], checkpoint=run / "checkpoints" / "epoch_2.pt")
    assert torch.equal(model.state_dict()["visual.proj"], last["state_dict"]["visual.proj"])


def test_refuses_to_clobber_a_run(reference, tmp_path):
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "checkpoints" / "epoch_1.pt").write_bytes(b"x")
    with pytest.raises(RunDirError, match=f"{re.escape(str(run))}.*--resume latest"):
        train(reference["cfg"], run, reference["table"], progress=False)
    assert not (run / "out.log").exists()


@pytest.mark.slow
def test_two_processes_with_gloo(tmp_path, monkeypatch):
    """torchrun -m lib.train with 2 CPU processes: sharded data, gathered loss, rank 0 writes."""
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    run = tmp_path / "run"
    (run / "data").mkdir(parents=True)
    make_table(tmp_path / "images").to_csv(run / "data" / "train.csv", index=False)  # the default table
    (tmp_path / "images" / "img06.jpg").write_bytes(b"not a jpeg")  # one rank meets it, both agree
    cfg = tiny_cfg(tmp_path, stop_epoch=1, schedule_epochs=2, warmup_steps=1, max_bad_image_fraction=0.1)
    result = launch(cfg, run, processes=2, progress=False)
    assert [p.name for p in result.checkpoints] == ["epoch_1.pt"]
    ckpt = load_checkpoint(result.checkpoints[0])
    assert (ckpt["world_size"], ckpt["steps_per_epoch"], ckpt["step"]) == (2, 2, 2)  # 16 / 2 / 4
    assert not any(k.startswith("module.") for k in ckpt["state_dict"])
    losses = [float(line.split(" loss ")[1].split()[0]) for line in (run / "out.log").read_text().splitlines()
              if "| step " in line]
    assert losses and all(math.isfinite(v) for v in losses)
    log = (run / "out.log").read_text()
    assert "2 process(es)" in log and log.count("skipped bad image") == 1 and "img06.jpg" in log
    assert list(ckpt["train_state"]["bad_images"]) == [str(tmp_path / "images" / "img06.jpg")]


def test_the_cli_trains_with_the_runs_params_yaml(tmp_path, capsys):
    """`python -m lib.train --run-dir runs/<name>`: the run's parameters, a one-line refusal otherwise."""
    from lib.train import launch as launch_module

    cfg = tiny_cfg(tmp_path, stop_epoch=1, schedule_epochs=1, lr=3e-3, run_name="cli")
    run = runs.create_run(cfg)
    make_table(tmp_path / "images", n=8).to_csv(run / "data" / "train.csv", index=False)
    assert launch_module.main(["--run-dir", str(run), "--no-progress"]) == 0
    assert load_checkpoint(run / "checkpoints" / "epoch_1.pt")["config"] == cfg.to_dict()
    assert launch_module.main(["--run-dir", str(tmp_path / "nothing-here")]) == 1
    assert "has no params.yaml" in capsys.readouterr().err


def test_the_process_group_backend_follows_the_device():
    assert process_group_backend(torch.device("cuda", 0)) == "nccl"
    assert process_group_backend(torch.device("cpu")) == "gloo"

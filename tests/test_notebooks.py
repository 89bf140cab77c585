"""The pipeline notebooks, executed end to end by papermill on the smoke profile."""
import json

import nbformat
import numpy as np
import pandas as pd
import pytest

from lib.data.attributes import CAR_TYPES
from lib.demo.dataset import read_truth
from lib.eval.metrics import evaluate_files
from lib.eval.rescore import ABLATION, FIRST_STAGE
from lib.eval.submission import validate_submission

pytestmark = [pytest.mark.notebook, pytest.mark.slow]


def _outputs_text(path) -> str:
    nb = nbformat.read(path, as_version=4)
    return "\n".join(o.get("text", "") for c in nb.cells if c.cell_type == "code"
                     for o in c.get("outputs", []))


def test_01_prepare_writes_checked_tables(smoke_notebook, smoke_workspace):
    executed = smoke_notebook("01_prepare")
    run_dir = smoke_workspace["run_dir"]
    assert "prepared tables OK" in _outputs_text(executed)
    train = pd.read_csv(run_dir / "data" / "train.csv", keep_default_na=False)
    assert {"filepath", "title", "image", "kind", "colour", "brand", "type"} <= set(train.columns)
    vocab = json.loads((run_dir / "data" / "vocabulary.json").read_text())
    truth = read_truth(smoke_workspace["root"] / "data", "train")  # what the generator drew and said
    cars = truth[truth["kind"] == "car"]
    says_colour = cars["attribute"].str[0].str.islower()
    bare_type = cars["attribute"].str.rstrip(".") == cars["type"]
    assert vocab == {"colours": sorted(set(cars.loc[says_colour, "colour"])), "types": list(CAR_TYPES),
                     "brands": sorted(set(cars.loc[~bare_type, "brand"]))}
    gt_lines = (run_dir / "data" / "val_gt.txt").read_text(encoding="utf-8").splitlines()
    assert len(gt_lines) == len(pd.read_csv(run_dir / "data" / "val.csv"))


def test_02_augment_completes_car_captions_only(smoke_notebook, smoke_workspace):
    executed = smoke_notebook("02_augment")
    run_dir = smoke_workspace["run_dir"]
    assert "train_augmented.csv OK" in _outputs_text(executed)
    table = pd.read_csv(run_dir / "data" / "train_augmented.csv", keep_default_na=False)
    cars = table[table["kind"] == "car"]
    changed = cars[cars["title"] != cars["original_title"]]
    # every training car caption is a bare type ("Minivan.": no colour, no brand) or "colour Brand" (no
    # type): each is completed, with exactly the fields it lacks (the smoke fills all three, as the demo)
    assert len(changed) == len(cars) > 0
    truth = read_truth(smoke_workspace["root"] / "data", "train").set_index("image").loc[cars["image"]]
    lacks_colour = ~truth["attribute"].str[0].str.islower().to_numpy()
    lacks_brand = ~np.array([b in a for a, b in zip(truth["attribute"], truth["brand"], strict=True)])
    lacks_type = (truth["attribute"].str.rstrip(".") != truth["type"]).to_numpy()
    assert ((cars["filled_colour"] != "").to_numpy() == lacks_colour).all()
    assert ((cars["filled_brand"] != "").to_numpy() == lacks_brand).all()
    assert ((cars["filled_type"] != "").to_numpy() == lacks_type).all()
    assert lacks_colour.any() and lacks_brand.any() and lacks_type.any()
    assert cars["title"].str.fullmatch(r"[a-z]+ \S.* \S*[^.]").all()  # the reference's form: white Audi SUV


def test_03_train_writes_checkpoints_and_curves(smoke_notebook, smoke_workspace):
    executed = smoke_notebook("03_train")
    run_dir = smoke_workspace["run_dir"]
    assert "kept epoch: 1 (by submit_epoch)" in _outputs_text(executed)  # the smoke's last, as the demo's 5
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [0, 1], "evaluated at the start and after the one smoke epoch"
    assert rows[1]["val_map10_official"] > rows[0]["val_map10_official"]  # 03 checks the gain too
    assert (run_dir / "checkpoints" / "epoch_1.pt").exists()


def test_04_infer_writes_a_valid_scored_submission(smoke_notebook, smoke_workspace):
    executed = smoke_notebook("04_infer")
    run_dir = smoke_workspace["run_dir"]
    assert "submission OK" in _outputs_text(executed)
    scores = json.loads((run_dir / "scores.json").read_text())
    assert scores["checkpoint"] == "epoch_1.pt", "infer must pick the fine-tuned checkpoint"
    wanted = {"map10_official", "map10_standard", "car_map10_official", "person_map10_official"}
    assert wanted <= set(scores["val"])
    assert "map10_official" in scores["test"], "the demo knows its test answers and scores them"
    per_query = pd.read_csv(run_dir / "per_query.csv", keep_default_na=False)
    test = per_query[per_query["split"] == "test"]
    for board in ("A", "B"):  # each board's scores are the means of its queries' APs
        assert scores[f"test_{board}"]["map10_official"] == pytest.approx(
            test.loc[test["board"] == board, "ap_official"].mean())
    assert set(test["board"]) == {"A", "B"} and abs((test["board"] == "A").sum() - len(test) / 2) <= 1
    data_root = smoke_workspace["root"] / "data"
    assert validate_submission(run_dir / "submission.json", data_root / "test" / "test_text.txt",
                               data_root / "test" / "test_images") == []
    rescored = evaluate_files(data_root / "test" / "test_gt.txt", run_dir / "submission.json")
    assert rescored["map10_official"] == pytest.approx(scores["test"]["map10_official"])
    assert rescored["map10_standard"] == pytest.approx(scores["test"]["map10_standard"])
    best = max((json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()),
               key=lambda r: r["val_map10_official"])
    assert best["val_map10_official"] == pytest.approx(scores["val"]["map10_official"])  # the same number
    cells = {c.get("id"): c for c in nbformat.read(executed, as_version=4).cells}
    side_by_side = "".join(o.get("data", {}).get("text/html", "") for o in cells["compare3"].outputs)
    assert all(f">{name}<" in side_by_side for name in [FIRST_STAGE, *ABLATION])  # every setting's row
    assert all(f">{split}<" in side_by_side for split in ("val", "test_A", "test_B"))
    grid = cells["compare7"].outputs
    assert any("image/png" in o.get("data", {}) for o in grid) or "A3R changed no" in _outputs_text(executed)


def test_a_custom_profile_outside_configs_reaches_every_notebook(smoke_notebook, smoke_workspace, tmp_path):
    """The competition path (no generated data, organisers' layout, the model made tiny), from a copy
    of competition.yaml outside configs/ with changed values, as a user would run it
    (make reproduce PROFILE=my.yaml): params.yaml and every notebook carry the file's values, not
    the stock profile's."""
    import yaml

    from lib import config, runs
    from lib.model.checkpoints import load_checkpoint
    from lib.pipeline import runner

    smoke_notebook("01_prepare")  # makes the miniature dataset and its foundation model
    root = smoke_workspace["root"]
    mine = {"data_root": str(root / "data"), "runs_root": str(root / "runs"), "run_name": "competition-mini",
            "model": "kit-tiny-vit", "pretrained": smoke_workspace["overrides"]["pretrained"],
            "batch_size": 16, "eval_batch_size": 32, "warmup_steps": 2, "schedule_epochs": 2,
            "stop_epoch": 1, "submit_epoch": 1, "workers": 0, "log_every": 2, "lr": 2.5e-4,
            "query_policy": "surveillance",
            "no_gain_over_zero_shot": "warn"}  # the stock data at another lr and batch: no gain promised
    profile = tmp_path / "my.yaml"
    stock = yaml.safe_load((config.CONFIG_DIR / "competition.yaml").read_text())
    profile.write_text("# configs/competition.yaml, my values\n" + yaml.safe_dump({**stock, **mine}))
    cfg = config.load(str(profile))  # what `python -m lib.pipeline --profile my.yaml` does
    assert not cfg.generate_demo_data and cfg.profile == "competition"
    run_dir = runner.run_pipeline(cfg, log=lambda *_: None)

    assert runs.read_params(run_dir) == cfg and cfg.lr == 2.5e-4 and cfg.query_policy == "surveillance"
    for name in runner.PIPELINE:  # each notebook says which parameters it ran with
        shown = _outputs_text(run_dir / f"{name}.ipynb")
        assert "lr=0.00025" in shown and "query_policy=surveillance" in shown, name
    assert "query policy: surveillance" in _outputs_text(run_dir / "04_infer.ipynb")
    trained = load_checkpoint(run_dir / "checkpoints" / "epoch_1.pt")["config"]
    assert trained["lr"] == 2.5e-4
    assert " lr 2.5000e-04 " in (run_dir / "out.log").read_text()  # the end of the warmup
    scores = json.loads((run_dir / "scores.json").read_text())
    assert scores["checkpoint"] == "epoch_1.pt"
    test = root / "data" / "test"  # the submission is valid and scores what scores.json says
    problems = validate_submission(run_dir / "submission.json", test / "test_text.txt", test / "test_images")
    assert problems == []
    rescored = evaluate_files(test / "test_gt.txt", run_dir / "submission.json")
    assert rescored["map10_official"] == pytest.approx(scores["test"]["map10_official"], abs=1e-9)

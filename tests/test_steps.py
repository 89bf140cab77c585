"""lib.steps: a step counts as completed only while what it wrote is unchanged; parameters change
only through a recorded act."""
import pytest

from lib import steps
from lib.config import ConfigError
from lib.files import atomic_write_text, sha256_file, write_sidecar


def fake_step(run_dir, step):
    for pattern in (f"{step}.ipynb", *steps.OUTPUTS[step]):
        path = run_dir / pattern.replace("*", "1")
        atomic_write_text(path, f"{step} {pattern}")
        if path.suffix == ".pt":
            write_sidecar(path, "f" * 64)  # a checkpoint's digest is its sidecar's


def test_completed_steps_lead_until_the_first_missing_or_changed_one(tmp_path):
    for step in ("01_prepare", "02_augment", "03_train"):
        fake_step(tmp_path, step)
        steps.mark_done(tmp_path, step)
    assert steps.completed(tmp_path) == ["01_prepare", "02_augment", "03_train"]
    recorded = steps.read_state(tmp_path)["steps"]["03_train"]["outputs"]
    assert recorded["checkpoints/epoch_1.pt"] == "f" * 64 and "03_train.ipynb" in recorded
    (tmp_path / "data" / "train_augmented.csv").write_text("edited by hand")
    assert steps.completed(tmp_path) == ["01_prepare"]  # 02 changed: it and everything after run again
    (tmp_path / "data" / "train_augmented.csv").unlink()
    assert steps.completed(tmp_path) == ["01_prepare"]


def test_forget_from_and_the_history(tmp_path):
    for step in steps.PIPELINE:
        fake_step(tmp_path, step)
        steps.mark_done(tmp_path, step)
    steps.forget_from(tmp_path, "03_train")
    assert steps.completed(tmp_path) == ["01_prepare", "02_augment"]
    steps.note(tmp_path, "continued", step="03_train", overrides={"lr": 1e-5})
    assert steps.read_state(tmp_path)["history"][-1]["overrides"] == {"lr": 1e-5}
    assert steps.completed(tmp_path / "nothing") == []


# --- parameters change only through a recorded act ---------------------------------------------------
def test_every_parameter_says_which_step_it_changes():
    from lib.config import valid_keys

    assert sorted(steps.AFFECTS) == sorted(valid_keys())
    assert steps.AFFECTS["lr"] == "03_train"
    assert steps.AFFECTS["query_policy"] == "03_train"  # the val evaluator's retrieval picks the epoch
    assert steps.AFFECTS["attribute_fields"] == "02_augment" and steps.AFFECTS["workers"] is None
    assert steps.earliest_affected({"query_policy", "demo_seed", "workers"}) == "01_prepare"
    assert steps.earliest_affected({"workers", "log_every"}) is None


def _finished_run(tmp_path, **overrides):
    from lib import config, runs

    cfg = config.load("smoke", runs_root=str(tmp_path), run_name="r", **overrides)
    run_dir = runs.create_run(cfg)
    steps.record_parameters(run_dir, cfg)
    for step in steps.PIPELINE:
        fake_step(run_dir, step)
        steps.begin(run_dir, step, cfg)
        steps.mark_done(run_dir, step)
    return cfg, run_dir


def test_a_change_is_recorded_and_redoes_the_steps_it_affects(tmp_path):
    from lib import runs

    cfg, run_dir = _finished_run(tmp_path)
    new, redo = steps.change_parameters(run_dir, {"query_policy": "none", "workers": 5}, by="test")
    assert redo == "03_train"
    assert runs.read_params(run_dir) == new == cfg.replace(query_policy="none", workers=5)
    assert steps.completed(run_dir) == ["01_prepare", "02_augment"]
    event = steps.read_state(run_dir)["history"][-1]
    assert event["event"] == "parameters changed" and event["by"] == "test"
    assert event["changes"] == {"workers": [0, 5], "query_policy": ["strip_prefix", "none"]}
    assert event["redo"] == ["03_train", "04_infer"]
    assert steps.read_state(run_dir)["params_sha256"] == sha256_file(run_dir / "params.yaml")
    assert steps.change_parameters(run_dir, {"lr": new.lr}, by="test") == (new, None)  # no change, no record
    assert steps.read_state(run_dir)["history"][-1] == event


def test_a_change_that_touches_no_output_redoes_nothing_and_the_folder_cannot_change(tmp_path):
    _, run_dir = _finished_run(tmp_path)
    assert steps.change_parameters(run_dir, {"log_every": 7}, by="test")[1] is None
    assert steps.completed(run_dir) == list(steps.PIPELINE)
    with pytest.raises(ConfigError, match="run_name cannot change in an existing run"):
        steps.change_parameters(run_dir, {"run_name": "other"}, by="test")


def test_a_params_yaml_edited_by_hand_is_found_and_recorded(tmp_path):
    _, run_dir = _finished_run(tmp_path)
    params = run_dir / "params.yaml"
    assert steps.adopt_hand_edits(run_dir) is None  # nothing edited
    params.write_text(params.read_text().replace("lr: 0.0001", "lr: 0.5"))
    assert steps.adopt_hand_edits(run_dir) == "03_train"
    event = steps.read_state(run_dir)["history"][-1]
    assert event["by"] == "params.yaml edited by hand" and event["changes"] == {"lr": [0.0001, 0.5]}
    assert steps.completed(run_dir) == ["01_prepare", "02_augment"]
    assert steps.adopt_hand_edits(run_dir) is None  # recorded: no longer an edit
    params.write_text(params.read_text().replace("lr: 0.5", "lr: -1"))
    with pytest.raises(ConfigError, match="lr=-1.0 is out of range"):
        steps.adopt_hand_edits(run_dir)


def test_what_a_step_starts_from(tmp_path):
    cfg, run_dir = _finished_run(tmp_path)
    digest = steps.inputs_digest(run_dir, "03_train", cfg)
    assert steps.may_continue(run_dir, "03_train", cfg)
    assert steps.inputs_digest(run_dir, "03_train", cfg.replace(soup="greedy", workers=3)) == digest
    assert steps.inputs_digest(run_dir, "03_train", cfg.replace(seed=1)) != digest  # training changes
    assert steps.inputs_digest(run_dir, "02_augment", cfg.replace(seed=1)) == steps.inputs_digest(
        run_dir, "02_augment", cfg)  # a training parameter is not 02's input
    (run_dir / "data" / "train_augmented.csv").write_text("other captions")
    assert not steps.may_continue(run_dir, "03_train", cfg)  # 02's output changed under it


def test_a_notebook_run_by_hand_is_recorded_and_marks_itself_and_the_later_steps_stale(tmp_path, monkeypatch):
    from lib import runs

    monkeypatch.delenv(steps.PIPELINE_ENV, raising=False)
    cfg, run_dir = _finished_run(tmp_path)
    opened, folder = steps.open_step("04_infer", run_dir, '{"query_policy": "none"}')  # papermill's -p form
    assert folder == run_dir.resolve() and opened == cfg.replace(query_policy="none")
    assert runs.read_params(run_dir) == opened and steps.completed(run_dir) == ["01_prepare", "02_augment"]
    history = steps.read_state(run_dir)["history"]
    assert [e["event"] for e in history[-2:]] == ["parameters changed", "run by hand"]
    assert history[-2]["by"] == "04_infer run by hand" and history[-1]["step"] == "04_infer"
    with pytest.raises(ConfigError, match="overrides must be a mapping"):
        steps.open_step("04_infer", run_dir, "[1, 2]")
    monkeypatch.setenv(steps.PIPELINE_ENV, "1")  # the pipeline's own kernels record nothing here
    before = steps.read_state(run_dir)
    assert steps.open_step("04_infer", run_dir) == (opened, run_dir.resolve())
    assert steps.read_state(run_dir) == before


def test_01_by_hand_without_a_run_starts_one_from_the_profile(tmp_path, monkeypatch):
    monkeypatch.delenv(steps.PIPELINE_ENV, raising=False)
    profile = tmp_path / "mine.yaml"
    profile.write_text(f"extends: smoke\nruns_root: {tmp_path}/runs\nrun_name: hand\n")
    cfg, run_dir = steps.open_step("01_prepare", "", {"lr": 2e-4}, profile=str(profile))
    assert run_dir == tmp_path / "runs" / "hand" and cfg.lr == 2e-4
    assert steps.read_state(run_dir)["history"][0]["by"] == "01_prepare run by hand"

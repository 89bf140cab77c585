"""lib.steps: a step counts as completed only while what it wrote is unchanged."""
from lib import steps
from lib.files import atomic_write_text
from lib.model.checkpoints import write_sidecar


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

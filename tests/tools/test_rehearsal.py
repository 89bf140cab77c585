"""tools.rehearsal: the competition profile, changed only where a CPU needs it, at the real sizes."""
import json

from lib import config
from lib.demo.foundation import SHIPPED_DIR
from tools import rehearsal


def test_the_sizes_are_the_competitions():
    assert rehearsal.REAL_SIZES == {"train_size": 126_117, "val_size": 10_000, "test_size": 17_611}


def test_the_overrides_are_the_cpu_ones_and_the_competition_profile_accepts_them(tmp_path):
    changed = rehearsal.overrides(tmp_path / "data", 40)
    cfg = config.load("competition", **config.parse_overrides(changed))
    competition = config.load("competition")
    digest = json.loads((SHIPPED_DIR / "demo-seed0.json").read_text())["sha256"]
    assert (cfg.model, cfg.pretrained_sha256, cfg.max_steps, cfg.submit_epoch) == (
        "kit-tiny-vit", digest, 40, 1)
    assert cfg.runs_root == "runs/rehearsal" and cfg.no_gain_over_zero_shot == "warn"
    kept = {k for k, v in config.differences(cfg).items() if getattr(competition, k) == v}
    assert not kept, "an override repeats the profile's value"
    assert set(config.differences(cfg)) - set(config.differences(competition)) == {
        "data_root", "model", "pretrained", "pretrained_sha256", "max_steps", "submit_epoch",
        "no_gain_over_zero_shot"}


def test_the_step_table_reads_seconds_and_peak_memory(tmp_path):
    steps = {"01_prepare": {"seconds": 61.4, "peak_memory_bytes": 2_345_000_000},
             "02_augment": {"seconds": 9.5}}
    (tmp_path / "pipeline.json").write_text(json.dumps({"steps": steps}))
    assert rehearsal.step_table(tmp_path).splitlines()[2:] == ["| 01_prepare | 61 | 2.3 GB |",
                                                               "| 02_augment | 10 | – |"]


def test_bad_sizes_are_refused_in_one_line(capsys):
    assert rehearsal.main(["--sizes", "10,20"]) == 2
    assert "--sizes takes three counts" in capsys.readouterr().err

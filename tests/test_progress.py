"""lib.progress: a bar reports plain lines to the pipeline's progress log, and only there."""
from __future__ import annotations

import pytest

from lib import progress


@pytest.fixture
def channel(tmp_path, monkeypatch):
    path = tmp_path / "progress.log"
    monkeypatch.setenv(progress.LOG_ENV, str(path))
    return path


def _lines(path) -> list[str]:
    return path.read_text(encoding="utf-8").splitlines() if path.exists() else []


def test_a_bar_reports_its_end_and_nothing_at_zero(channel, capsys):
    with progress.bar(total=10, desc="checking images", unit="img") as bar:
        bar.update(4)
        bar.update(6)
    lines = _lines(channel)
    assert lines[-1].startswith("checking images: 10/10 img (100 %), ") and lines[-1].endswith("00:00 left")
    assert not any(line.startswith("checking images: 0/10") for line in lines)  # 0 of N says nothing
    assert "10/10" in capsys.readouterr().err  # shown where the work runs too


def test_reports_are_at_most_every_few_seconds(channel, monkeypatch):
    clock = iter(range(0, 1000, 1))  # one second per display
    monkeypatch.setattr(progress.time, "monotonic", lambda: float(next(clock)))
    with progress.bar(total=100, desc="training", unit="step", mininterval=0) as bar:
        for _ in range(12):
            bar.update()
    counts = [line.split(":")[1].split("/")[0].strip() for line in _lines(channel)]
    # the first display with progress (n = 1), then one at least EVERY_S (5) seconds later, then the end
    assert counts == ["1", "6", "11", "12"]


def test_long_work_reports_less_often():
    assert [progress.report_interval(s) for s in (0, 30, 50, 100, 3600)] == [5.0, 5.0, 5.0, 10.0, 60.0]


def test_a_hidden_bar_still_reports_and_a_bar_not_reporting_writes_nothing(channel, capsys):
    with progress.bar(total=3, desc="quiet", show=False) as bar:
        bar.update(3)
    assert capsys.readouterr().err == "" and _lines(channel)[-1].startswith("quiet: 3/3 it (100 %)")
    with progress.bar(total=3, desc="rank 1", report=False, show=False) as bar:
        bar.update(3)
    assert not any(line.startswith("rank 1") for line in _lines(channel))


def test_without_a_pipeline_nothing_is_written(tmp_path, monkeypatch):
    monkeypatch.delenv(progress.LOG_ENV, raising=False)
    monkeypatch.chdir(tmp_path)
    progress.note("a line")
    with progress.bar(total=2, desc="x", show=False) as bar:
        bar.update(2)
    assert list(tmp_path.iterdir()) == []


def test_write_goes_to_both(channel, capsys):
    progress.write("epoch 1/5, val mAP@10 0.3164")
    assert capsys.readouterr().out == "epoch 1/5, val mAP@10 0.3164\n"
    assert _lines(channel) == ["epoch 1/5, val mAP@10 0.3164"]

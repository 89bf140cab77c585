"""The GPU proof's shared measuring helpers, on the CPU (where memory cannot be measured)."""
import time

import torch

from tools.gpu import measure as gpu_measure


def test_a_budget_counts_down_from_its_creation():
    budget = gpu_measure.Budget(0.05)
    assert not budget.over() and 0 < budget.left() <= 0.05
    time.sleep(0.06)
    assert budget.over() and budget.elapsed() >= 0.05


def test_a_failure_is_one_line_and_says_out_of_memory():
    assert gpu_measure.failure(ValueError("bad value\nmore detail")) == "ValueError: bad value"
    oom = torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
    assert gpu_measure.is_out_of_memory(oom)
    assert gpu_measure.failure(oom).startswith("out of memory: OutOfMemoryError: CUDA out of memory")
    assert not gpu_measure.is_out_of_memory(RuntimeError("shape mismatch"))
    assert len(gpu_measure.failure(RuntimeError("x" * 1000))) <= 400


def test_fit_count_cuts_to_what_the_time_allows():
    assert gpu_measure.fit_count(100, rate=10.0, seconds=5.0) == 50
    assert gpu_measure.fit_count(100, rate=10.0, seconds=60.0) == 100
    assert gpu_measure.fit_count(100, rate=10.0, seconds=-1.0) == 1  # the time is up: one, to report a figure


def test_memory_is_none_off_cuda_and_timing_works():
    cpu = torch.device("cpu")
    gpu_measure.reset_peak(cpu)
    assert gpu_measure.peak_gb(cpu) is None
    result, seconds = gpu_measure.timed(lambda: 6 * 7, cpu)
    assert result == 42 and seconds >= 0
    model = torch.nn.Linear(2, 1)
    model(torch.ones(1, 2)).sum().backward()
    gpu_measure.free(cpu, model)
    assert model.weight.grad is None

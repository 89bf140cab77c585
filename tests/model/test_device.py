"""lib.model.device: one rule for the device and the precision, with the errors a user can act on."""
import contextlib

import pytest
import torch

from lib.model.device import DeviceError, autocast, resolve_device, resolve_precision


def test_devices():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device(torch.device("cpu")) == torch.device("cpu")
    expected = "cuda:1" if torch.cuda.is_available() else "cpu"
    assert resolve_device("auto", local_rank=1) == torch.device(expected)
    if not torch.cuda.is_available():
        with pytest.raises(DeviceError, match="device=cpu or device=auto"):
            resolve_device("cuda")


def test_precisions():
    cpu, gpu = torch.device("cpu"), torch.device("cuda", 0)
    assert resolve_precision("auto", cpu) == "fp32" and resolve_precision("auto", gpu) == "bf16"
    assert resolve_precision("bf16", cpu) == "bf16" and resolve_precision("fp16", gpu) == "fp16"
    with pytest.raises(DeviceError, match="needs a GPU"):
        resolve_precision("fp16", cpu)
    with pytest.raises(DeviceError, match="fp8"):
        resolve_precision("fp8", cpu)


def test_autocast_casts_matmuls_only_when_asked():
    cpu = torch.device("cpu")
    assert autocast("fp32", cpu) is contextlib.nullcontext
    a = torch.ones(2, 2)
    with autocast("bf16", cpu)():
        assert (a @ a).dtype == torch.bfloat16
    with autocast("fp32", cpu)():
        assert (a @ a).dtype == torch.float32


def test_the_thread_count_reaches_torch_and_zero_keeps_its_default():
    from lib.model.device import use_threads

    before = torch.get_num_threads()
    try:
        use_threads(1)
        assert torch.get_num_threads() == 1
        use_threads(0)
        assert torch.get_num_threads() == 1  # 0: left as it is
    finally:
        torch.set_num_threads(before)

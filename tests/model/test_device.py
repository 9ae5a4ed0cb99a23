"""Mixed precision follows from the device: what runs in which dtype on a CPU."""

from __future__ import annotations

from contextlib import nullcontext

import pytest
import torch

from model import distributed
from model.device import (
    autocast_for,
    grad_scaler_for,
    memory_format_for,
    resolve_device,
    training_dtype,
)

CPU = torch.device("cpu")


def _matmul_dtype(context) -> torch.dtype:
    with context:
        return (torch.ones(4, 4) @ torch.ones(4, 4)).dtype


def test_inference_on_a_cpu_stays_float32_and_bf16_is_asked_for() -> None:
    assert _matmul_dtype(autocast_for(CPU)) == torch.float32  # the service's fp16 is CUDA's
    assert _matmul_dtype(autocast_for(CPU, torch.float16)) == torch.float32
    assert _matmul_dtype(autocast_for(CPU, None)) == torch.float32
    assert _matmul_dtype(autocast_for(CPU, torch.bfloat16)) == torch.bfloat16


def test_cpu_training_is_float32_unless_bf16_is_asked_for() -> None:
    assert training_dtype(CPU) is None and memory_format_for(CPU) == torch.preserve_format
    assert training_dtype(CPU, cpu_bf16=True) == torch.bfloat16
    assert memory_format_for(CPU, cpu_bf16=True) == torch.channels_last
    assert not grad_scaler_for(CPU).is_enabled()  # bf16 has float32's range: no loss scaling


def test_a_gpu_index_the_machine_lacks_is_refused(monkeypatch) -> None:
    # torch.device("cuda:3") is made without a GPU; the error came at the first tensor moved.
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert resolve_device("cuda:1") == torch.device("cuda", 1)
    assert resolve_device("cuda") == torch.device("cuda")
    with pytest.raises(ValueError, match=r"'cuda:2' asked for, but this machine has 2 CUDA"):
        resolve_device("cuda:2")


def test_cuda_without_a_gpu_is_refused(monkeypatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == CPU
    with pytest.raises(ValueError, match="no CUDA device is available"):
        resolve_device("cuda")


def test_training_takes_bf16_only_where_the_gpu_runs_it(monkeypatch) -> None:
    """torch counts emulated bf16 as supported by default: on a T4 training picked bf16, whose
    convolutions leave the tensor cores, and turned the fp16 loss scaling off."""
    native = {"cuda": False}  # a T4: bf16 tensors can be made, not run fast

    def is_bf16_supported(including_emulation: bool = True) -> bool:
        return including_emulation or native["cuda"]

    monkeypatch.setattr(torch.cuda, "device", lambda device: nullcontext())
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", is_bf16_supported)
    cuda = torch.device("cuda", 0)
    assert training_dtype(cuda) == torch.float16
    native["cuda"] = True  # Ampere and later
    assert training_dtype(cuda) == torch.bfloat16


def test_under_torchrun_a_gpu_index_is_refused_and_each_rank_takes_its_own(monkeypatch) -> None:
    """Two ranks given --device cuda:1 both took that GPU, which nccl refuses; a local rank past
    the GPUs was a raw 'invalid device ordinal'."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    taken = []
    monkeypatch.setattr(torch.cuda, "set_device", taken.append)
    monkeypatch.setattr(distributed.dist, "init_process_group", lambda *a, **k: None)
    monkeypatch.setattr(distributed.dist, "destroy_process_group", lambda *a, **k: None)
    monkeypatch.setattr(distributed.dist, "is_initialized", lambda: False)
    for name, value in (("WORLD_SIZE", "2"), ("LOCAL_WORLD_SIZE", "2"), ("RANK", "1")):
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("LOCAL_RANK", "1")
    refused = pytest.raises(ValueError, match="each process takes the GPU of its local rank")
    with refused, distributed.process_group("cuda:1"):
        pass
    with distributed.process_group("cuda") as device:
        assert device == torch.device("cuda", 1) and taken == [device]
    monkeypatch.setenv("LOCAL_RANK", "2")
    with (
        pytest.raises(ValueError, match="this machine has 2 CUDA"),
        distributed.process_group("cuda"),
    ):
        pass

"""Mixed precision follows from the device: what runs in which dtype on a CPU."""

from __future__ import annotations

import pytest
import torch

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

"""The device is chosen once, and mixed precision follows from it.

Inference: fp16 autocast on CUDA (`autocast_for`), plain float32 (a nullcontext) on the CPU;
the scene model also runs in bfloat16 on a CPU with AMX (`cpu_has_amx`, model/detect.py).
Training on CUDA: bf16 autocast where the GPU has it (Ampere and later: no loss scaling), else
fp16 with a GradScaler (`training_dtype`, `grad_scaler_for`); tensors in channels_last, the
layout tensor-core convolutions run fastest in (`memory_format_for`). Training on the CPU is
float32 in the default layout, as it always was, unless asked for bf16 (`--cpu-bf16`): then
bf16 autocast in channels_last, which AMX runs in hardware.
"""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext

import torch


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """ "auto" is CUDA when there is one, else the CPU; asking for CUDA without one (or for a
    GPU index the machine does not have) is a ValueError rather than a silent fall-back to a
    device 50 times slower."""
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    resolved = torch.device(device)
    if resolved.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device {str(device)!r} asked for, but no CUDA device is available")
        count = torch.cuda.device_count()
        if resolved.index is not None and resolved.index >= count:
            raise ValueError(
                f"device {str(device)!r} asked for, but this machine has {count} CUDA "
                f"device{'s' if count != 1 else ''} (cuda:0 to cuda:{count - 1})"
            )
    return resolved


def autocast_for(
    device: torch.device, dtype: torch.dtype | None = torch.float16
) -> AbstractContextManager:
    """Autocast to `dtype` on CUDA (fp16 unless told: what the service runs); on the CPU only
    to bf16 (CPU fp16 is no faster), else float32; float32 wherever `dtype` is None."""
    if dtype is not None and (device.type == "cuda" or dtype == torch.bfloat16):
        return torch.autocast(device.type, dtype=dtype)
    return nullcontext()


def cpu_has_amx() -> bool:
    """Whether this CPU has AMX, the matrix units of Xeon's 4th generation and later, which run
    bfloat16 convolutions in hardware; elsewhere bfloat16 is emulated and slower than float32.
    (torch's own check, which its compiler uses: the public API has none.)"""
    return torch.cpu._is_amx_tile_supported()


def training_dtype(device: torch.device, cpu_bf16: bool = False) -> torch.dtype | None:
    """What training autocasts to: bf16 on a CUDA device that runs it in hardware (Ampere and
    later), else fp16; on the CPU None (float32), or bf16 when asked for (`cpu_bf16`: with AMX
    the 256-px scene tiles ran a training step 2.7x and a fine-tune 1.5x as fast, BENCHMARKS.md
    section 4). torch's check counts emulated bf16 as supported unless told not to: on a T4 it
    would pick bf16, whose convolutions leave the tensor cores for generic kernels."""
    if device.type != "cuda":
        return torch.bfloat16 if cpu_bf16 else None
    with torch.cuda.device(device):
        native = torch.cuda.is_bf16_supported(including_emulation=False)
        return torch.bfloat16 if native else torch.float16


def grad_scaler_for(device: torch.device) -> torch.amp.GradScaler:
    """Loss scaling only where training runs in fp16 (bf16 has float32's range)."""
    return torch.amp.GradScaler(device.type, enabled=training_dtype(device) == torch.float16)


def memory_format_for(device: torch.device, cpu_bf16: bool = False) -> torch.memory_format:
    """channels_last on CUDA and for bf16 on the CPU (oneDNN's fast layout); otherwise tensors
    keep the layout they have."""
    if device.type == "cuda" or cpu_bf16:
        return torch.channels_last
    return torch.preserve_format

"""The device is chosen once, and mixed precision follows from it: fp16 autocast on CUDA,
plain float32 (a nullcontext) on the CPU."""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext

import torch


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """ "auto" is CUDA when there is one, else the CPU; asking for CUDA without one is an error
    rather than a silent fall-back to a device 50 times slower."""
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    resolved = torch.device(device)
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} asked for, but no CUDA device is available")
    return resolved


def autocast_for(device: torch.device) -> AbstractContextManager:
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.float16)
    return nullcontext()

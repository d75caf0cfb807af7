"""Pick the fastest available device: CUDA, then Apple MPS, then the CPU."""

from __future__ import annotations

import torch


def pick_device() -> torch.device:
    """``cuda`` when a CUDA GPU is visible, else ``mps`` on Apple silicon, else ``cpu``."""
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def describe_device(device: torch.device | str | None = None) -> str:
    """One line naming the device (default: :func:`pick_device`'s), e.g. ``cuda (NVIDIA H200)``."""
    device = torch.device(device) if device is not None else pick_device()
    if device.type == "cuda":
        return f"cuda ({torch.cuda.get_device_name(device)})"
    if device.type == "mps":
        return "mps (Apple GPU)"
    return f"cpu ({torch.get_num_threads()} threads)"

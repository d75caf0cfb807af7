"""Shared fixtures: the ``device`` fixture runs a test on the CPU and on every accelerator present."""

import pytest
import torch

DEVICES = ["cpu"]
if torch.cuda.is_available():
    DEVICES.append("cuda")
if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
    DEVICES.append("mps")


@pytest.fixture(params=DEVICES)
def device(request):
    """A torch.device; tests that take it run once per available device."""
    return torch.device(request.param)

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


@pytest.fixture(scope="module")
def one_thread():
    """Torch on one thread for a module of tiny models: the fastest setting for them, and two
    threads thrash when the 2-core machine is busy. Use with ``pytestmark``."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)

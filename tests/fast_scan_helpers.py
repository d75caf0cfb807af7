"""Helpers of the fast scan's tests (``test_fast_scan_*.py``): seeded inputs, outputs and
gradients of a fixed random scalar, and the float64 sequential loop as the reference."""

from __future__ import annotations

import torch

import minimamba_core as mm
from minimamba_core import fast_scan

# Max abs error against the float64 loop, inputs O(1): float64 agrees to rounding (seen <= 2e-13
# at l = 1000); float32 as tests/test_scan.py.
TOL = {torch.float64: dict(atol=1e-10, rtol=1e-10), torch.float32: dict(atol=5e-5, rtol=5e-5)}
NAMES = ["y", "h_last", "dx", "ddelta", "dA", "dB", "dC", "dh0"]


def scan_inputs(b, l, d, n, dtype=torch.float64, seed=0, device="cpu"):
    """``chunked_scan``'s inputs (``delta`` already positive), leaves that require grad."""
    g = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.randn(*s, generator=g, dtype=torch.float64)  # noqa: E731
    inp = dict(x=r(b, l, d), delta=torch.nn.functional.softplus(r(b, l, d) * 0.5 - 1.0),
               A=-torch.exp(r(d, n) * 0.5), B=r(b, l, n), C=r(b, l, n), h0=r(b, d, n))
    return {k: v.to(device, dtype).requires_grad_() for k, v in inp.items()}


def outputs_and_grads(fn, inp):
    """``(y, h_last)`` and the gradients of a fixed random scalar of both, for every input."""
    y, h = fn(inp)
    g = torch.Generator().manual_seed(1)
    wy = torch.randn(y.shape, generator=g, dtype=torch.float64).to(y)
    wh = torch.randn(h.shape, generator=g, dtype=torch.float64).to(h)
    grads = torch.autograd.grad((y * wy).sum() + (h * wh).sum(), list(inp.values()))
    return [y, h, *grads]


def reference(inp):
    """:func:`outputs_and_grads` of the float64 sequential loop on the same inputs."""
    inp64 = {k: v.detach().double().cpu().requires_grad_() for k, v in inp.items()}
    return outputs_and_grads(lambda i: mm.selective_scan_sequential(
        i["x"], i["delta"], i["A"], i["B"], i["C"], h0=i["h0"], return_last_state=True), inp64)


def fast(schedule):
    """``chunked_scan`` with ``schedule`` (``"chained"`` or ``"summarized"``) as a function of the inputs."""
    return lambda i: fast_scan.chunked_scan(i["x"], i["delta"], i["A"], i["B"], i["C"], i["h0"],
                                            schedule=schedule)


def assert_matches(got, ref, dtype):
    for name, a, b in zip(NAMES, got, ref):
        torch.testing.assert_close(a.detach().double().cpu(), b, **TOL[dtype], msg=name)


def full_inputs(dtype, seed=0):
    """Inputs of the whole selective scan (with D, z and the delta bias): activations in
    ``dtype``; ``A, D, delta_bias`` float32 as the model keeps them (float64 with float64)."""
    g = torch.Generator().manual_seed(seed)
    b, l, d, n = 2, 37, 3, 4
    r = lambda *s: torch.randn(*s, generator=g, dtype=torch.float64)  # noqa: E731
    p = torch.float64 if dtype == torch.float64 else torch.float32
    return dict(x=r(b, l, d).to(dtype), delta=r(b, l, d).to(dtype), A=-torch.exp(r(d, n)).to(p),
                B=r(b, l, n).to(dtype), C=r(b, l, n).to(dtype), D=r(d).to(p), z=r(b, l, d).to(dtype),
                delta_bias=(r(d) * 0.1).to(p))


def scan_and_grads(fn, inp):
    """``fn(**inp, delta_softplus=True)`` and the gradients of the sum of its squares."""
    leaves = {k: v.detach().clone().requires_grad_() for k, v in inp.items()}
    y = fn(**leaves, delta_softplus=True)
    y.double().square().sum().backward()
    return y, {k: v.grad for k, v in leaves.items()}

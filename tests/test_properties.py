"""Property-based tests of the scan twins (hypothesis; capped examples, no deadline).

For random shapes, lengths 1-300, optional ``D``/``z``/``delta_bias``/``h0`` and a random split
point: the parallel and sequential scans agree, and a prefill (parallel scan of the first
``s`` steps) followed by one-step updates (the sequential scan with ``l = 1``, carrying the
state) gives the outputs and last state of the whole sequence. Runs are derandomized (the same
examples every run) and write no example database. Guards of issue 9; the last test injects a
bug and shows the property check firing.
"""

from __future__ import annotations

import importlib

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

scan_mod = importlib.import_module("minimamba_core.scan")

SETTINGS = settings(max_examples=40, deadline=None, derandomize=True, database=None)
# float32 budget, relative to the largest |y| (or |h|): measured at most 6.8e-6 over these examples
RTOL = 1e-4


@st.composite
def scan_cases(draw):
    b = draw(st.integers(1, 3))
    l = draw(st.integers(1, 300))
    return dict(b=b, l=l, d=draw(st.integers(1, 6)), n=draw(st.integers(1, 8)),
                split=draw(st.integers(0, l)), seed=draw(st.integers(0, 2**31 - 1)),
                use_D=draw(st.booleans()), use_z=draw(st.booleans()),
                use_bias=draw(st.booleans()), use_h0=draw(st.booleans()))


def _inputs(case) -> dict:
    b, l, d, n = case["b"], case["l"], case["d"], case["n"]
    g = torch.Generator().manual_seed(case["seed"])
    r = lambda *s: torch.randn(*s, generator=g)  # noqa: E731
    A_log = torch.log(torch.arange(1, n + 1, dtype=torch.float32)).repeat(d, 1)  # official init
    inp = dict(x=r(b, l, d), delta=r(b, l, d) - 2.0, A=-torch.exp(A_log + 0.1 * r(d, n)),
               B=r(b, l, n), C=r(b, l, n))
    if case["use_D"]:
        inp["D"] = r(d)
    if case["use_z"]:
        inp["z"] = r(b, l, d)
    if case["use_bias"]:
        inp["delta_bias"] = r(d)
    if case["use_h0"]:
        inp["h0"] = r(b, d, n)
    return inp


def _close(a, ref, what):
    err = float((a - ref).abs().max() / ref.abs().max().clamp_min(1e-6)) if ref.numel() else 0.0
    assert err <= RTOL, f"{what}: relative error {err:.2e} > {RTOL:.0e}"


def check_twins(case) -> None:
    inp = _inputs(case)
    y_p, h_p = scan_mod.selective_scan_parallel(**inp, delta_softplus=True, return_last_state=True)
    y_s, h_s = scan_mod.selective_scan_sequential(**inp, delta_softplus=True, return_last_state=True)
    assert y_p.shape == y_s.shape == inp["x"].shape and h_p.shape == h_s.shape == (case["b"], case["d"], case["n"])
    _close(y_p, y_s, "y, parallel vs sequential")
    _close(h_p, h_s, "last state, parallel vs sequential")


def check_prefill_then_steps(case) -> None:
    """Parallel prefill of the first ``split`` steps, then one step at a time."""
    inp = _inputs(case)
    s = case["split"]
    y_full, h_full = scan_mod.selective_scan_sequential(**inp, delta_softplus=True, return_last_state=True)
    per_step = ("x", "delta", "B", "C", "z")  # the inputs that have a time axis
    part = lambda t0, t1: {k: (v[:, t0:t1] if k in per_step else v) for k, v in inp.items()}  # noqa: E731
    first = part(0, s)
    ys, h = [], first.pop("h0", None)
    if s > 0:
        y, h = scan_mod.selective_scan_parallel(**first, h0=h, delta_softplus=True, return_last_state=True)
        ys.append(y)
    for t in range(s, case["l"]):
        step = part(t, t + 1)
        step.pop("h0", None)
        y, h = scan_mod.selective_scan_sequential(**step, h0=h, delta_softplus=True, return_last_state=True)
        ys.append(y)
    _close(torch.cat(ys, dim=1), y_full, f"y, prefill {s} + steps")
    _close(h, h_full, f"last state, prefill {s} + steps")


@SETTINGS
@given(scan_cases())
def test_parallel_equals_sequential(case):
    check_twins(case)


@SETTINGS
@given(scan_cases())
def test_prefill_then_steps_equals_full_sequence(case):
    check_prefill_then_steps(case)


@SETTINGS
@given(scan_cases())
def test_split_anywhere_with_parallel_continuation(case):
    """Two parallel scans chained through the state equal one parallel scan."""
    inp = _inputs(case)
    s = case["split"]
    y_full, h_full = scan_mod.selective_scan_parallel(**inp, delta_softplus=True, return_last_state=True)
    per_step = ("x", "delta", "B", "C", "z")
    a = {k: (v[:, :s] if k in per_step else v) for k, v in inp.items()}
    b = {k: (v[:, s:] if k in per_step else v) for k, v in inp.items() if k != "h0"}
    y_a, h_a = scan_mod.selective_scan_parallel(**a, delta_softplus=True, return_last_state=True)
    y_b, h_b = scan_mod.selective_scan_parallel(**b, h0=h_a, delta_softplus=True, return_last_state=True)
    _close(torch.cat([y_a, y_b], dim=1), y_full, f"y, split at {s}")
    _close(h_b, h_full, f"last state, split at {s}")


def test_property_check_fires_on_a_scan_that_ignores_h0(monkeypatch):
    original = scan_mod.selective_scan_sequential

    def ignores_h0(*args, h0=None, **kwargs):  # the bug: every call starts from zeros
        return original(*args, **kwargs)
    case = dict(b=2, l=20, d=3, n=4, split=7, seed=0, use_D=True, use_z=True, use_bias=True, use_h0=False)
    check_prefill_then_steps(case)  # passes with the real scan
    monkeypatch.setattr(scan_mod, "selective_scan_sequential", ignores_h0)
    with pytest.raises(AssertionError, match="prefill 7 \\+ steps"):
        check_prefill_then_steps(case)

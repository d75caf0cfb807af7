"""The two selective scans (``minimamba_core/scan.py``) against hand-computed values and a float64
sequential reference, and their guard: bad input gives an exception that names the argument,
what was expected and what was given, never a crash deep inside (issue 9); ``check_finite``
makes them raise on NaN/inf. (The engine behind the parallel scan: ``test_fast_scan_*.py``.)"""

import math

import pytest
import torch
from helpers import expect_error

import minimamba_core as mm

SCANS = [mm.selective_scan_sequential, mm.selective_scan_parallel]
# Explicit tolerances against the float64 sequential reference (max abs error, inputs O(1)).
# fp32: measured worst case ~3e-6 on outputs and ~1e-5 on gradients over the grid below.
TOL = {torch.float64: dict(atol=1e-10, rtol=1e-10), torch.float32: dict(atol=5e-5, rtol=5e-5)}


@pytest.mark.parametrize("scan", SCANS, ids=lambda f: f.__name__)
def test_hand_computed_three_steps(scan):
    # d_inner = d_state = 1, A = -1, delta = ln 2  =>  A_bar = exp(-ln 2) = 1/2, B_bar = ln 2 * B.
    # With B = C = 1 and x = (1, 2, 3), by hand:
    #   h1 = ln2 * 1                  = 1.00 ln2
    #   h2 = h1/2 + ln2 * 2           = 2.50 ln2
    #   h3 = h2/2 + ln2 * 3           = 4.25 ln2       and y_t = C h_t = h_t.
    ln2 = math.log(2.0)
    x = torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64).view(1, 3, 1)
    delta = torch.full((1, 3, 1), ln2, dtype=torch.float64)
    A = torch.tensor([[-1.0]], dtype=torch.float64)
    B = torch.ones(1, 3, 1, dtype=torch.float64)
    C = torch.ones(1, 3, 1, dtype=torch.float64)
    y, h = scan(x, delta, A, B, C, return_last_state=True)
    expected = torch.tensor([1.0, 2.5, 4.25], dtype=torch.float64) * ln2
    torch.testing.assert_close(y.view(3), expected, atol=1e-15, rtol=1e-15)
    torch.testing.assert_close(h.view(()), expected[-1], atol=1e-15, rtol=1e-15)
    # D skip and gate, still by hand: y_t + D x_t, then times silu(z_t) = z/(1+e^-z).
    D = torch.tensor([0.5], dtype=torch.float64)
    z = torch.tensor([0.0, 1.0, -2.0], dtype=torch.float64).view(1, 3, 1)
    y2 = scan(x, delta, A, B, C, D=D, z=z)
    silu = z.view(3) / (1 + torch.exp(-z.view(3)))
    torch.testing.assert_close(y2.view(3), (expected + 0.5 * x.view(3)) * silu, atol=1e-15, rtol=1e-15)


def _inputs(b, l, d, n, dtype, with_z, with_D, with_bias, with_h0, seed=0, device="cpu"):
    g = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.randn(*s, generator=g, dtype=torch.float64)  # noqa: E731
    inp = dict(
        x=r(b, l, d), delta=r(b, l, d) * 0.5 - 1.0,
        A=-torch.exp(r(d, n) * 0.5), B=r(b, l, n), C=r(b, l, n),
        D=r(d) if with_D else None, z=r(b, l, d) if with_z else None,
        delta_bias=r(d) * 0.1 if with_bias else None, h0=r(b, d, n) if with_h0 else None,
    )
    return {k: (v.to(device, dtype).requires_grad_() if v is not None else None) for k, v in inp.items()}


def _run(scan, inp):
    y, h = scan(**inp, delta_softplus=True, return_last_state=True)
    # A scalar that depends on every output and the last state, with fixed random weights.
    g = torch.Generator().manual_seed(1)
    wy = torch.randn(y.shape, generator=g, dtype=torch.float64).to(y.device, y.dtype)
    wh = torch.randn(h.shape, generator=g, dtype=torch.float64).to(h.device, h.dtype)
    loss = (y * wy).sum() + (h * wh).sum()
    names = [k for k, v in inp.items() if v is not None]
    grads = torch.autograd.grad(loss, [inp[k] for k in names])
    return y, h, dict(zip(names, grads))


def _reference(b, l, d, n, **opts):
    return _run(mm.selective_scan_sequential, _inputs(b, l, d, n, torch.float64, **opts))


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=str)
@pytest.mark.parametrize("l", [1, 2, 3, 7, 64, 100, 1000])
@pytest.mark.parametrize("scan", SCANS, ids=lambda f: f.__name__)
def test_twins_match_float64_reference_over_lengths(scan, l, dtype, device):
    b, d, n = 2, 3, 4
    opts = dict(with_z=True, with_D=True, with_bias=True, with_h0=True)
    y_ref, h_ref, g_ref = _reference(b, l, d, n, **opts)
    y, h, g = _run(scan, _inputs(b, l, d, n, dtype, **opts, device=device))
    y, h, g = y.cpu(), h.cpu(), {k: v.cpu() for k, v in g.items()}
    assert y.dtype == dtype and h.dtype == dtype
    torch.testing.assert_close(y.double(), y_ref, **TOL[dtype])
    torch.testing.assert_close(h.double(), h_ref, **TOL[dtype])
    assert g.keys() == g_ref.keys()
    for name in g_ref:
        torch.testing.assert_close(g[name].double(), g_ref[name], **TOL[dtype], msg=f"grad of {name}")


@pytest.mark.parametrize("with_z,with_D,with_bias,with_h0", [
    (False, False, False, False), (True, False, False, False), (False, True, False, False),
    (False, False, True, False), (False, False, False, True), (True, True, True, True)])
@pytest.mark.parametrize("shape", [(1, 1, 1), (3, 5, 2), (2, 16, 16)], ids=str)
def test_parallel_matches_reference_with_and_without_options(shape, with_z, with_D, with_bias, with_h0, device):
    b, d, n = shape
    opts = dict(with_z=with_z, with_D=with_D, with_bias=with_bias, with_h0=with_h0)
    y_ref, h_ref, g_ref = _reference(b, 37, d, n, **opts)
    for dtype in (torch.float64, torch.float32):
        y, h, g = _run(mm.selective_scan_parallel, _inputs(b, 37, d, n, dtype, **opts, device=device))
        y, h, g = y.cpu(), h.cpu(), {k: v.cpu() for k, v in g.items()}
        torch.testing.assert_close(y.double(), y_ref, **TOL[dtype])
        torch.testing.assert_close(h.double(), h_ref, **TOL[dtype])
        for name in g_ref:
            torch.testing.assert_close(g[name].double(), g_ref[name], **TOL[dtype], msg=f"grad of {name}")


def test_half_precision_inputs_give_half_output_and_fp32_state():
    inp = _inputs(2, 50, 4, 3, torch.bfloat16, True, True, True, False)
    inp = {k: (v.detach() if v is not None else None) for k, v in inp.items()}
    y_ref, h_ref = mm.selective_scan_sequential(
        **{k: (v.double() if v is not None else None) for k, v in inp.items()},
        delta_softplus=True, return_last_state=True)
    for scan in SCANS:
        y, h = scan(**inp, delta_softplus=True, return_last_state=True)
        assert y.dtype == torch.bfloat16 and h.dtype == torch.float32
        # fp32 arithmetic on bf16 inputs: only the final rounding to bf16 (2^-8 relative) remains.
        torch.testing.assert_close(y.double(), y_ref, atol=2e-2, rtol=1e-2)
        torch.testing.assert_close(h.double(), h_ref, atol=1e-5, rtol=1e-5)


def test_front_door_dispatches_and_rejects_unknown_method():
    inp = _inputs(1, 5, 2, 2, torch.float64, False, False, False, False)
    inp = {k: v.detach() for k, v in inp.items() if v is not None}
    seq = mm.selective_scan(**inp, method="sequential")
    par = mm.selective_scan(**inp)
    torch.testing.assert_close(seq, par, atol=1e-12, rtol=1e-12)
    with pytest.raises(ValueError, match="method must be one of"):
        mm.selective_scan(**inp, method="fast")


def test_empty_sequence_gives_empty_output_and_unchanged_state():
    inp = _inputs(2, 0, 3, 4, torch.float32, True, True, True, True)
    inp = {k: v.detach() for k, v in inp.items() if v is not None}
    for scan in SCANS:
        y, h = scan(**inp, return_last_state=True)
        assert y.shape == (2, 0, 3)
        torch.testing.assert_close(h, inp["h0"])


@pytest.mark.parametrize("scan", SCANS, ids=lambda f: f.__name__)
def test_wrong_rank_is_rejected(scan):
    inp = _inputs(1, 4, 2, 3, torch.float32, False, False, False, False)
    inp = {k: v.detach() for k, v in inp.items() if v is not None}
    inp["x"] = inp["x"][0]  # (l, d): missing batch dimension
    with pytest.raises(ValueError, match=r"x must have shape \(b, l, d_inner\)"):
        scan(**inp)


@pytest.mark.parametrize("scan", SCANS, ids=lambda f: f.__name__)
def test_mismatched_shape_is_rejected(scan):
    inp = _inputs(1, 4, 2, 3, torch.float32, False, False, False, False)
    inp = {k: v.detach() for k, v in inp.items() if v is not None}
    inp["B"] = inp["B"][:, :, :2]  # d_state 2 while A says 3
    with pytest.raises(ValueError, match=r"B must have shape \(1, 4, 3\)"):
        scan(**inp)


@pytest.mark.parametrize("scan", SCANS, ids=lambda f: f.__name__)
def test_integer_input_is_rejected(scan):
    inp = _inputs(1, 4, 2, 3, torch.float32, False, False, False, False)
    inp = {k: v.detach() for k, v in inp.items() if v is not None}
    inp["x"] = inp["x"].long()
    with pytest.raises(TypeError, match="x must be a floating-point tensor"):
        scan(**inp)


@pytest.mark.parametrize("scan", SCANS, ids=lambda f: f.__name__)
def test_check_finite_rejects_nan(scan):
    inp = _inputs(1, 4, 2, 3, torch.float32, False, False, False, False)
    inp = {k: v.detach() for k, v in inp.items() if v is not None}
    inp["delta"][0, 2, 1] = float("nan")
    with pytest.raises(ValueError, match="delta contains NaN or inf"):
        scan(**inp, check_finite=True)


# ----------------------------------------------------------------------------------------------
# bad input at the scans' door (issue 9): every argument named; empty input gives empty output
# ----------------------------------------------------------------------------------------------

GUARDED = {"parallel": mm.selective_scan_parallel, "sequential": mm.selective_scan_sequential,
           "front door": mm.selective_scan}


def _guard_inputs(b=2, l=5, d=3, n=4, **replace):
    g = torch.Generator().manual_seed(0)
    inp = dict(x=torch.randn(b, l, d, generator=g), delta=torch.randn(b, l, d, generator=g),
               A=-torch.rand(d, n, generator=g), B=torch.randn(b, l, n, generator=g),
               C=torch.randn(b, l, n, generator=g), D=torch.ones(d), z=torch.randn(b, l, d, generator=g),
               delta_bias=torch.zeros(d), h0=torch.zeros(b, d, n))
    inp.update(replace)
    return inp


SCAN_CASES = [
    # (what is wrong, replacement inputs, error, words the message must contain)
    ("x rank", dict(x=torch.randn(4, 3)), ValueError, ["x", "(b, l, d_inner)", "(4, 3)"]),
    ("x integer", dict(x=torch.ones(2, 5, 3, dtype=torch.long)), TypeError, ["x", "floating-point", "torch.int64"]),
    ("delta integer", dict(delta=torch.ones(2, 5, 3, dtype=torch.int32)), TypeError, ["delta", "torch.int32"]),
    ("delta shape", dict(delta=torch.randn(2, 4, 3)), ValueError, ["delta", "(2, 5, 3)", "(2, 4, 3)"]),
    ("A shape", dict(A=torch.randn(2, 4)), ValueError, ["A", "d_inner=3", "(2, 4)"]),
    ("B shape", dict(B=torch.randn(2, 5, 3)), ValueError, ["B", "(2, 5, 4)", "(2, 5, 3)"]),
    ("C batch", dict(C=torch.randn(1, 5, 4)), ValueError, ["C", "(2, 5, 4)", "(1, 5, 4)"]),
    ("D shape", dict(D=torch.ones(4)), ValueError, ["D", "(3,)", "(4,)"]),
    ("z shape", dict(z=torch.randn(2, 5, 4)), ValueError, ["z", "(2, 5, 3)", "(2, 5, 4)"]),
    ("delta_bias shape", dict(delta_bias=torch.zeros(3, 1)), ValueError, ["delta_bias", "(3,)", "(3, 1)"]),
    ("h0 for another batch", dict(h0=torch.zeros(1, 3, 4)), ValueError, ["h0", "(2, 3, 4)", "(1, 3, 4)"]),
    ("A a list", dict(A=[[-1.0] * 4] * 3), TypeError, ["A", "torch.Tensor", "list"]),
    ("B bool", dict(B=torch.ones(2, 5, 4, dtype=torch.bool)), TypeError, ["B", "torch.bool"]),
]


@pytest.mark.parametrize("scan", GUARDED.values(), ids=GUARDED.keys())
@pytest.mark.parametrize("case, replace, error, words", SCAN_CASES, ids=[c[0] for c in SCAN_CASES])
def test_scan_rejects_bad_input(scan, case, replace, error, words):
    expect_error(lambda: scan(**_guard_inputs(**replace)), error, *words)


@pytest.mark.parametrize("scan", GUARDED.values(), ids=GUARDED.keys())
def test_scan_rejects_non_tensor_x(scan):
    expect_error(lambda: scan(**_guard_inputs(x=[[[1.0] * 3] * 5] * 2)), TypeError, "x", "list")


def test_scan_rejects_unknown_method():
    expect_error(lambda: mm.selective_scan(**_guard_inputs(), method="fast"), ValueError,
                 "method", "'parallel'", "'fast'")


@pytest.mark.parametrize("scan", GUARDED.values(), ids=GUARDED.keys())
@pytest.mark.parametrize("name", ["x", "delta", "A", "B", "C", "D", "z", "delta_bias", "h0"])
@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_check_finite_raises_on_nan_and_inf(scan, name, bad):
    inp = _guard_inputs()
    inp[name] = inp[name].clone()
    inp[name].view(-1)[1] = bad
    expect_error(lambda: scan(**inp, check_finite=True), ValueError, name, "NaN or inf")


def test_without_check_finite_nan_propagates():
    """What ``check_finite`` is for: a NaN in ``x`` silently spreads otherwise."""
    inp = _guard_inputs()
    inp["x"][0, 1, 0] = math.nan
    assert torch.isnan(mm.selective_scan(**inp)).any()


@pytest.mark.parametrize("scan", GUARDED.values(), ids=GUARDED.keys())
def test_scan_empty_batch_and_empty_sequence_give_empty_results(scan):
    y = scan(**{k: v for k, v in _guard_inputs(b=0).items()})
    assert y.shape == (0, 5, 3)
    h0 = torch.randn(2, 3, 4)
    y, h = scan(**_guard_inputs(l=0, h0=h0), return_last_state=True)
    assert y.shape == (2, 0, 3) and torch.equal(h, h0)  # nothing happened: the state is h0

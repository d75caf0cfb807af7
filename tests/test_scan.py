"""The two selective scans against hand-computed values and a float64 sequential reference."""

import math

import pytest
import torch

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

"""SSD (``minimamba_core/ssd.py``): the three forms are one function, pinned to independent references.

The references: a hand-computed case; Mamba-1's sequential scan (``scan.py``) with ``A`` repeated
over each head's channels, which is what SSD restricts Mamba-1 to; a per-head loop that picks each
head's group by index (the regression check of transformers PR #37533, ``repeat`` vs
``repeat_interleave``); ``torch.autograd.gradcheck`` in float64.
"""

import math
import sys

import pytest
import torch
from helpers import expect_error

import minimamba_core as mm
from minimamba_core.ssd import METHODS, decay_matrix, segsum

F64 = torch.float64


def _inputs(b=2, l=13, h=4, p=3, g=2, n=5, dtype=F64, seed=0, strong=False):
    """Random SSD inputs in the ``mamba_chunk_scan_combined`` layout, every option on."""
    gen = torch.Generator().manual_seed(seed)
    r = lambda *shape: torch.randn(*shape, generator=gen, dtype=dtype)  # noqa: E731
    A = -(torch.rand(h, generator=gen, dtype=dtype) * (60 if strong else 1) + 0.1)  # (h,) < 0
    args = (r(b, l, h, p), r(b, l, h), A, r(b, l, g, n), r(b, l, g, n))
    kw = dict(D=r(h), z=r(b, l, h, p), dt_bias=r(h), dt_softplus=True, initial_states=r(b, h, p, n),
              return_final_states=True)
    return args, kw


def _max_diff(a, b):
    return max((x - y).abs().max().item() for x, y in zip(a, b))


def test_segsum_by_hand():
    a = torch.tensor([1.0, 2.0, 4.0], dtype=F64)
    S = segsum(a)  # [t, s] = a[s+1] + ... + a[t]; -inf above the diagonal
    expected = torch.tensor([[0, -math.inf, -math.inf], [2, 0, -math.inf], [6, 4, 0]], dtype=F64)
    assert torch.equal(S, expected)


def test_decay_matrix_is_exp_of_segsum():
    a = -torch.rand(2, 3, 17, dtype=F64) * 5
    assert torch.equal(decay_matrix(a), torch.exp(segsum(a)))
    assert torch.equal(decay_matrix(a.float()), torch.exp(segsum(a.float())))


def test_hand_computed_case():
    # one head, one channel, one state: A = -1, dt = ln 2 gives exp(dt A) = 1/2; B = C = 1.
    # x = (1, 0, 0): h = (ln 2, ln 2 / 2, ln 2 / 4) and y = h.
    ln2 = math.log(2.0)
    x = torch.tensor([1.0, 0.0, 0.0], dtype=F64).view(1, 3, 1, 1)
    dt = torch.full((1, 3, 1), ln2, dtype=F64)
    A = torch.tensor([-1.0], dtype=F64)
    B = C = torch.ones(1, 3, 1, 1, dtype=F64)
    expected = torch.tensor([ln2, ln2 / 2, ln2 / 4], dtype=F64).view(1, 3, 1, 1)
    for method in METHODS:
        assert torch.allclose(mm.ssd(x, dt, A, B, C, 2, method=method), expected, rtol=0, atol=1e-15), method


@pytest.mark.parametrize("l", [1, 2, 3, 7, 64, 100])
@pytest.mark.parametrize("g", [1, 2, 4])
def test_three_forms_agree_float64(l, g):
    args, kw = _inputs(l=l, g=g, seed=l + g)
    ref = mm.ssd_sequential(*args, **kw)
    assert _max_diff(mm.ssd_quadratic(*args, **kw), ref) < 1e-12
    for Q in (1, 4, 16, 64, 256):  # chunks shorter, equal to and longer than l
        assert _max_diff(mm.ssd_chunked(*args, chunk_size=Q, **kw), ref) < 1e-12, Q


def test_three_forms_agree_on_each_device(device):
    """On every device present: the forms in float64 (float32 on MPS, which lacks float64) against
    the sequential form run in float64 on the CPU, outputs, final states and gradients."""
    dtype = torch.float32 if device.type == "mps" else F64
    tol = 2e-4 if dtype == torch.float32 else 1e-12
    args, kw = _inputs(l=70, g=2, seed=11)
    ref_args = [a.detach().clone().requires_grad_() for a in args]
    ref_y, ref_h = mm.ssd_sequential(*ref_args, **kw)
    gy, gh = torch.randn_like(ref_y), torch.randn_like(ref_h)
    ref_grads = torch.autograd.grad((ref_y * gy).sum() + (ref_h * gh).sum(), ref_args)
    to = lambda t: t.to(device, dtype) if torch.is_tensor(t) else t  # noqa: E731
    forms = {"chunked": lambda *a, **k: mm.ssd_chunked(*a, chunk_size=16, **k),
             "quadratic": mm.ssd_quadratic, "sequential": mm.ssd_sequential}
    for method, form in forms.items():
        dev_args = [to(a).requires_grad_() for a in args]
        y, h = form(*dev_args, **{k: to(v) for k, v in kw.items()})
        assert y.device.type == device.type and h.device.type == device.type
        scale = ref_y.abs().max()
        assert (y.cpu().double() - ref_y).abs().max() / scale < tol, method
        assert (h.cpu().double() - ref_h).abs().max() / ref_h.abs().max() < tol, method
        grads = torch.autograd.grad((y * to(gy)).sum() + (h * to(gh)).sum(), dev_args)
        for name, g, r in zip("x dt A B C".split(), grads, ref_grads):
            assert (g.cpu().double() - r).abs().max() / r.abs().max() < tol, (method, name)


def test_sliced_decay_matrices_are_the_same_function_and_are_not_kept(monkeypatch):
    """Step 1 over slices of heads (``DECAY_BLOCK_BYTES``) gives the same outputs and gradients,
    and with gradients on keeps no per-head ``(Q, Q)`` matrix for the backward (recomputed there)."""
    ssd_module = sys.modules["minimamba_core.ssd"]  # the module; mm.ssd is the function

    args, kw = _inputs(b=2, l=70, h=6, g=2, seed=13)
    leaves = [t.detach().clone().requires_grad_() for t in args]

    def run():
        y, h = mm.ssd_chunked(*leaves, chunk_size=16, **kw)
        grads = torch.autograd.grad((y ** 2).sum() + h.sum(), leaves)
        return y, h, grads

    y0, h0, g0 = run()
    monkeypatch.setattr(ssd_module, "DECAY_BLOCK_BYTES", 1)  # one head per slice
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(tuple(t.shape)) or t, lambda t: t):
        y1, h1, g1 = run()
    assert torch.equal(y0, y1) and torch.equal(h0, h1)
    assert _max_diff(g0, g1) < 1e-12  # A's gradient sums the slices in another order
    # (b, g, r, c, Q, Q) per head: none kept (without slices there are three); C B^T per group stays
    assert saved and not [shape for shape in saved if shape[-2:] == (16, 16) and len(shape) == 6], saved


@pytest.mark.parametrize("options", [
    dict(), dict(D="hp"), dict(dt_limit=(0.05, 0.5)), dict(no_initial=True), dict(no_z=True),
], ids=["all", "D_per_channel", "dt_limit", "zero_initial_state", "no_gate"])
def test_three_forms_agree_with_each_option(options):
    args, kw = _inputs(l=19, seed=3)
    if options.get("D") == "hp":
        kw["D"] = torch.randn(4, 3, dtype=F64)  # (h, p), D_has_hdim
    if "dt_limit" in options:
        kw["dt_limit"] = options["dt_limit"]
    if options.get("no_initial"):
        del kw["initial_states"]
    if options.get("no_z"):
        del kw["z"]
    ref = mm.ssd_sequential(*args, **kw)
    assert _max_diff(mm.ssd_quadratic(*args, **kw), ref) < 1e-12
    assert _max_diff(mm.ssd_chunked(*args, chunk_size=8, **kw), ref) < 1e-12


def test_strong_decay_stays_exact():
    # |A dt| sums to thousands inside one chunk: a segment sum taken as a difference of running
    # sums would cancel catastrophically in float32 (docs: notebook 13 measures it)
    args, kw = _inputs(l=256, strong=True, seed=5)
    kw["dt_bias"] = torch.full((4,), 1.0, dtype=F64)
    x, dt, A = args[:3]
    assert float((torch.nn.functional.softplus(dt + 1.0) * A.abs()).sum(1).max()) > 1000
    ref = mm.ssd_sequential(*args, **kw)
    assert _max_diff(mm.ssd_chunked(*args, chunk_size=256, **kw), ref) < 1e-12
    assert _max_diff(mm.ssd_quadratic(*args, **kw), ref) < 1e-12
    y32 = mm.ssd_chunked(*[t.float() for t in args], chunk_size=256,
                         **{k: v.float() if torch.is_tensor(v) else v for k, v in kw.items()})
    assert (y32[0].double() - ref[0]).abs().max() / ref[0].abs().max() < 1e-5  # measured 1e-7


def test_equals_mamba1_scan_with_a_scalar_A_per_head():
    # SSD is Mamba-1 with A (d_inner, N) constant over each head's channels and B, C shared
    (x, dt, A, B, C), kw = _inputs(l=11, g=1, seed=7)
    b, l, h, p = x.shape
    n = B.shape[-1]
    y = mm.ssd_sequential(x, dt, A, B, C, D=kw["D"], z=kw["z"], dt_bias=kw["dt_bias"], dt_softplus=True)
    per_channel = lambda t: t.repeat_interleave(p, dim=-1)  # noqa: E731  (h,) -> (h * p,)
    y1 = mm.selective_scan_sequential(
        x.flatten(2), per_channel(dt), per_channel(A)[:, None].expand(h * p, n), B[:, :, 0], C[:, :, 0],
        D=per_channel(kw["D"]), z=kw["z"].flatten(2), delta_bias=per_channel(kw["dt_bias"]), delta_softplus=True)
    assert (y.flatten(2) - y1).abs().max() < 1e-12


def test_head_i_reads_group_i_over_heads_per_group():
    # transformers PR #37533: a torch path tiled the groups over the heads (repeat instead of
    # repeat_interleave), undetected because most models have one group. 16 heads, 4 groups:
    # head i must read group i // 4. The reference runs each head alone with its group picked by index.
    (x, dt, A, B, C), _ = _inputs(l=9, h=16, g=4, p=2, seed=11)
    for method in ("chunked", "quadratic", "sequential"):
        y = mm.ssd(x, dt, A, B, C, 4, method=method)
        for i in range(16):
            alone = mm.ssd_sequential(x[:, :, i:i + 1], dt[:, :, i:i + 1], A[i:i + 1], B[:, :, i // 4:i // 4 + 1],
                                      C[:, :, i // 4:i // 4 + 1])
            assert (y[:, :, i:i + 1] - alone).abs().max() < 1e-12, (method, i)


def test_a_split_sequence_continues_from_the_final_state():
    (x, dt, A, B, C), _ = _inputs(l=20, seed=13)
    y, h = mm.ssd_chunked(x, dt, A, B, C, 8, return_final_states=True)
    y1, h1 = mm.ssd_chunked(x[:, :7], dt[:, :7], A, B[:, :7], C[:, :7], 8, return_final_states=True)
    y2, h2 = mm.ssd_chunked(x[:, 7:], dt[:, 7:], A, B[:, 7:], C[:, 7:], 8, initial_states=h1,
                            return_final_states=True)
    assert (torch.cat([y1, y2], 1) - y).abs().max() < 1e-12 and (h2 - h).abs().max() < 1e-12


@pytest.mark.parametrize("method", ["chunked", "quadratic", "sequential"])
def test_gradcheck_float64(method):
    args, kw = _inputs(b=1, l=5, h=2, p=2, g=1, n=2, seed=17)
    leaves = [t.clone().requires_grad_() for t in (*args, kw["D"], kw["z"], kw["dt_bias"], kw["initial_states"])]

    def f(x, dt, A, B, C, D, z, dt_bias, h0):
        y, h = mm.ssd(x, dt, A, B, C, 2, method=method, D=D, z=z, dt_bias=dt_bias, dt_softplus=True,
                      initial_states=h0, return_final_states=True)
        return y, h
    assert torch.autograd.gradcheck(f, leaves, eps=1e-6, atol=1e-8)


def test_dtypes_output_like_x_state_in_float32():
    args, kw = _inputs(l=6, dtype=torch.bfloat16)
    y, h = mm.ssd_chunked(*args, chunk_size=4, **kw)
    assert y.dtype == torch.bfloat16 and h.dtype == torch.float32


# ---- bad input: a clear error naming the argument ------------------------------------------

def _bad(**changes):
    (x, dt, A, B, C), _ = _inputs(l=5, h=4, g=2)
    args = dict(x=x, dt=dt, A=A, B=B, C=C)
    args.update(changes)
    return args


@pytest.mark.parametrize("changes,error,words", [
    (dict(x=torch.randn(2, 5, 12)), ValueError, ["x must have shape (b, l, nheads, headdim)", "(2, 5, 12)"]),
    (dict(B=torch.randn(2, 5, 3, 5), C=torch.randn(2, 5, 3, 5)), ValueError, ["groups", "(dim 2, 3)", "heads", "4"]),
    (dict(dt=torch.randn(2, 5, 3)), ValueError, ["dt must have shape (2, 5, 4)", "(2, 5, 3)"]),
    (dict(A=torch.randn(4, 5)), ValueError, ["A must have shape (4,)"]),
    (dict(C=torch.randn(2, 5, 2, 6)), ValueError, ["C must have shape (2, 5, 2, 5)"]),
    (dict(x=torch.zeros(2, 5, 4, 3, dtype=torch.long)), TypeError, ["x", "floating-point"]),
    (dict(A=None), TypeError, ["A must be a torch.Tensor"]),
])
def test_bad_shapes_are_named(changes, error, words):
    args = _bad(**changes)
    for method in ("chunked", "quadratic", "sequential"):
        expect_error(lambda: mm.ssd(**args, method=method), error, *words)


def test_bad_options_are_named():
    args = _bad()
    for Q in (0, -4, 2.5, True):
        expect_error(lambda: mm.ssd(**args, chunk_size=Q), ValueError, "chunk_size must be a positive int", repr(Q))
    expect_error(lambda: mm.ssd(**args, dt_limit=(0.5, 0.1)), ValueError, "dt_limit", "0 <= lo <= hi", "(0.5, 0.1)")
    expect_error(lambda: mm.ssd(**args, dt_limit=(-1.0, 1.0)), ValueError, "dt_limit")
    expect_error(lambda: mm.ssd(**args, D=torch.randn(3)), ValueError, "D must have shape (4,) or (4, 3)")
    expect_error(lambda: mm.ssd(**args, initial_states=torch.randn(2, 4, 3)), ValueError,
                 "initial_states must have shape (2, 4, 3, 5)")
    expect_error(lambda: mm.ssd(**args, method="scan"), ValueError, "method must be one of", "'scan'")

"""Numerics at the edges: long sequences, extreme parameters, half precision, gradcheck.

Guards of issue 9. Each group keeps one test that injects the bug it guards against (with
``monkeypatch``) and shows the guard firing. The mixer's own float32 guarantees (``A_log`` and ``D``
under a half-precision cast, the convolution and scan under autocast) are in ``test_mixer.py``.
The tolerance budgets are in ``docs/numerics.md``; ``python tests/test_numerics.py`` re-measures
and prints them.
"""

from __future__ import annotations

import copy
import importlib
import math

import pytest
import torch
from torch.autograd.gradcheck import GradcheckError

import minimamba_core as mm

scan_mod = importlib.import_module("minimamba_core.scan")

HALF = [torch.bfloat16, torch.float16]


# ----------------------------------------------------------------------------------------------
# Long sequences, realistic and extreme parameters
# ----------------------------------------------------------------------------------------------

def _inv_softplus(y: torch.Tensor) -> torch.Tensor:
    return torch.log(torch.expm1(y))  # softplus(_inv_softplus(y)) == y


def _long_inputs(l: int, seed: int = 0, dtype=torch.float32):
    """Scan inputs for ``b = 1``, ``d_inner = 5``, ``d_state = 16``, one regime per channel.

    * channels 0, 1 -- realistic: ``A = -exp(A_log)``, ``A_log = log(1..16)``; ``delta =
      softplus(noise + bias)`` with the bias at ``softplus^-1(dt)``, ``dt = 1e-3`` and ``1e-1``
      (the ends of the initial dt range), noise ``N(0, 0.5^2)``; ``x ~ N(0, 1)``.
    * channel 2 -- ``delta = softplus(10) ~ 10`` and ``A = -100``: ``A_bar = exp(-1000) = 0``.
    * channel 3 -- ``delta = 1e-6``: ``A_bar = 1 - 1e-6 |A|``, the longest memory.
    * channel 4 -- ``delta`` log-uniform in ``[1e-6, 10]`` at every step, ``A`` from -1 to -100.
    * channels 2-4 -- inputs scaled by 1e3.
    """
    g = torch.Generator().manual_seed(seed)
    d, n = 5, 16
    x = torch.randn(1, l, d, generator=g)
    x[..., 2:] *= 1e3
    A = -torch.exp(torch.log(torch.arange(1, n + 1, dtype=torch.float32))).repeat(d, 1)  # (d, n)
    A[2] = -100.0
    A[4] = -torch.logspace(0, 2, n)  # -1 ... -100
    delta_bias = torch.zeros(d)
    delta_bias[:2] = _inv_softplus(torch.tensor([1e-3, 1e-1]))
    delta_bias[2] = 10.0  # softplus(10) = 10.0000454
    delta_bias[3] = _inv_softplus(torch.tensor(1e-6))
    delta = torch.zeros(1, l, d)
    delta[..., :2] = 0.5 * torch.randn(1, l, 2, generator=g)
    target = torch.exp(torch.empty(1, l).uniform_(math.log(1e-6), math.log(10.0), generator=g))
    delta[..., 4] = _inv_softplus(target.double()).float()  # delta itself log-uniform
    B = torch.randn(1, l, n, generator=g)
    C = torch.randn(1, l, n, generator=g)
    z = torch.randn(1, l, d, generator=g)
    D = torch.ones(d)
    h0 = torch.randn(1, d, n, generator=g)
    return {k: v.to(dtype) for k, v in dict(x=x, delta=delta, A=A, B=B, C=C, D=D, z=z,
                                               delta_bias=delta_bias, h0=h0).items()}


def _per_channel_rel(a: torch.Tensor, ref: torch.Tensor, dims) -> torch.Tensor:
    """max |a - ref| / max |ref| over ``dims``, one number per channel."""
    return (a - ref).abs().amax(dim=dims) / ref.abs().amax(dim=dims).clamp_min(1e-30)


def _check_long_forward(l: int) -> dict:
    """Both scans at length ``l``: finite, agreeing, and exact on the memoryless channel 2.

    Returns the measured errors; raises AssertionError when a budget is exceeded.
    """
    inp = _long_inputs(l)
    outs = {}
    for name in ("selective_scan_parallel", "selective_scan_sequential"):
        scan = getattr(scan_mod, name)  # looked up now, so a monkeypatched scan is checked
        y, h = scan(**inp, delta_softplus=True, return_last_state=True)
        assert torch.isfinite(y).all() and torch.isfinite(h).all(), f"{name}: NaN/inf at l={l}"
        outs[name] = (y, h)
    (y_p, h_p), (y_s, h_s) = outs["selective_scan_parallel"], outs["selective_scan_sequential"]
    err_y = _per_channel_rel(y_p, y_s, (0, 1))  # (d,)
    err_h = _per_channel_rel(h_p, h_s, (0, 2))  # (d,)
    # budgets (docs/numerics.md): measured at most 1.6e-6 for y (l = 1024) and 2.0e-4 for h
    # (l = 65,536; the delta = 1e-6 channel sums 65k small terms that cancel)
    assert float(err_y.max()) <= 2e-5, f"twins disagree on y at l={l}: {err_y.tolist()}"
    assert float(err_h.max()) <= 2e-3, f"twins disagree on the last state at l={l}: {err_h.tolist()}"
    # Channel 2 forgets everything at every step (A_bar = exp(-1000) = 0), so in closed form
    # y_t = (delta_t x_t (B_t . C_t) + D x_t) silu(z_t), whatever the length.
    x, z, B, C = inp["x"][0, :, 2], inp["z"][0, :, 2], inp["B"][0], inp["C"][0]
    delta = torch.nn.functional.softplus(inp["delta"][0, :, 2] + inp["delta_bias"][2])
    closed = (delta * x * (B * C).sum(-1) + inp["D"][2] * x) * torch.nn.functional.silu(z)
    for y in (y_p, y_s):
        err = float((y[0, :, 2] - closed).abs().max() / closed.abs().max())
        assert err <= 1e-5, f"memoryless channel off its closed form by {err:.2e} at l={l}"
    return {"y": float(err_y.max()), "h": float(err_h.max())}


@pytest.mark.slow
def test_long_forward_65536_finite_and_twins_agree():
    _check_long_forward(65_536)


@pytest.mark.slow
def test_long_forward_backward_8192_finite_and_twins_agree():
    l = 8192
    inp = _long_inputs(l)
    # Parallel scan: every input receives a gradient, all finite.
    leaves = {k: v.clone().requires_grad_() for k, v in inp.items()}
    y = scan_mod.selective_scan_parallel(**leaves, delta_softplus=True)
    w = torch.randn(y.shape, generator=torch.Generator().manual_seed(1)) / y.detach().abs().amax(1, keepdim=True)
    (y * w).sum().backward()
    for k, v in leaves.items():
        assert torch.isfinite(v.grad).all(), f"gradient of {k} has NaN/inf at l={l}"
    # Sequential twin: gradients of the parameters that every step uses (A, D, delta_bias is
    # left out: per-time-step inputs with requires_grad make its backward quadratic in l).
    seq = {k: (v.clone().requires_grad_() if k in ("A", "D", "h0") else v) for k, v in inp.items()}
    y_s = scan_mod.selective_scan_sequential(**seq, delta_softplus=True)
    (y_s * w).sum().backward()
    for k in ("A", "D", "h0"):
        g_p, g_s = leaves[k].grad, seq[k].grad
        assert torch.isfinite(g_s).all(), f"sequential gradient of {k} has NaN/inf at l={l}"
        rel = float((g_p - g_s).norm() / g_s.norm())  # measured: A 1.6e-6, h0 7e-7, D 0
        assert rel <= 1e-4, f"gradients of {k} differ between the twins by {rel:.2e} at l={l}"


def _unstable_scan(x, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False,
                   h0=None, return_last_state=False, check_finite=False):
    """A scan in closed form, h_t = e^{S_t} sum_s e^{-S_s} B_bar_s x_s with S_t = sum delta A:
    exact in real arithmetic, a shortcut some implementations took, and it overflows."""
    if delta_bias is not None:
        delta = delta + delta_bias
    if delta_softplus:
        delta = torch.nn.functional.softplus(delta)
    S = torch.cumsum(delta[..., None] * A, dim=1)  # (b, l, d, n)
    u = (delta * x)[..., None] * B[:, :, None, :]
    h = torch.exp(S) * torch.cumsum(torch.exp(-S) * u, dim=1)
    if h0 is not None:
        h = h + torch.exp(S) * h0[:, None]
    y = torch.einsum("bldn,bln->bld", h, C) + x * D
    y = y * torch.nn.functional.silu(z)
    return (y, h[:, -1]) if return_last_state else y


def test_long_sequence_guard_fires_on_an_overflowing_scan(monkeypatch):
    _check_long_forward(1024)  # the real scans pass at this length
    monkeypatch.setattr(scan_mod, "selective_scan_parallel", _unstable_scan)
    with pytest.raises(AssertionError, match="NaN/inf"):
        _check_long_forward(1024)


# ----------------------------------------------------------------------------------------------
# Half precision
# ----------------------------------------------------------------------------------------------

def _model(seed: int = 0, **kw) -> mm.MambaLM:
    torch.manual_seed(seed)
    cfg = dict(d_model=32, n_layer=2, vocab_size=101, d_state=16)
    cfg.update(kw)
    return mm.MambaLM(mm.MambaConfig(**cfg)).eval()


def _rel_fro(a: torch.Tensor, ref: torch.Tensor) -> float:
    """Relative Frobenius error ``||a - ref|| / ||ref||`` in float64."""
    a, ref = a.double(), ref.double()
    return float((a - ref).norm() / ref.norm())


def _ids(b: int, l: int, vocab: int = 101, seed: int = 1) -> torch.Tensor:
    return torch.randint(0, vocab, (b, l), generator=torch.Generator().manual_seed(seed))


def _half_and_reference(dtype, **kw):
    """A ``dtype`` model and an fp32 model holding exactly its (rounded) weights."""
    half = _model(**kw).to(dtype)
    ref = copy.deepcopy(half).float()
    return half, ref


@pytest.mark.parametrize("residual_in_fp32", [True, False])
@pytest.mark.parametrize("dtype", HALF, ids=str)
@torch.no_grad()
def test_half_model_logits_close_to_fp32_with_same_weights(dtype, residual_in_fp32):
    half, ref = _half_and_reference(dtype, residual_in_fp32=residual_in_fp32)
    ids = _ids(2, 256)
    logits = half(ids)
    assert logits.dtype == dtype
    err = _rel_fro(logits, ref(ids))
    # issue 9's budget; measured 5e-3 (bf16) and 6e-4 (fp16), docs/numerics.md
    assert err <= 5e-2, f"{dtype} logits off fp32 by {err:.3e} (relative Frobenius)"


@pytest.mark.parametrize("dtype", HALF, ids=str)
@torch.no_grad()
def test_autocast_logits_close_to_fp32_with_same_weights(dtype):
    _, ref = _half_and_reference(dtype)  # fp32 weights that are exactly representable in dtype
    ids = _ids(2, 256)
    with torch.autocast("cpu", dtype=dtype):
        logits = ref(ids)
    err = _rel_fro(logits, ref(ids))
    assert err <= 5e-2, f"autocast({dtype}) logits off fp32 by {err:.3e} (relative Frobenius)"


@pytest.mark.parametrize("method", ["parallel", "sequential"])
@pytest.mark.parametrize("dtype", HALF, ids=str)
def test_scan_arithmetic_is_float32_for_half_inputs(dtype, method):
    """Half inputs give exactly the float32 scan of the same (upcast) values, rounded once."""
    inp = {k: v.to(dtype) for k, v in _long_inputs(40, seed=3).items()}
    inp["x"] = inp["x"] / 1e3  # keep 1e3 * delta * x well inside fp16's range
    y, h = mm.selective_scan(**inp, delta_softplus=True, return_last_state=True, method=method)
    y32, h32 = mm.selective_scan(**{k: v.float() for k, v in inp.items()}, delta_softplus=True,
                                 return_last_state=True, method=method)
    assert y.dtype == dtype and h.dtype == torch.float32
    assert torch.equal(y, y32.to(dtype)) and torch.equal(h, h32)


@pytest.mark.parametrize("dtype", HALF, ids=str)
@torch.no_grad()
def test_half_model_keeps_its_recurrent_state_float32(dtype):
    model = _model().to(dtype)
    cache = model.empty_cache(2)
    ids = _ids(2, 7)
    model(ids, cache=cache)
    model.step(ids[:, :1], cache)
    assert all(t.dtype == torch.float32 for t in cache.conv_states + cache.ssm_states)
    assert model(ids).dtype == dtype  # while the activations are half


@torch.no_grad()
def test_bf16_greedy_cached_generation_equals_repeated_full_forwards():
    model = _model(d_model=64).to(torch.bfloat16)
    vocab = model.config.vocab_size
    prompt = _ids(1, 8)
    cached = mm.generate(model, prompt, 64, temperature=0)
    ids = prompt
    for _ in range(64):  # no cache: the whole sequence again for every token
        next_id = model(ids)[:, -1, :vocab].argmax(-1, keepdim=True)  # (1, 1)
        ids = torch.cat([ids, next_id], dim=1)
    assert torch.equal(cached, ids), (cached != ids).nonzero()[:1]


# ----------------------------------------------------------------------------------------------
# gradcheck in float64
# ----------------------------------------------------------------------------------------------

def _gradcheck_scan(method: str, b: int, l: int, d: int, n: int) -> None:
    g = torch.Generator().manual_seed(l)
    r = lambda *s: torch.randn(*s, generator=g, dtype=torch.float64)  # noqa: E731
    names = ("x", "delta", "A", "B", "C", "D", "z", "delta_bias", "h0")
    values = (r(b, l, d), r(b, l, d), -torch.rand(d, n, generator=g, dtype=torch.float64) - 0.5,
              r(b, l, n), r(b, l, n), r(d), r(b, l, d), r(d), r(b, d, n))
    inputs = tuple(v.requires_grad_() for v in values)
    scan = getattr(scan_mod, f"selective_scan_{method}")  # looked up now (monkeypatchable)

    def f(*args):
        return scan(**dict(zip(names, args)), delta_softplus=True, return_last_state=True)
    torch.autograd.gradcheck(f, inputs, eps=1e-6, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("method,b,l,d,n", [("parallel", 2, 5, 2, 3), ("sequential", 2, 5, 2, 3),
                                             ("parallel", 1, 37, 2, 2)])
def test_gradcheck_scans_float64(method, b, l, d, n):
    """Every input, h0 and delta_bias included; l = 37 crosses several parallel-scan chunks
    (the sequential loop has no chunks: l = 5 exercises all of its code)."""
    _gradcheck_scan(method, b, l, d, n)


def test_gradcheck_guard_fires_when_h0_loses_its_gradient(monkeypatch):
    original = scan_mod.selective_scan_sequential

    def detached_h0(*args, h0=None, **kwargs):  # the bug: the initial state cut from the graph
        return original(*args, h0=None if h0 is None else h0.detach(), **kwargs)
    monkeypatch.setattr(scan_mod, "selective_scan_sequential", detached_h0)
    with pytest.raises(GradcheckError):
        _gradcheck_scan("sequential", 1, 3, 2, 2)


# ----------------------------------------------------------------------------------------------
# The budgets of docs/numerics.md: python tests/test_numerics.py
# ----------------------------------------------------------------------------------------------

def measure_budgets() -> None:  # pragma: no cover - a measuring script, run by hand
    import time
    torch.manual_seed(0)
    print("## scan twins, float32, long-sequence inputs (per-channel max rel. error)")
    for l in (1, 64, 1024, 8192, 65_536):
        t = time.perf_counter()
        errs = _check_long_forward(l)
        inp = _long_inputs(l, dtype=torch.float64)
        y64, h64 = scan_mod.selective_scan_parallel(**inp, delta_softplus=True, return_last_state=True)
        inp32 = _long_inputs(l)
        y32, h32 = scan_mod.selective_scan_parallel(**inp32, delta_softplus=True, return_last_state=True)
        vs64 = float(_per_channel_rel(y32.double(), y64, (0, 1)).max())
        hs64 = float(_per_channel_rel(h32.double(), h64, (0, 2)).max())
        print(f"l={l:6d}  parallel vs sequential: y {errs['y']:.1e}  h {errs['h']:.1e}   "
              f"parallel fp32 vs fp64: y {vs64:.1e}  h {hs64:.1e}   ({time.perf_counter() - t:.1f}s)")
    print("## model logits, relative Frobenius vs fp32 with the same rounded weights "
          "(d_model=32, n_layer=2, b=1)")
    with torch.no_grad():
        for dtype in HALF:
            for l in (64, 1024, 4096):
                ids = _ids(1, l)
                half, ref = _half_and_reference(dtype)
                ref_logits = ref(ids)
                e_model = _rel_fro(half(ids), ref_logits)
                with torch.autocast("cpu", dtype=dtype):
                    e_auto = _rel_fro(ref(ids), ref_logits)
                half_nr, ref_nr = _half_and_reference(dtype, residual_in_fp32=False)
                e_nr = _rel_fro(half_nr(ids), ref_nr(ids))
                cast_all = copy.deepcopy(half)
                for layer in cast_all.backbone.layers:  # what casting A_log and D too would do
                    layer.mixer.A_log.data = layer.mixer.A_log.data.to(dtype)
                    layer.mixer.D.data = layer.mixer.D.data.to(dtype)
                e_cast = _rel_fro(cast_all(ids), ref_logits)
                print(f"{str(dtype):15s} l={l:5d}  model {e_model:.1e}  autocast {e_auto:.1e}  "
                      f"residual not fp32 {e_nr:.1e}  A_log,D in {dtype} too {e_cast:.1e}")
        model = _model()
        ids = _ids(2, 200)
        full = model(ids)
        cache = model.empty_cache(2)
        steps = torch.cat([model.step(ids[:, i:i + 1], cache) for i in range(200)], dim=1)
        print(f"## fp32 step-by-step vs full forward, l=200: max |diff| "
              f"{float((steps - full).abs().max()):.1e}, max |logit| {float(full.abs().max()):.2f}")


if __name__ == "__main__":  # pragma: no cover
    measure_budgets()

"""The Mamba mixer (``minimamba_core/mixer.py``) on its own: official initialization, its twins
``forward`` and ``step`` (one function, float64 at every split point), the states it allocates,
its public hooks ``ssm_inputs`` / ``scan_params``, and float32 where a half-precision model
would round: ``A_log`` and ``D``, and the convolution and scan under ``torch.autocast``.

Guards of issue 9 end with a test that injects the bug and shows the guard firing.
"""

from __future__ import annotations

import contextlib
import importlib

import pytest
import torch

import minimamba_core as mm

mixer_mod = importlib.import_module("minimamba_core.mixer")

HALF = [torch.bfloat16, torch.float16]
CFG = mm.MambaConfig(d_model=16, n_layer=3, vocab_size=20, d_state=4, d_conv=3)  # d_inner 32, dt_rank 1


def _mixer(dtype=torch.float64, layer_idx=0, seed=0, config=CFG) -> mm.MambaMixer:
    torch.manual_seed(seed)
    return mm.MambaMixer(config, layer_idx).to(dtype)


def _hidden(b=2, l=12, dtype=torch.float64, seed=1) -> torch.Tensor:
    return torch.randn(b, l, CFG.d_model, generator=torch.Generator().manual_seed(seed), dtype=torch.float64).to(dtype)


def _model(seed: int = 0, **kw) -> mm.MambaLM:
    torch.manual_seed(seed)
    cfg = dict(d_model=32, n_layer=2, vocab_size=101, d_state=16)
    cfg.update(kw)
    return mm.MambaLM(mm.MambaConfig(**cfg)).eval()


def _ids(b: int, l: int, vocab: int = 101, seed: int = 1) -> torch.Tensor:
    return torch.randint(0, vocab, (b, l), generator=torch.Generator().manual_seed(seed))


# ---- the official initialization ---------------------------------------------------------------

def test_official_initialization():
    torch.manual_seed(0)
    mixer = mm.MambaMixer(mm.MambaConfig(d_model=64, n_layer=4, vocab_size=45, d_state=16))
    torch.testing.assert_close(mixer.A_log, torch.log(torch.arange(1.0, 17.0)).expand(128, 16))
    torch.testing.assert_close(mixer.D, torch.ones(128))
    dt = torch.nn.functional.softplus(mixer.dt_proj.bias)  # initial delta per channel
    assert dt.min() >= 0.001 * 0.999 and dt.max() <= 0.1 * 1.001  # log-uniform in [dt_min, dt_max]
    bound = 128 ** -0.5 / 4 ** 0.5  # kaiming bound 1/sqrt(fan_in = d_inner) times 1/sqrt(n_layer)
    assert mixer.out_proj.weight.abs().max() <= bound + 1e-7
    assert mixer.out_proj.weight.abs().max() > 0.9 * bound


# ---- forward and step: one function ---------------------------------------------------------

def _prefill_then_step(mixer, hidden, k):
    """``forward`` over the first ``k`` steps with a fresh cache, then ``step`` one at a time."""
    cache = mm.InferenceCache([mixer.allocate_inference_cache(hidden.shape[0])])
    outs = [mixer(hidden[:, :k], cache)] if k > 0 else []
    outs += [mixer.step(hidden[:, t:t + 1], cache) for t in range(k, hidden.shape[1])]
    return torch.cat(outs, dim=1)


@torch.no_grad()
@pytest.mark.parametrize("k", range(0, 13))
def test_forward_equals_prefill_then_step_every_split_float64(k):
    """d_conv = 3: k = 1, 2 are prompts shorter than the convolution's window."""
    mixer, hidden = _mixer(), _hidden()
    torch.testing.assert_close(_prefill_then_step(mixer, hidden, k), mixer(hidden), atol=1e-12, rtol=1e-12)


@torch.no_grad()
def test_forward_continues_from_the_cached_states():
    """A cache at any offset is a continuation: three forwards equal one, and the states too."""
    mixer, hidden = _mixer(), _hidden(l=20)
    cache = mm.InferenceCache([mixer.allocate_inference_cache(2)])
    parts = [mixer(hidden[:, :7], cache), mixer(hidden[:, 7:9], cache), mixer(hidden[:, 9:], cache)]
    whole = mm.InferenceCache([mixer.allocate_inference_cache(2)])
    torch.testing.assert_close(torch.cat(parts, 1), mixer(hidden, whole), atol=1e-12, rtol=1e-12)
    for name in ("conv_state", "ssm_state"):
        torch.testing.assert_close(cache.layers[0][name], whole.layers[0][name], atol=1e-12, rtol=1e-12)


@torch.no_grad()
def test_a_mixer_uses_only_its_own_layer_of_the_cache():
    mixer = _mixer(layer_idx=2)
    cache = mm.InferenceCache([{"conv_state": torch.zeros(1), "ssm_state": torch.zeros(1)} for _ in range(2)]
                              + [mixer.allocate_inference_cache(2)])
    mixer(_hidden(l=5), cache)
    mixer.step(_hidden(l=1), cache)
    assert cache.layers[2]["ssm_state"].abs().max() > 0
    assert all(t.shape == (1,) and not t.any() for layer in cache.layers[:2] for t in layer.values())


# ---- the states it allocates --------------------------------------------------------------

@pytest.mark.parametrize("dtype, state_dtype", [(torch.float32, torch.float32), (torch.float64, torch.float64),
                                                (torch.bfloat16, torch.float32), (torch.float16, torch.float32)],
                         ids=str)
def test_state_shapes_and_allocate_inference_cache(dtype, state_dtype):
    """``conv_state (b, d_inner, d_conv)``, ``ssm_state (b, d_inner, d_state)`` in the precision
    the mixer computes in: float32, float64 for a float64 mixer (never half)."""
    mixer = _mixer(dtype)
    assert mixer.state_shapes(3) == {"conv_state": (3, 32, 3), "ssm_state": (3, 32, 4)}
    assert mixer.compute_dtype() == state_dtype
    states = mixer.allocate_inference_cache(3, max_seqlen=1000)  # the mamba_ssm signature; nothing grows
    assert list(states) == ["conv_state", "ssm_state"]
    assert {k: tuple(v.shape) for k, v in states.items()} == mixer.state_shapes(3)
    assert all(v.dtype == state_dtype and v.device == mixer.in_proj.weight.device and not v.any()
               for v in states.values())
    assert {v.dtype for v in mixer.allocate_inference_cache(1, dtype=torch.float64).values()} == {torch.float64}


def test_mixer_allocates_its_own_states():
    mixer = _model(d_model=16, n_layer=3, vocab_size=20, d_state=4, d_conv=3).double().backbone.layers[1].mixer
    states = mixer.allocate_inference_cache(3, max_seqlen=10)
    conv_state, ssm_state = states["conv_state"], states["ssm_state"]
    assert conv_state.shape == (3, 32, 3) and ssm_state.shape == (3, 32, 4)  # (b, d_inner, d_conv / d_state)
    assert conv_state.dtype == ssm_state.dtype == torch.float64
    with pytest.raises(ValueError, match="batch_size must be a positive int"):
        mixer.allocate_inference_cache(0)
    with pytest.raises(ValueError, match="cache dtype must be torch.float32 or torch.float64"):
        mixer.allocate_inference_cache(1, dtype=torch.float16)


# ---- the public hooks ssm_inputs and scan_params (the LTI ablation overrides them) -----------

@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16], ids=str)
def test_ssm_inputs_and_scan_params_shapes_and_dtypes(dtype):
    mixer = _mixer(dtype)
    x = torch.randn(2, 7, 32).to(dtype)  # (b, l, d_inner)
    delta, B, C = mixer.ssm_inputs(x)
    assert delta.shape == (2, 7, 32) and B.shape == C.shape == (2, 7, 4)  # (b, l, d_inner), (b, l, N)
    assert delta.dtype == B.dtype == C.dtype == dtype
    A, D, delta_bias = mixer.scan_params()
    assert A.shape == (32, 4) and D.shape == delta_bias.shape == (32,)  # (d_inner, N), (d_inner,)
    acc = torch.float64 if dtype == torch.float64 else torch.float32
    assert A.dtype == D.dtype == delta_bias.dtype == acc
    torch.testing.assert_close(A, -torch.exp(mixer.A_log.to(acc)), rtol=0, atol=0)
    assert bool((A < 0).all())
    with torch.no_grad():  # delta before bias and softplus: dt_proj without its bias
        dt = mixer.x_proj(x)[..., :CFG.dt_rank]
        torch.testing.assert_close(delta, dt @ mixer.dt_proj.weight.T, rtol=0, atol=0)


# ---- float32 where half precision would round ------------------------------------------------

@torch.no_grad()
@pytest.mark.parametrize("dtype", HALF, ids=str)
def test_a_half_precision_mixer_keeps_A_log_and_D_float32(dtype):
    mixer = _mixer(torch.float32)
    A_log, D = mixer.A_log.clone(), mixer.D.clone()
    mixer.to(dtype)
    assert mixer.in_proj.weight.dtype == mixer.conv1d.weight.dtype == mixer.out_proj.weight.dtype == dtype
    assert mixer.A_log.dtype == mixer.D.dtype == torch.float32
    assert torch.equal(mixer.A_log, A_log) and torch.equal(mixer.D, D)
    out = mixer(_hidden(dtype=dtype))
    assert out.dtype == dtype and bool(torch.isfinite(out).all())


def _assert_A_log_D_fp32(model: mm.MambaLM, before: dict) -> None:
    for i, layer in enumerate(model.backbone.layers):
        for name in ("A_log", "D"):
            p = getattr(layer.mixer, name)
            assert p.dtype == torch.float32, f"layer {i} {name} became {p.dtype}"
            assert torch.equal(p, before[i, name]), f"layer {i} {name} lost its float32 value"


@pytest.mark.parametrize("cast", ["to", "bfloat16", "half", "to_kw"])
def test_half_cast_keeps_A_log_and_D_float32_and_exact(cast):
    model = _model()
    with torch.no_grad():  # values that do not survive a round trip through bf16
        for layer in model.backbone.layers:
            layer.mixer.A_log += 1e-4
            layer.mixer.D += 1e-4
    before = {(i, n): getattr(l.mixer, n).detach().clone()
              for i, l in enumerate(model.backbone.layers) for n in ("A_log", "D")}
    if cast == "to":
        model.to(torch.bfloat16)
    elif cast == "to_kw":
        model.to(device="cpu", dtype=torch.float16)
    else:
        getattr(model, cast)()
    _assert_A_log_D_fp32(model, before)
    assert model.lm_head.weight.dtype in (torch.bfloat16, torch.float16)
    assert model.backbone.layers[0].mixer.in_proj.weight.dtype == model.lm_head.weight.dtype
    model.double()  # a float64 cast applies to every parameter
    assert all(p.dtype == torch.float64 for p in model.parameters())


def test_fp32_parameter_guard_fires_when_the_cast_is_not_intercepted(monkeypatch):
    monkeypatch.setattr(mixer_mod.MambaMixer, "_apply", torch.nn.Module._apply)
    model = _model()
    before = {(i, n): getattr(l.mixer, n).detach().clone()
              for i, l in enumerate(model.backbone.layers) for n in ("A_log", "D")}
    model.to(torch.bfloat16)
    with pytest.raises(AssertionError, match="became torch.bfloat16"):
        _assert_A_log_D_fp32(model, before)


def _spy_autocast_in_scans(monkeypatch) -> list:
    seen = []
    for name in ("selective_scan_parallel", "selective_scan_sequential"):
        original = getattr(mixer_mod, name)

        def spy(*args, _original=original, **kwargs):
            seen.append(torch.is_autocast_enabled("cpu"))
            return _original(*args, **kwargs)
        monkeypatch.setattr(mixer_mod, name, spy)
    return seen


@torch.no_grad()
def _autocast_prefill_and_step(model, seen) -> None:
    ids = _ids(2, 9)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        cache = model.empty_cache(2)
        model(ids, cache=cache)
        model.step(ids[:, :1], cache)
    assert len(seen) == 2 * model.config.n_layer
    assert not any(seen), "the scan ran with autocast on (its einsum would run in bf16)"
    assert all(s.dtype == torch.float32 for s in cache.conv_states + cache.ssm_states)


def test_autocast_is_off_inside_conv_and_scan(monkeypatch):
    _autocast_prefill_and_step(_model(), _spy_autocast_in_scans(monkeypatch))


def test_autocast_guard_fires_without_the_fp32_region(monkeypatch):
    """The bug: a mixer that never switches autocast off (its ``torch.autocast(..., enabled=False)``
    regions do nothing here; the caller's autocast still works)."""
    seen = _spy_autocast_in_scans(monkeypatch)
    real = torch.autocast

    def autocast_never_off(device_type, dtype=None, enabled=True, cache_enabled=None):
        return real(device_type, dtype=dtype, cache_enabled=cache_enabled) if enabled else contextlib.nullcontext()
    monkeypatch.setattr(torch, "autocast", autocast_never_off)
    with pytest.raises(AssertionError, match="autocast on"):
        _autocast_prefill_and_step(_model(), seen)

"""InferenceCache: shapes and dtypes, reset, size, and bad arguments."""

import pytest
import torch

import minimamba_core as mm

CFG = mm.MambaConfig(d_model=16, n_layer=3, vocab_size=20, d_state=4, d_conv=3)


def test_shapes_and_dtype():
    cache = mm.InferenceCache.empty(CFG, 2)
    assert len(cache.conv_states) == len(cache.ssm_states) == 3
    assert cache.conv_states[0].shape == (2, 32, 3)  # (b, d_inner, d_conv)
    assert cache.ssm_states[0].shape == (2, 32, 4)  # (b, d_inner, d_state)
    assert cache.conv_states[0].dtype == torch.float32 and cache.seqlen_offset == 0
    assert cache.nbytes() == 3 * 2 * 32 * (3 + 4) * 4  # layers * b * d_inner * (k + N) * 4 bytes


def test_bf16_model_keeps_an_fp32_cache():
    torch.manual_seed(0)
    model = mm.MambaLM(CFG).to(torch.bfloat16)
    cache = model.empty_cache(1)
    model(torch.tensor([[1, 2, 3, 4, 5]]), cache=cache)
    model.step(torch.tensor([[6]]), cache)
    assert all(t.dtype == torch.float32 for t in cache.conv_states + cache.ssm_states)


def test_reset_zeroes_states():
    torch.manual_seed(0)
    model = mm.MambaLM(CFG)
    cache = model.empty_cache(1)
    model(torch.tensor([[1, 2, 3]]), cache=cache)
    assert cache.seqlen_offset == 3 and cache.ssm_states[0].abs().sum() > 0
    cache.reset()
    assert cache.seqlen_offset == 0 and all(t.abs().sum() == 0 for t in cache.ssm_states + cache.conv_states)


@pytest.mark.parametrize("b", [0, -1, 1.5, True])
def test_bad_batch_size(b):
    with pytest.raises(ValueError, match="batch_size must be a positive int"):
        mm.InferenceCache.empty(CFG, b)


def test_half_precision_cache_dtype_is_rejected():
    with pytest.raises(ValueError, match="cache dtype must be torch.float32 or torch.float64"):
        mm.InferenceCache.empty(CFG, 1, dtype=torch.bfloat16)


def _float64_model(**overrides):
    torch.manual_seed(0)
    return mm.MambaLM(mm.MambaConfig(**{**CFG.to_dict(), **overrides})).double().eval()


def test_allocate_inference_cache_follows_a_float64_model():
    model = _float64_model()
    cache = model.allocate_inference_cache(2, max_seqlen=64)  # the mamba_ssm signature
    assert all(t.dtype == torch.float64 for t in cache.conv_states + cache.ssm_states)
    assert [tuple(t.shape) for t in cache.ssm_states] == [(2, 32, 4)] * 3  # (b, d_inner, d_state)
    assert model.empty_cache(2).dtype == torch.float64
    assert model.allocate_inference_cache(2, dtype=torch.float32).dtype == torch.float32  # asked for


def test_float64_decode_equals_the_full_forward():
    """Prefill + one step at a time vs one full forward, float64: they agree to 1e-12 (relative).

    With a float32 cache this path differed by 6.5e-8 relative before such caches were refused.
    """
    model = _float64_model()
    ids = torch.randint(0, 20, (2, 24), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        full = model(ids)  # (2, 24, padded_vocab_size)
        cache = model.allocate_inference_cache(2)
        steps = [model(ids[:, :5], cache=cache)]
        steps += [model.step(ids[:, t:t + 1], cache) for t in range(5, 24)]
    decoded = torch.cat(steps, dim=1)
    rel = ((decoded - full).abs().max() / full.abs().max()).item()
    assert rel < 1e-12, rel


@pytest.mark.parametrize("where", ["forward", "step"])
def test_a_float32_cache_is_refused_by_a_float64_model(where):
    model = _float64_model()
    low = mm.InferenceCache.empty(model.config, 1)  # the config-only constructor: float32
    ids = torch.tensor([[1, 2, 3]])
    call = (lambda: model(ids, cache=low)) if where == "forward" else (lambda: model.step(ids[:, :1], low))
    with pytest.raises(ValueError, match=r"holds torch.float32 states but the model computes in "
                                         r"torch.float64.*model.allocate_inference_cache\(1\)"):
        call()
    assert low.seqlen_offset == 0 and all(t.abs().sum() == 0 for t in low.ssm_states)  # untouched


def test_one_float32_state_among_float64_ones_is_refused():
    model = _float64_model()
    cache = model.allocate_inference_cache(1)
    cache.conv_states[2] = cache.conv_states[2].float()
    with pytest.raises(ValueError, match="holds torch.float32 states"):
        model(torch.tensor([[1, 2]]), cache=cache)


def test_a_float64_cache_serves_a_float32_model():
    """Higher precision than the model computes in is allowed (and is what the states hold)."""
    torch.manual_seed(0)
    model = mm.MambaLM(CFG).eval()
    cache = model.allocate_inference_cache(1, dtype=torch.float64)
    with torch.no_grad():
        model(torch.tensor([[1, 2, 3]]), cache=cache)
        model.step(torch.tensor([[4]]), cache)
    assert all(t.dtype == torch.float64 for t in cache.conv_states + cache.ssm_states)


def test_mixer_allocates_its_own_states():
    mixer = _float64_model().backbone.layers[1].mixer
    conv_state, ssm_state = mixer.allocate_inference_cache(3, max_seqlen=10)
    assert conv_state.shape == (3, 32, 3) and ssm_state.shape == (3, 32, 4)  # (b, d_inner, d_conv / d_state)
    assert conv_state.dtype == ssm_state.dtype == torch.float64
    with pytest.raises(ValueError, match="batch_size must be a positive int"):
        mixer.allocate_inference_cache(0)
    with pytest.raises(ValueError, match="cache dtype must be torch.float32 or torch.float64"):
        mixer.allocate_inference_cache(1, dtype=torch.float16)

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

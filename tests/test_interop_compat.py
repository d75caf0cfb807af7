"""Drop-in compatibility (``minimamba_core/interop/compat.py``) and the "Coming from MiniMamba 1.0.1" section.

1. MiniMamba's README examples, kept below as text with only the import line changed, run on
   ``minimamba_core`` and give the full forward's logits through the cached loop.
2. mamba_ssm's ``InferenceParams`` protocol: prefill at ``seqlen_offset == 0``, per-layer states
   under the layer index, the caller advancing ``seqlen_offset``.
The items of ``docs/coming_from_minimamba.md`` are tested in ``test_interop_compat_minimamba.py``.
Nothing here installs or imports ``minimamba``.
"""

from __future__ import annotations

import pytest
import torch
from helpers import COMPAT_SMALL, compat_model

import minimamba_core as mm

# ---------------------------------------------------------------------------------------------
# 1. The README examples of MiniMamba (github.com/Xinguang/MiniMamba, README.md at tag v0.2.0,
#    commit c6610a7d8b5c0fbf778bf0589b4b60ae65ee87db; the same text stayed in README.md until the
#    1.0 rewrite). Only the import line differs: `from minimamba import ...` there.

README_USAGE = """
import torch
from minimamba_core import Mamba, MambaConfig

# 1. Define config using the MambaConfig class
config = MambaConfig(
    d_model=512,
    n_layer=6,
    vocab_size=10000,
    d_state=16,
    d_conv=4,
    expand=2,
)

# 2. Initialize model with the config object
model = Mamba(config=config)

# 3. Dummy input
input_ids = torch.randint(0, config.vocab_size, (2, 128))
logits = model(input_ids)

# The output vocab size might be padded for performance
print(logits.shape)  # torch.Size([2, 128, 10008])
"""

README_CACHED_LOOP = """
class InferenceCache:
    def __init__(self):
        self.seqlen_offset = 0
        self.key_value_memory_dict = {}

inference_params = InferenceCache()

# Simulate token-by-token generation
input1 = torch.randint(0, config.vocab_size, (1, 1))
logits1 = model(input1, inference_params=inference_params)
inference_params.seqlen_offset += 1

input2 = torch.randint(0, config.vocab_size, (1, 1))
logits2 = model(input2, inference_params=inference_params)
"""


@pytest.fixture(scope="module")
def readme_namespace():
    """Both snippets run in one namespace, top to bottom, as a reader of the README runs them."""
    torch.manual_seed(0)
    namespace: dict = {}
    with torch.no_grad():  # the harness's choice; the snippets' text is unchanged
        exec(compile(README_USAGE, "README_USAGE", "exec"), namespace)
        exec(compile(README_CACHED_LOOP, "README_CACHED_LOOP", "exec"), namespace)
    return namespace


def test_readme_usage_snippet_gives_padded_vocab_logits(readme_namespace):
    ns = readme_namespace
    assert isinstance(ns["model"], mm.Mamba) and isinstance(ns["model"], mm.MambaLM)
    # 10000 is already a multiple of 8, so padding leaves it at 10000 (mamba_ssm's rule, which
    # MiniMamba 0.2.0 and 1.0.1 also implement). The README's comment "10008" is wrong: the code
    # it documents returns (2, 128, 10000) as well.
    assert ns["config"].padded_vocab_size == 10000
    assert ns["logits"].shape == (2, 128, 10000)
    assert ns["logits"].dtype == torch.float32 and bool(torch.isfinite(ns["logits"]).all())
    # 15,291,904 = 10000*512 tied embedding/head + 6 * 1,695,232 per block + 512 final norm,
    # computed by hand from the module shapes in mixer.py; MiniMamba 0.1.0, 0.2.0 and 1.0.1 build
    # the same count for this config (their README's "26,738,688" is not what they build).
    assert ns["model"].num_parameters() == 15_291_904


def test_readme_cached_loop_equals_full_forward(readme_namespace):
    ns = readme_namespace
    model, store = ns["model"], ns["inference_params"].key_value_memory_dict
    assert ns["logits1"].shape == ns["logits2"].shape == (1, 1, 10000)
    assert sorted(store) == list(range(6))  # one entry per layer, under its index
    for conv_state, ssm_state in store.values():
        assert conv_state.shape == (1, 1024, 4) and ssm_state.shape == (1, 1024, 16)  # (b, d_inner, k|N)
    with torch.no_grad():
        full = model(torch.cat([ns["input1"], ns["input2"]], dim=1))  # (1, 2, 10000)
    # float32: the cached step and the full forward sum in different orders (measured ~1e-6)
    torch.testing.assert_close(ns["logits1"], full[:, :1], rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(ns["logits2"], full[:, 1:], rtol=1e-4, atol=1e-4)
    assert ns["inference_params"].seqlen_offset == 1  # advanced by the caller only


# ---------------------------------------------------------------------------------------------
# 2. The InferenceParams protocol on a small model.

SMALL = COMPAT_SMALL
_small = compat_model


def _ids(b, l, seed=1, vocab=50):
    return torch.randint(0, vocab, (b, l), generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("k", [1, 3, 7])
@torch.no_grad()
def test_prefill_then_tokens_equals_full_forward(k):
    model, ids = _small(), _ids(2, 11)
    full = model(ids)  # (2, 11, 56)
    params = mm.InferenceParams(max_seqlen=11, max_batch_size=2)
    outs = [model(ids[:, :k], inference_params=params)]
    params.seqlen_offset += k
    held = params.key_value_memory_dict[1]
    for t in range(k, 9):
        outs.append(model(ids[:, t:t + 1], params))  # positional, as MiniMamba 1.0.1's README does
        params.seqlen_offset += 1
    outs.append(model(ids[:, 9:], inference_params=params))  # a 2-token continuation
    assert params.seqlen_offset == 9  # the model never advanced it
    assert params.key_value_memory_dict[1][1] is held[1]  # updated in place, as mamba_ssm does
    torch.testing.assert_close(torch.cat(outs, dim=1), full, rtol=1e-4, atol=1e-5)


@torch.no_grad()
def test_prefill_ignores_stale_states_and_reset_starts_over():
    model, ids = _small(), _ids(1, 6)
    fresh = model(ids, inference_params=mm.InferenceParams())
    params = mm.InferenceParams()
    params.key_value_memory_dict = {i: (torch.randn(1, 64, 4), torch.randn(1, 64, 8)) for i in range(2)}
    torch.testing.assert_close(model(ids, inference_params=params), fresh, rtol=0, atol=0)
    params.seqlen_offset = 6
    params.reset()
    assert params.seqlen_offset == 0 and params.key_value_memory_dict == {}


@torch.no_grad()
def test_mamba_is_a_mambalm_with_the_same_weights_and_constructors():
    cfg = mm.MambaConfig(**SMALL)
    torch.manual_seed(0)
    reference = mm.MambaLM(cfg).eval()
    for model in (mm.Mamba(cfg), mm.Mamba(config=cfg), mm.Mamba(**SMALL), mm.Mamba(config=cfg.to_dict())):
        assert set(model.state_dict()) == set(reference.state_dict())
        model.load_state_dict(reference.state_dict())
        ids = _ids(2, 5)
        torch.testing.assert_close(model.eval()(ids), reference(ids), rtol=0, atol=0)
    cache = model.empty_cache(2)  # MambaLM's own cache API and generate() still work on it
    torch.testing.assert_close(model(ids, cache=cache), reference(ids), rtol=0, atol=0)
    torch.testing.assert_close(model(ids, model.empty_cache(2)), reference(ids), rtol=0, atol=0)
    assert mm.generate(model, ids, 3, temperature=0).shape == (2, 8)


class _NoStore:
    seqlen_offset = 0


@pytest.mark.parametrize("params, error, match", [
    (_NoStore(), TypeError, "key_value_memory_dict"),
    (mm.InferenceParams(seqlen_offset=-1), ValueError, "seqlen_offset must be >= 0"),
    (mm.InferenceParams(seqlen_offset=1.0), TypeError, "seqlen_offset"),
    (mm.InferenceParams(seqlen_offset=3), ValueError, "run the prefill with seqlen_offset=0"),
    (mm.InferenceParams(seqlen_offset=3, key_value_memory_dict={
        i: (torch.zeros(3, 64, 4), torch.zeros(3, 64, 8)) for i in range(2)}), ValueError, "batch size 1"),
])
def test_bad_inference_params(params, error, match):
    with pytest.raises(error, match=match):
        _small()(_ids(1, 1), inference_params=params)


def test_bad_constructor_and_argument_mixes():
    cfg = mm.MambaConfig(**SMALL)
    with pytest.raises(TypeError, match="either config= or keyword fields"):
        mm.Mamba(config=cfg, d_model=64)
    with pytest.raises(TypeError, match="either inference_params= .* or cache="):
        _small()(_ids(1, 2), inference_params=mm.InferenceParams(), cache=mm.InferenceCache.empty(cfg, 1))
    with pytest.raises(ValueError, match="num_last_tokens"):
        _small()(_ids(1, 2), inference_params=mm.InferenceParams(), num_last_tokens=-1)


def test_compat_backward_through_a_one_token_continuation():
    """Adversarial review (2026-11-29, fixed in ede8461): a one-token continuation can be trained
    through, while the caller's states are still updated in place."""
    torch.manual_seed(0)
    m = mm.Mamba(d_model=16, n_layer=1, vocab_size=20, d_state=4)
    ids = torch.randint(0, 20, (2, 5))
    params = mm.InferenceParams()
    with torch.no_grad():
        m(ids[:, :4], inference_params=params)
    params.seqlen_offset = 4
    held = params.key_value_memory_dict[0][1]  # the caller's ssm_state, updated in place
    logits = m(ids[:, 4:5], inference_params=params)
    logits.sum().backward()  # raised "modified by an inplace operation" before the fix
    assert torch.isfinite(m.backbone.embedding.weight.grad).all()
    assert params.key_value_memory_dict[0][1] is held
    with torch.no_grad():
        torch.testing.assert_close(logits, m(ids)[:, 4:5], rtol=1e-5, atol=1e-5)


@torch.no_grad()
def test_a_float32_store_is_refused_by_a_float64_model():
    """The mamba_ssm protocol keeps the cache's precision rule: a float64 model refuses float32
    states, naming both dtypes (a review found them upcast silently: 3.1e-9 off the forward)."""
    model, ids = _small(torch.float64), _ids(1, 4)
    params = mm.InferenceParams()
    model(ids[:, :3], inference_params=params)
    params.seqlen_offset = 3
    assert all(t.dtype == torch.float64 for pair in params.key_value_memory_dict.values() for t in pair)
    params.key_value_memory_dict = {i: tuple(t.float() for t in pair) for i, pair in params.key_value_memory_dict.items()}
    with pytest.raises(ValueError, match=r"key_value_memory_dict\[0\] holds torch.float32 states but the model "
                                         r"computes in torch.float64.*seqlen_offset=0"):
        model(ids[:, 3:], inference_params=params)

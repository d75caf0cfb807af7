"""InferenceCache (``minimamba_core/cache.py``): shapes and dtypes, reset, size, bad arguments, and
the per-layer protocol: one dict of named states per layer (whatever names a mixer keeps),
``conv_states`` / ``ssm_states`` as read-only views, and ``check`` against the shapes a model
asks for."""

import pytest
import torch
from helpers import expect_error, small_config, small_ids, tiny_lm

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
    with pytest.raises(ValueError, match=r"holds torch.float32 states \(layer 0\) but the model computes in "
                                         r"torch.float64.*model.allocate_inference_cache\(1\)"):
        call()
    assert low.seqlen_offset == 0 and all(t.abs().sum() == 0 for t in low.ssm_states)  # untouched


def test_one_float32_state_among_float64_ones_is_refused():
    model = _float64_model()
    cache = model.allocate_inference_cache(1)
    cache.layers[2]["conv_state"] = cache.layers[2]["conv_state"].float()
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


# ---- bad input (issue 9): the cache a model is given, and the cache's own constructor ---------

def test_forward_rejects_a_cache_for_another_batch_size(small_model):
    cache = small_model.empty_cache(3)
    expect_error(lambda: small_model(small_ids(2), cache=cache), ValueError, "cache", "3 sequences", "batch size 2")
    expect_error(lambda: small_model.step(small_ids(2, 1), cache), ValueError, "cache", "3 sequences", "batch size 2")


@pytest.mark.parametrize("other, words", [
    (dict(n_layer=3), ["3 layers", "the model has 2"]),
    (dict(d_model=32), ["layer 0 holds", "'conv_state': (2, 64, 4)", "needs", "'conv_state': (2, 32, 4)"]),
    (dict(d_state=8), ["layer 0 holds", "'ssm_state': (2, 32, 8)", "needs", "'ssm_state': (2, 32, 4)"]),
    (dict(d_conv=3), ["layer 0 holds", "'conv_state': (2, 32, 3)", "needs", "'conv_state': (2, 32, 4)"]),
], ids=["n_layer", "d_model", "d_state", "d_conv"])
def test_forward_rejects_a_cache_for_another_model(small_model, other, words):
    cache = mm.InferenceCache.empty(small_config(**other), 2)
    for call in (lambda: small_model(small_ids(2), cache=cache), lambda: small_model.step(small_ids(2, 1), cache)):
        expect_error(call, ValueError, "another model", *words, "model.allocate_inference_cache(2)")


@pytest.mark.parametrize("batch_size", [0, -1, 2.0, True, "2"])
def test_cache_empty_rejects_bad_batch_size(batch_size):
    expect_error(lambda: mm.InferenceCache.empty(small_config(), batch_size), ValueError,
                 "batch_size", "positive int", repr(batch_size))


def test_cache_empty_rejects_half_dtype_and_non_config():
    expect_error(lambda: mm.InferenceCache.empty(small_config(), 1, dtype=torch.bfloat16), ValueError,
                 "dtype", "float32", "torch.bfloat16")
    expect_error(lambda: mm.InferenceCache.empty({"d_model": 16}, 1), TypeError, "config", "MambaConfig", "dict")


def test_cache_check_names_what_differs(small_model):
    cache = mm.InferenceCache.empty(small_config(), 2)
    shapes = small_model.state_shapes(2)
    cache.check(shapes, 2)  # the right model and batch size pass
    expect_error(lambda: cache.check(shapes, 4), ValueError, "2 sequences", "batch size 4")
    one_layer = mm.MambaLM(small_config(n_layer=1)).state_shapes(2)
    expect_error(lambda: cache.check(one_layer, 2), ValueError, "2 layers", "the model has 1")
    expect_error(lambda: cache.check("config", 2), TypeError, "shapes", "state_shapes", "str")
    expect_error(lambda: cache.check(small_config(), 2), TypeError, "shapes", "state_shapes", "MambaConfig")


def test_a_cache_on_another_device_is_rejected():
    """Adversarial review (2026-11-29, fixed in ede8461): a cache on another device than the model
    is refused by name, not by a device error deep inside."""
    model = tiny_lm()
    cache = mm.InferenceCache.empty(model.config, 1, device="meta")
    with pytest.raises(ValueError, match="cache lives on meta"):
        model(torch.tensor([[1, 2]]), cache=cache)


# ---- the per-layer protocol ----------------------------------------------------------------

def test_layers_hold_each_mixers_named_states():
    """A Mamba-1 model's cache: per layer ``{"conv_state", "ssm_state"}``, as its mixers allocate them."""
    torch.manual_seed(0)
    model = mm.MambaLM(CFG)
    cache = model.allocate_inference_cache(2)
    assert len(cache.layers) == 3 and cache.seqlen_offset == 0
    assert [{k: tuple(v.shape) for k, v in layer.items()} for layer in cache.layers] == model.state_shapes(2) == [
        {"conv_state": (2, 32, 3), "ssm_state": (2, 32, 4)}] * 3
    empty = mm.InferenceCache.empty(CFG, 2)  # the config-only constructor builds the same
    assert [{k: (v.shape, v.dtype) for k, v in layer.items()} for layer in empty.layers] == [
        {k: (v.shape, v.dtype) for k, v in layer.items()} for layer in cache.layers]
    assert cache.tensors() == [t for layer in cache.layers for t in (layer["conv_state"], layer["ssm_state"])]


def test_conv_states_and_ssm_states_are_read_only_views():
    cache = mm.InferenceCache.empty(CFG, 1)
    views = cache.conv_states
    assert views is not cache.conv_states and views[1] is cache.layers[1]["conv_state"]
    views[1] = torch.ones(1)  # a new list: the cache does not change
    assert cache.layers[1]["conv_state"].shape == (1, 32, 3)
    with pytest.raises(AttributeError):
        cache.ssm_states = []
    cache.layers[1]["ssm_state"] = torch.ones(1, 32, 4)  # where a state is replaced
    assert cache.ssm_states[1].sum() == 32 * 4


def test_a_cache_of_other_state_names():
    """The cache only holds states: any names, shapes and dtypes; its size, dtype, reset follow them."""
    cache = mm.InferenceCache([{"running_sum": torch.ones(2, 16), "count": torch.full((2, 1), 3.0)},
                               {"h": torch.ones(2, 4, 8, 16, dtype=torch.float64)}], seqlen_offset=3)
    assert cache.batch_size == 2 and cache.dtype == torch.float32  # the lowest precision held
    assert cache.nbytes() == 2 * 16 * 4 + 2 * 4 + 2 * 4 * 8 * 16 * 8
    cache.check([{"running_sum": (2, 16), "count": (2, 1)}, {"h": (2, 4, 8, 16)}], 2)
    expect_error(lambda: cache.check([{"conv_state": (2, 16)}, {"h": (2, 4, 8, 16)}], 2), ValueError,
                 "layer 0 holds", "'running_sum': (2, 16)", "needs", "'conv_state': (2, 16)")
    expect_error(lambda: cache.check([{"running_sum": (2, 16), "count": (2, 1)}, {"h": (2, 4, 8, 16)}], 2,
                                     compute_dtype=torch.float64), ValueError, "torch.float32 states", "torch.float64")
    cache.reset()
    assert cache.seqlen_offset == 0 and not any(t.any() for t in cache.tensors())


def test_empty_refuses_a_config_with_other_layer_kinds():
    for kw, kind in ((dict(ssm_cfg={"layer": "Mamba2"}, headdim=8), "Mamba2"), (dict(attn_layer_idx=[0]), "MHA")):
        expect_error(lambda: mm.InferenceCache.empty(small_config(**kw), 1), ValueError, "Mamba-1 states only",
                     repr(kind), "model.allocate_inference_cache")


# ---- a malformed cache is refused at construction (found by a review that tried to break it) ---

def _two_layers() -> mm.MambaLM:
    torch.manual_seed(0)
    return mm.MambaLM(small_config()).eval()


def test_the_old_two_list_constructor_is_refused_with_the_new_form():
    model = _two_layers()
    old = model.allocate_inference_cache(1)
    expect_error(lambda: mm.InferenceCache(old.conv_states, old.ssm_states), TypeError,
                 "one dict of named state tensors per layer", "model.allocate_inference_cache")
    expect_error(lambda: mm.InferenceCache([]), TypeError, "non-empty list")


def test_layers_sharing_one_dict_are_refused():
    """Two layers writing one dict decoded wrongly (0.08 off the full forward) before this check."""
    state = _two_layers().allocate_inference_cache(1).layers[0]
    expect_error(lambda: mm.InferenceCache([state, state]), ValueError, "share one dict")


@pytest.mark.parametrize("offset", [-5, 1.0, True])
def test_seqlen_offset_must_be_a_non_negative_int(offset):
    layers = _two_layers().allocate_inference_cache(1).layers
    expect_error(lambda: mm.InferenceCache(layers, offset), ValueError, "seqlen_offset must be an int >= 0")


def test_named_views_say_which_layer_is_not_mamba1():
    cache = mm.InferenceCache([{"keys": torch.zeros(1, 0, 4)}], 0)
    expect_error(lambda: cache.conv_states, KeyError, "layer 0", "'keys'", "no 'conv_state'", "cache.layers[i]")


def test_shapes_with_none_accept_a_growing_state_and_integer_states_skip_the_precision_check():
    keys = torch.zeros(2, 5, 16, dtype=torch.float64)        # grown to 5 positions
    steps = torch.zeros(2, dtype=torch.int64)                 # a counter: no precision to lose
    cache = mm.InferenceCache([{"keys": keys, "steps": steps}], 5)
    cache.check([{"keys": (2, None, 16), "steps": (2,)}], 2, keys.device, torch.float64)
    assert cache.dtype == torch.float64
    expect_error(lambda: cache.check([{"keys": (2, None, 8), "steps": (2,)}], 2), ValueError, "another model")
    expect_error(lambda: cache.check([{"keys": (2, 16), "steps": (2,)}], 2), ValueError, "another model")


def test_each_layer_is_checked_against_its_own_mixer_precision():
    """A float64 mixer inside a float32 model refuses a float32 state (the model-wide dtype would not)."""
    model = _two_layers()
    model.backbone.layers[1].double()
    assert model.compute_dtype() == torch.float32
    low = mm.InferenceCache.empty(model.config, 1)  # float32 everywhere
    expect_error(lambda: model(small_ids(1, 3), cache=low), ValueError, "layer 1", "torch.float32",
                 "computes in torch.float64")
    cache = model.allocate_inference_cache(1)
    assert [layer["ssm_state"].dtype for layer in cache.layers][:2] == [torch.float32, torch.float64]

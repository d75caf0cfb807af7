"""MambaLM (``minimamba_core/model.py``): structure, cached inference equal to the full forward,
parameter count, bad input. The layer protocol (registry, gated MLP, old configs) is tested in
``test_model_shell.py``."""

import importlib

import pytest
import torch
from helpers import BAD_IDS, SMALL_VOCAB, expect_error, prefill_then_step, small_ids, tiny_lm

import minimamba_core as mm

model_mod = importlib.import_module("minimamba_core.model")


def _model(dtype=torch.float32, seed=0, device="cpu", **overrides):
    torch.manual_seed(seed)  # weights drawn on the CPU, then moved: the same model on every device
    cfg = dict(d_model=32, n_layer=2, vocab_size=45, d_state=8)
    cfg.update(overrides)
    return mm.MambaLM(mm.MambaConfig(**cfg)).to(device, dtype).eval()


def _ids(b, l, vocab=45, seed=1, device="cpu"):
    return torch.randint(0, vocab, (b, l), generator=torch.Generator().manual_seed(seed)).to(device)


def test_module_names_follow_the_official_checkpoint():
    names = set(_model().state_dict())
    for key in ["backbone.embedding.weight", "backbone.layers.1.norm.weight", "backbone.norm_f.weight",
                "lm_head.weight", "backbone.layers.0.mixer.A_log", "backbone.layers.0.mixer.D",
                "backbone.layers.0.mixer.in_proj.weight", "backbone.layers.0.mixer.conv1d.weight",
                "backbone.layers.0.mixer.conv1d.bias", "backbone.layers.0.mixer.x_proj.weight",
                "backbone.layers.0.mixer.dt_proj.weight", "backbone.layers.0.mixer.dt_proj.bias",
                "backbone.layers.0.mixer.out_proj.weight"]:
        assert key in names


def test_tied_head_and_embedding_are_one_tensor():
    model = _model()
    assert model.lm_head.weight is model.backbone.embedding.weight
    untied = _model(tie_embeddings=False)
    assert untied.lm_head.weight is not untied.backbone.embedding.weight
    assert untied.num_parameters() == model.num_parameters() + 48 * 32  # one more (48, 32) matrix


def test_logits_shape_includes_padded_rows():
    model = _model()
    logits = model(_ids(3, 5))
    assert logits.shape == (3, 5, 48)  # vocab 45 padded to a multiple of 8
    assert model(_ids(3, 5), num_last_tokens=2).shape == (3, 2, 48)


@pytest.mark.parametrize("k", range(0, 13))
def test_prefill_then_step_equals_full_forward_every_split_of_12(k, device):
    if device.type == "mps":
        pytest.skip("MPS has no float64")
    model = _model(dtype=torch.float64, device=device)  # d_conv = 4: k = 1, 2, 3 are shorter prompts
    ids = _ids(2, 12, device=device)
    torch.testing.assert_close(prefill_then_step(model, ids, k), model(ids), atol=1e-12, rtol=1e-12)


@pytest.mark.parametrize("k", [0, 100, 257, 299])
def test_prefill_then_step_equals_full_forward_length_300(k, device):
    model = _model(device=device)
    ids = _ids(1, 300, device=device)
    # fp32: the prefill uses the parallel scan and the steps the sequential one; both accumulate
    # in fp32 with different rounding orders, measured max abs difference ~1e-6 on logits O(1).
    torch.testing.assert_close(prefill_then_step(model, ids, k), model(ids), atol=2e-5, rtol=2e-5)


def test_forward_with_cache_continues_a_sequence():
    model = _model(dtype=torch.float64)
    ids = _ids(2, 20)
    cache = model.empty_cache(2)
    parts = [model(ids[:, :7], cache=cache), model(ids[:, 7:9], cache=cache), model(ids[:, 9:], cache=cache)]
    torch.testing.assert_close(torch.cat(parts, 1), model(ids), atol=1e-12, rtol=1e-12)


def _mixer_inputs(model, ids):
    """The input of every layer's mixer, captured with hooks."""
    captured = []
    hooks = [layer.mixer.register_forward_hook(lambda m, args, out: captured.append(args[0]))
             for layer in model.backbone.layers]
    model(ids)
    for h in hooks:
        h.remove()
    return captured


def test_cached_ssm_state_after_prefill_equals_float64_reference(device):
    model = _model(device=device)
    cache = model.empty_cache(2)
    model(_ids(2, 50, device=device), cache=cache)
    model, ids = model.cpu(), _ids(2, 50)
    ref = _model().double()
    ref.load_state_dict(model.state_dict())
    for layer, hidden in zip(ref.backbone.layers, _mixer_inputs(ref, ids)):
        mixer = layer.mixer
        x, z = mixer.in_proj(hidden).chunk(2, dim=-1)
        x = torch.nn.functional.silu(mixer.conv1d(x.transpose(1, 2))[..., :50].transpose(1, 2))
        delta, B, C = mixer.ssm_inputs(x)
        _, h = mm.selective_scan_sequential(x, delta, -torch.exp(mixer.A_log), B, C, D=mixer.D, z=z,
                                            delta_bias=mixer.dt_proj.bias, delta_softplus=True,
                                            return_last_state=True)
        got = cache.ssm_states[layer.mixer.layer_idx].cpu()
        assert got.dtype == torch.float32 and h.abs().max() > 1e-3
        torch.testing.assert_close(got.double(), h, atol=1e-5, rtol=1e-5)


def test_step_leaves_every_parameter_untouched():
    model = _model()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    cache = model.empty_cache(2)
    model(_ids(2, 5), cache=cache)
    model.step(_ids(2, 1), cache)
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k


def test_parameter_count_equals_transformers_for_130m():
    transformers = pytest.importorskip("transformers")
    with torch.device("meta"):
        ours = mm.MambaLM(mm.MambaConfig(d_model=768, n_layer=24, vocab_size=50277))
        hf = transformers.MambaForCausalLM(transformers.MambaConfig(
            vocab_size=50280, hidden_size=768, num_hidden_layers=24, state_size=16, expand=2,
            conv_kernel=4, tie_word_embeddings=True))
    assert ours.config.padded_vocab_size == 50280
    assert ours.num_parameters() == hf.num_parameters()
    assert ours.num_parameters() == 129_135_360  # the count transformers reports for mamba-130m-hf


def test_float64_model_keeps_float64_everywhere():
    model = _model(dtype=torch.float64)
    cache = model.empty_cache(1)
    assert model(_ids(1, 4), cache=cache).dtype == torch.float64
    assert cache.ssm_states[0].dtype == torch.float64


# ---- bad input: one test each -------------------------------------------------------------


def test_token_id_out_of_range():
    with pytest.raises(ValueError, match=r"input_ids must lie in \[0, vocab_size=45\), got values in \[0, 45\]"):
        _model()(torch.tensor([[0, 45]]))


def test_negative_token_id():
    with pytest.raises(ValueError, match=r"got values in \[-1, 3\]"):
        _model()(torch.tensor([[-1, 3]]))


def test_float_token_ids():
    with pytest.raises(TypeError, match="integer token ids"):
        _model()(torch.tensor([[1.0, 2.0]]))


def test_wrong_rank_token_ids():
    with pytest.raises(ValueError, match=r"shape \(batch, seqlen\), got \(5,\)"):
        _model()(torch.arange(5))


def test_empty_sequence():
    with pytest.raises(ValueError, match="input_ids is empty"):
        _model()(torch.zeros(2, 0, dtype=torch.long))


def test_cache_for_another_batch_size():
    model = _model()
    with pytest.raises(ValueError, match="this cache holds 3 sequences but the input has batch size 2"):
        model(_ids(2, 4), cache=model.empty_cache(3))


def test_cache_for_another_model():
    model = _model()
    other = mm.InferenceCache.empty(mm.MambaConfig(d_model=16, n_layer=2, vocab_size=45), 2)
    with pytest.raises(ValueError, match="this cache was built for another model"):
        model(_ids(2, 4), cache=other)


def test_step_needs_one_token():
    model = _model()
    cache = model.empty_cache(2)
    with pytest.raises(ValueError, match=r"step takes one token per row, shape \(b, 1\)"):
        model.step(_ids(2, 2), cache)


# ---- bad input at the model's door (issue 9): the argument named, nothing consumed -----------

@pytest.mark.parametrize("case, make, error, words", BAD_IDS, ids=[c[0] for c in BAD_IDS])
def test_forward_rejects_bad_ids(small_model, case, make, error, words):
    expect_error(lambda: small_model(make()), error, *words)


def test_forward_rejects_bad_num_last_tokens(small_model):
    expect_error(lambda: small_model(small_ids(), num_last_tokens=-1), ValueError, "num_last_tokens", ">= 0", "-1")
    expect_error(lambda: small_model(small_ids(), num_last_tokens=1.5), ValueError, "num_last_tokens", "1.5")


def test_forward_rejects_a_cache_of_the_wrong_type(small_model):
    expect_error(lambda: small_model(small_ids(), cache={"ssm": None}), TypeError, "cache", "InferenceCache", "dict")


def test_step_rejects_bad_input(small_model):
    cache = small_model.empty_cache(2)
    expect_error(lambda: small_model.step(small_ids(2, 2), cache), ValueError, "(b, 1)", "(2, 2)")
    expect_error(lambda: small_model.step(small_ids(2, 1), None), TypeError, "InferenceCache")
    expect_error(lambda: small_model.step(torch.zeros(2, 1), cache), TypeError, "input_ids_t", "torch.float32")
    expect_error(lambda: small_model.step(torch.full((2, 1), SMALL_VOCAB), cache), ValueError, "input_ids_t",
                 "vocab_size=50")
    assert cache.seqlen_offset == 0  # nothing was consumed by the failed calls


def test_failed_forward_leaves_the_cache_untouched(small_model):
    cache = small_model.empty_cache(2)
    with torch.no_grad():
        small_model(small_ids(2), cache=cache)
    before = [t.clone() for t in cache.tensors()]
    expect_error(lambda: small_model(torch.tensor([[1, 99], [1, 2]]), cache=cache), ValueError, "input_ids")
    assert cache.seqlen_offset == 5
    assert all(torch.equal(a, b) for a, b in zip(before, cache.tensors()))


def test_model_rejects_a_non_config():
    expect_error(lambda: mm.MambaLM({"d_model": 16}), TypeError, "config", "MambaConfig", "dict")


@pytest.mark.parametrize("dtype", [torch.uint8, torch.int8, torch.int16])
def test_small_integer_ids_are_rejected_with_the_fix(dtype):
    """Adversarial review (2026-11-29, fixed in ede8461): ids of a small integer dtype are refused,
    naming the fix."""
    with pytest.raises(TypeError, match=r"input_ids .*torch.long.*input_ids.long\(\)"):
        tiny_lm()(torch.tensor([[1, 2]], dtype=dtype))


def test_bad_input_guard_fires_without_validation(small_model, monkeypatch):
    """Without the model's checks, out-of-range ids crash deep inside (an IndexError from the
    embedding, or a silently valid padded-vocabulary row) instead of a clear ValueError."""
    monkeypatch.setattr(model_mod, "check_input_ids", lambda ids, vocab_size, name="input_ids": None)
    for make in (lambda: torch.tensor([[1, 55]]), lambda: torch.tensor([[1, -1]])):
        with pytest.raises(AssertionError):
            expect_error(lambda: small_model(make()), ValueError, "input_ids", "vocab_size=50")

"""Bad input at every public entry point gives an exception that names the argument, what was
expected and what was given -- never a crash deep inside. Empty sequences give an empty result
or such an error. ``check_finite`` makes the scans raise on NaN/inf.

Entry points: the scans, ``MambaLM.forward/step``, ``InferenceCache.empty/check``, ``generate``,
``sample_next_token``, ``MambaConfig``. Guards of issue 9; the last test injects a bug (the
model's input validation switched off) and shows the guard firing.
"""

from __future__ import annotations

import math

import pytest
import torch

import minimamba_core as mm

VOCAB = 50


def expect_error(fn, error: type[Exception], *words: str) -> Exception:
    """Call ``fn``; it must raise ``error`` whose message contains every one of ``words``."""
    try:
        fn()
    except Exception as err:  # noqa: BLE001 - the type is the check
        assert isinstance(err, error), f"expected {error.__name__}, got {type(err).__name__}: {err}"
        missing = [w for w in words if w not in str(err)]
        assert not missing, f"message {str(err)!r} lacks {missing}"
        return err
    raise AssertionError(f"expected {error.__name__}, nothing was raised")


def _config(**kw) -> mm.MambaConfig:
    cfg = dict(d_model=16, n_layer=2, vocab_size=VOCAB, d_state=4)
    cfg.update(kw)
    return mm.MambaConfig(**cfg)


@pytest.fixture(scope="module")
def model() -> mm.MambaLM:
    torch.manual_seed(0)
    return mm.MambaLM(_config()).eval()


def _ids(b: int = 2, l: int = 5) -> torch.Tensor:
    return torch.randint(0, VOCAB, (b, l), generator=torch.Generator().manual_seed(0))


# ----------------------------------------------------------------------------------------------
# the scans
# ----------------------------------------------------------------------------------------------

SCANS = {"parallel": mm.selective_scan_parallel, "sequential": mm.selective_scan_sequential,
         "front door": mm.selective_scan}


def _scan_inputs(b=2, l=5, d=3, n=4, **replace):
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


@pytest.mark.parametrize("scan", SCANS.values(), ids=SCANS.keys())
@pytest.mark.parametrize("case, replace, error, words", SCAN_CASES, ids=[c[0] for c in SCAN_CASES])
def test_scan_rejects_bad_input(scan, case, replace, error, words):
    expect_error(lambda: scan(**_scan_inputs(**replace)), error, *words)


@pytest.mark.parametrize("scan", SCANS.values(), ids=SCANS.keys())
def test_scan_rejects_non_tensor_x(scan):
    expect_error(lambda: scan(**_scan_inputs(x=[[[1.0] * 3] * 5] * 2)), TypeError, "x", "list")


def test_scan_rejects_unknown_method():
    expect_error(lambda: mm.selective_scan(**_scan_inputs(), method="fast"), ValueError,
                 "method", "'parallel'", "'fast'")


@pytest.mark.parametrize("scan", SCANS.values(), ids=SCANS.keys())
@pytest.mark.parametrize("name", ["x", "delta", "A", "B", "C", "D", "z", "delta_bias", "h0"])
@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_check_finite_raises_on_nan_and_inf(scan, name, bad):
    inp = _scan_inputs()
    inp[name] = inp[name].clone()
    inp[name].view(-1)[1] = bad
    expect_error(lambda: scan(**inp, check_finite=True), ValueError, name, "NaN or inf")


def test_without_check_finite_nan_propagates():
    """What ``check_finite`` is for: a NaN in ``x`` silently spreads otherwise."""
    inp = _scan_inputs()
    inp["x"][0, 1, 0] = math.nan
    assert torch.isnan(mm.selective_scan(**inp)).any()


@pytest.mark.parametrize("scan", SCANS.values(), ids=SCANS.keys())
def test_scan_empty_batch_and_empty_sequence_give_empty_results(scan):
    y = scan(**{k: v for k, v in _scan_inputs(b=0).items()})
    assert y.shape == (0, 5, 3)
    h0 = torch.randn(2, 3, 4)
    y, h = scan(**_scan_inputs(l=0, h0=h0), return_last_state=True)
    assert y.shape == (2, 0, 3) and torch.equal(h, h0)  # nothing happened: the state is h0


# ----------------------------------------------------------------------------------------------
# MambaLM.forward / step
# ----------------------------------------------------------------------------------------------

FORWARD_CASES = [
    ("float ids", lambda: torch.zeros(2, 5), TypeError, ["input_ids", "integer", "torch.float32"]),
    ("bool ids", lambda: torch.zeros(2, 5, dtype=torch.bool), TypeError, ["input_ids", "torch.bool"]),
    ("1-d ids", lambda: torch.zeros(5, dtype=torch.long), ValueError, ["input_ids", "(batch, seqlen)", "(5,)"]),
    ("3-d ids", lambda: torch.zeros(1, 2, 5, dtype=torch.long), ValueError, ["input_ids", "(1, 2, 5)"]),
    ("negative id", lambda: torch.tensor([[1, -1, 2]]), ValueError, ["input_ids", "[0, vocab_size=50)", "-1"]),
    ("id = vocab_size", lambda: torch.tensor([[1, 50]]), ValueError, ["input_ids", "vocab_size=50", "50]"]),
    ("padded-vocab id", lambda: torch.tensor([[55]]), ValueError, ["input_ids", "vocab_size=50", "55"]),
    ("empty batch", lambda: torch.zeros(0, 5, dtype=torch.long), ValueError, ["input_ids", "empty", "(0, 5)"]),
    ("empty sequence", lambda: torch.zeros(2, 0, dtype=torch.long), ValueError, ["input_ids", "empty", "(2, 0)"]),
    ("a list", lambda: [[1, 2, 3]], TypeError, ["input_ids", "torch.Tensor", "list"]),
]


@pytest.mark.parametrize("case, make, error, words", FORWARD_CASES, ids=[c[0] for c in FORWARD_CASES])
def test_forward_rejects_bad_ids(model, case, make, error, words):
    expect_error(lambda: model(make()), error, *words)


@pytest.mark.parametrize("case, make, error, words", FORWARD_CASES, ids=[c[0] for c in FORWARD_CASES])
def test_generate_rejects_bad_ids(model, case, make, error, words):
    expect_error(lambda: mm.generate(model, make(), 3), error, *words)


def test_forward_rejects_bad_num_last_tokens(model):
    expect_error(lambda: model(_ids(), num_last_tokens=-1), ValueError, "num_last_tokens", ">= 0", "-1")
    expect_error(lambda: model(_ids(), num_last_tokens=1.5), ValueError, "num_last_tokens", "1.5")


def test_forward_rejects_a_cache_for_another_batch_size(model):
    cache = model.empty_cache(3)
    expect_error(lambda: model(_ids(2), cache=cache), ValueError, "cache", "3 sequences", "batch size 2")
    expect_error(lambda: model.step(_ids(2, 1), cache), ValueError, "cache", "3 sequences", "batch size 2")


@pytest.mark.parametrize("other", [dict(n_layer=3), dict(d_model=32), dict(d_state=8), dict(d_conv=3)])
def test_forward_rejects_a_cache_for_another_model(model, other):
    cache = mm.InferenceCache.empty(_config(**other), 2)
    for call in (lambda: model(_ids(2), cache=cache), lambda: model.step(_ids(2, 1), cache)):
        expect_error(call, ValueError, "another model", "(n_layer, d_inner, d_conv, d_state)")


def test_forward_rejects_a_cache_of_the_wrong_type(model):
    expect_error(lambda: model(_ids(), cache={"ssm": None}), TypeError, "cache", "InferenceCache", "dict")


def test_step_rejects_bad_input(model):
    cache = model.empty_cache(2)
    expect_error(lambda: model.step(_ids(2, 2), cache), ValueError, "(b, 1)", "(2, 2)")
    expect_error(lambda: model.step(_ids(2, 1), None), TypeError, "InferenceCache")
    expect_error(lambda: model.step(torch.zeros(2, 1), cache), TypeError, "input_ids_t", "torch.float32")
    expect_error(lambda: model.step(torch.full((2, 1), VOCAB), cache), ValueError, "input_ids_t", "vocab_size=50")
    assert cache.seqlen_offset == 0  # nothing was consumed by the failed calls


def test_failed_forward_leaves_the_cache_untouched(model):
    cache = model.empty_cache(2)
    with torch.no_grad():
        model(_ids(2), cache=cache)
    before = [t.clone() for t in cache.conv_states + cache.ssm_states]
    expect_error(lambda: model(torch.tensor([[1, 99], [1, 2]]), cache=cache), ValueError, "input_ids")
    assert cache.seqlen_offset == 5
    assert all(torch.equal(a, b) for a, b in zip(before, cache.conv_states + cache.ssm_states))


# ----------------------------------------------------------------------------------------------
# InferenceCache
# ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("batch_size", [0, -1, 2.0, True, "2"])
def test_cache_empty_rejects_bad_batch_size(batch_size):
    expect_error(lambda: mm.InferenceCache.empty(_config(), batch_size), ValueError,
                 "batch_size", "positive int", repr(batch_size))


def test_cache_empty_rejects_half_dtype_and_non_config():
    expect_error(lambda: mm.InferenceCache.empty(_config(), 1, dtype=torch.bfloat16), ValueError,
                 "dtype", "float32", "torch.bfloat16")
    expect_error(lambda: mm.InferenceCache.empty({"d_model": 16}, 1), TypeError, "config", "MambaConfig", "dict")


def test_cache_check_names_what_differs():
    cache = mm.InferenceCache.empty(_config(), 2)
    cache.check(_config(), 2)  # the right model and batch size pass
    expect_error(lambda: cache.check(_config(), 4), ValueError, "2 sequences", "batch size 4")
    expect_error(lambda: cache.check(_config(n_layer=1), 2), ValueError, "(2, 32, 4, 4)", "(1, 32, 4, 4)")
    expect_error(lambda: cache.check("config", 2), TypeError, "config", "MambaConfig", "str")


# ----------------------------------------------------------------------------------------------
# generate / sample_next_token
# ----------------------------------------------------------------------------------------------

CONTROL_CASES = [
    ("temperature", -0.5, ["temperature", ">= 0", "-0.5"]),
    ("temperature", math.nan, ["temperature", "nan"]),
    ("top_k", -1, ["top_k", ">= 0", "-1"]),
    ("top_k", 2.5, ["top_k", "int", "2.5"]),
    ("top_p", 0.0, ["top_p", "(0, 1]", "0.0"]),
    ("top_p", 1.5, ["top_p", "(0, 1]", "1.5"]),
    ("top_p", -0.1, ["top_p", "(0, 1]", "-0.1"]),
    ("min_p", 1.0, ["min_p", "[0, 1)", "1.0"]),
    ("min_p", -0.1, ["min_p", "[0, 1)", "-0.1"]),
    ("repetition_penalty", 0.0, ["repetition_penalty", "> 0", "0.0"]),
]


@pytest.mark.parametrize("name, value, words", CONTROL_CASES, ids=[f"{c[0]}={c[1]}" for c in CONTROL_CASES])
def test_sampling_controls_out_of_range(model, name, value, words):
    expect_error(lambda: mm.generate(model, _ids(), 2, **{name: value}), ValueError, *words)
    logits = torch.zeros(2, model.config.padded_vocab_size)
    expect_error(lambda: mm.sample_next_token(logits, VOCAB, **{name: value}), ValueError, *words)


def test_generate_rejects_bad_lengths_and_eos(model):
    expect_error(lambda: mm.generate(model, _ids(), -1), ValueError, "max_new_tokens", ">= 0", "-1")
    expect_error(lambda: mm.generate(model, _ids(), 2.0), ValueError, "max_new_tokens", "2.0")
    expect_error(lambda: mm.generate(model, _ids(), 2, eos_token_id=VOCAB), ValueError, "eos_token_id", "50")
    expect_error(lambda: mm.generate("model", _ids(), 2), TypeError, "model", "MambaLM", "str")
    assert torch.equal(mm.generate(model, _ids(), 0), _ids())  # zero new tokens: the prompt back


def test_sample_next_token_rejects_bad_logits_and_history():
    ok = torch.zeros(2, 56)
    expect_error(lambda: mm.sample_next_token(torch.zeros(56), VOCAB), ValueError, "logits", "(b >= 1", "(56,)")
    expect_error(lambda: mm.sample_next_token(torch.zeros(2, 1, 56), VOCAB), ValueError, "logits", "(2, 1, 56)")
    expect_error(lambda: mm.sample_next_token(torch.zeros(2, 40), VOCAB), ValueError, "logits", "vocab_size=50", "(2, 40)")
    expect_error(lambda: mm.sample_next_token(torch.zeros(0, 56), VOCAB), ValueError, "logits", "(0, 56)")
    expect_error(lambda: mm.sample_next_token(torch.zeros(2, 56, dtype=torch.long), VOCAB), TypeError,
                 "logits", "floating-point", "torch.int64")
    expect_error(lambda: mm.sample_next_token(ok, 0), ValueError, "vocab_size", "positive", "0")
    expect_error(lambda: mm.sample_next_token(ok, VOCAB, repetition_penalty=1.2, previous_ids=torch.zeros(3, 4, dtype=torch.long)),
                 ValueError, "previous_ids", "(b=2, t)", "(3, 4)")
    expect_error(lambda: mm.sample_next_token(ok, VOCAB, repetition_penalty=1.2, previous_ids=torch.zeros(2, 4)),
                 TypeError, "previous_ids", "torch.float32")
    expect_error(lambda: mm.sample_next_token(ok, VOCAB, repetition_penalty=1.2,
                                              previous_ids=torch.tensor([[1], [-3]])),
                 ValueError, "previous_ids", "vocab_size=50", "-3")


def test_generate_accepts_int32_prompts_with_a_repetition_penalty(model):
    """int32 ids pass validation, so the penalty's gather must not choke on them."""
    out = mm.generate(model, _ids().int(), 3, temperature=0, repetition_penalty=1.3)
    assert out.shape == (2, 8)


# ----------------------------------------------------------------------------------------------
# MambaConfig
# ----------------------------------------------------------------------------------------------

CONFIG_CASES = [
    (dict(d_model=0), ["d_model", "positive int", "0"]),
    (dict(d_model=16.0), ["d_model", "positive int", "16.0"]),
    (dict(n_layer=-2), ["n_layer", "-2"]),
    (dict(vocab_size=True), ["vocab_size", "True"]),
    (dict(d_state=0), ["d_state", "0"]),
    (dict(d_conv=0), ["d_conv", "0"]),
    (dict(expand=1.5), ["expand", "1.5"]),
    (dict(dt_rank=0), ["dt_rank", "'auto'", "0"]),
    (dict(dt_rank="full"), ["dt_rank", "'full'"]),
    (dict(dt_init="xavier"), ["dt_init", "'random'", "'xavier'"]),
    (dict(dt_min=0.2, dt_max=0.1), ["dt_min", "dt_max", "0.2", "0.1"]),
    (dict(dt_min=-1e-3), ["dt_min", "positive", "-0.001"]),
    (dict(rms_norm_eps=0.0), ["rms_norm_eps", "0.0"]),
    (dict(tie_embeddings="yes"), ["tie_embeddings", "bool", "'yes'"]),
    (dict(pad_vocab_size_multiple=0), ["pad_vocab_size_multiple", "0"]),
]


@pytest.mark.parametrize("kw, words", CONFIG_CASES, ids=[next(iter(c[0])) + "=" + repr(list(c[0].values())[-1]) for c in CONFIG_CASES])
def test_config_rejects_nonsense(kw, words):
    base = dict(d_model=16, n_layer=2, vocab_size=VOCAB)
    base.update(kw)
    expect_error(lambda: mm.MambaConfig(**base), ValueError, *words)


def test_config_from_dict_rejects_unknown_keys():
    data = _config().to_dict()
    data["d_modle"] = 16
    expect_error(lambda: mm.MambaConfig.from_dict(data), ValueError, "unknown", "d_modle")


def test_model_rejects_a_non_config():
    expect_error(lambda: mm.MambaLM({"d_model": 16}), TypeError, "config", "MambaConfig", "dict")


# ----------------------------------------------------------------------------------------------
# the guard fires when validation is switched off
# ----------------------------------------------------------------------------------------------

def test_bad_input_guard_fires_without_validation(model, monkeypatch):
    """Without the model's checks, out-of-range ids crash deep inside (an IndexError from the
    embedding, or a silently valid padded-vocabulary row) instead of a clear ValueError."""
    monkeypatch.setattr(mm.MambaLM, "_check_input_ids", lambda self, ids, name="input_ids": None)
    for make in (lambda: torch.tensor([[1, 55]]), lambda: torch.tensor([[1, -1]])):
        with pytest.raises(AssertionError):
            expect_error(lambda: model(make()), ValueError, "input_ids", "vocab_size=50")

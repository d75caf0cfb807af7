"""generate and sample_next_token (``minimamba_core/generate.py``): greedy equals argmax decoding, no
padded rows, EOS, controls, and bad input named at the door (issue 9)."""

import numpy as np
import pytest
import torch
from helpers import BAD_CONTROLS, BAD_IDS, SMALL_VOCAB, expect_error, small_ids, tiny_lm

import minimamba_core as mm


def _model(seed=0):
    torch.manual_seed(seed)
    return mm.MambaLM(mm.MambaConfig(d_model=32, n_layer=2, vocab_size=45, d_state=8)).eval()


def _prompt(b=2, l=5):
    return torch.randint(0, 45, (b, l), generator=torch.Generator().manual_seed(3))


def test_greedy_with_cache_equals_argmax_of_repeated_full_forwards(device):
    model = _model().to(device)
    ids = _prompt().to(device)
    out = mm.generate(model, ids, max_new_tokens=20, temperature=0)
    ref = ids
    with torch.no_grad():
        for _ in range(20):
            nxt = model(ref)[:, -1, :45].argmax(-1)
            ref = torch.cat([ref, nxt[:, None]], 1)
    assert out.shape == (2, 25)
    assert torch.equal(out, ref)


def _model_that_loves_padded_rows():
    model = _model()
    with torch.no_grad():  # make the 3 padded rows (45, 46, 47) by far the most likely tokens
        model.lm_head.weight[45:] = 0
        model.backbone.norm_f.weight.fill_(1.0)
        model.lm_head.weight[45:] = model.backbone.norm_f.weight * 50
    return model


def test_padded_rows_are_never_generated():
    model = _model_that_loves_padded_rows()
    assert model(_prompt())[:, -1].argmax(-1).min() >= 45  # the raw logits do prefer them
    for kwargs in [dict(temperature=0), dict(temperature=1.0), dict(temperature=2.0, top_p=0.5),
                   dict(temperature=1.0, min_p=0.1), dict(temperature=1.0, top_k=5)]:
        out = mm.generate(model, _prompt(), 30, generator=torch.Generator().manual_seed(0), **kwargs)
        assert out.max() < 45, kwargs


def test_sampling_is_reproducible_with_a_generator():
    model = _model()
    a = mm.generate(model, _prompt(), 15, generator=torch.Generator().manual_seed(7))
    b = mm.generate(model, _prompt(), 15, generator=torch.Generator().manual_seed(7))
    c = mm.generate(model, _prompt(), 15, generator=torch.Generator().manual_seed(8))
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_eos_row_keeps_emitting_eos_while_others_continue():
    model = _model()
    ids = _prompt()
    greedy = mm.generate(model, ids, 10, temperature=0)
    eos = int(greedy[0, 7])  # row 0 emits this token at its 3rd new position
    out = mm.generate(model, ids, 10, temperature=0, eos_token_id=eos)
    first = (out[0, 5:] == eos).nonzero()[0, 0].item()
    assert (out[0, 5 + first:] == eos).all()
    if not (greedy[1, 5:] == eos).any():  # row 1 is unaffected by row 0 finishing
        assert torch.equal(out[1, :out.shape[1]], greedy[1, :out.shape[1]])


def test_streamer_receives_every_new_token():
    model = _model()
    seen = []
    out = mm.generate(model, _prompt(), 6, temperature=0, streamer=lambda t: seen.append(t.clone()))
    assert torch.equal(torch.stack(seen, 1), out[:, 5:])


def test_top_k_1_is_greedy_and_top_p_small_is_greedy():
    logits = torch.randn(4, 48, generator=torch.Generator().manual_seed(0))
    greedy = logits[:, :45].argmax(-1)
    g = torch.Generator().manual_seed(0)
    assert torch.equal(mm.sample_next_token(logits, 45, top_k=1, generator=g), greedy)
    assert torch.equal(mm.sample_next_token(logits, 45, top_p=1e-6, generator=g), greedy)
    assert torch.equal(mm.sample_next_token(logits, 45, min_p=0.999, generator=g), greedy)


def test_top_p_keeps_the_smallest_set_reaching_p():
    # probabilities 0.5, 0.3, 0.2 (by construction): top_p = 0.7 keeps {0, 1} and never draws 2.
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.2]])).repeat(2000, 1)
    draws = mm.sample_next_token(logits, 3, top_p=0.7, generator=torch.Generator().manual_seed(0))
    assert set(draws.tolist()) == {0, 1}
    frac0 = (draws == 0).float().mean().item()
    assert abs(frac0 - 0.5 / 0.8) < 0.04  # renormalized 0.625; 2000 draws have std ~0.011


def test_repetition_penalty_follows_its_definition():
    logits = torch.tensor([[2.0, -1.0, 0.5]])
    seen = torch.tensor([[0, 1]])
    # penalty 2: positive seen logit halved (2 -> 1), negative doubled (-1 -> -2), unseen kept (0.5)
    assert mm.sample_next_token(logits, 3, temperature=0, repetition_penalty=2.0, previous_ids=seen).item() == 0
    assert mm.sample_next_token(logits, 3, temperature=0, repetition_penalty=5.0, previous_ids=seen).item() == 2


@pytest.mark.parametrize("kwargs,match", [
    (dict(temperature=-0.1), "temperature must be a number >= 0"),
    (dict(top_k=-1), "top_k must be an int >= 0"),
    (dict(top_p=0.0), r"top_p must lie in \(0, 1\]"),
    (dict(top_p=1.5), r"top_p must lie in \(0, 1\]"),
    (dict(min_p=1.0), r"min_p must lie in \[0, 1\)"),
    (dict(repetition_penalty=0.0), "repetition_penalty must be > 0"),
    (dict(max_new_tokens=-1), "max_new_tokens must be an int >= 0"),
    (dict(eos_token_id=45), r"eos_token_id must be None or an int in \[0, 45\)"),
])
def test_bad_controls_raise(kwargs, match):
    args = dict(max_new_tokens=3)
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        mm.generate(_model(), _prompt(), **args)


def test_zero_new_tokens_returns_the_prompt():
    ids = _prompt()
    assert torch.equal(mm.generate(_model(), ids, 0), ids)


# ---- bad input (issue 9): the argument named, what was expected and what was given ------------

VOCAB = SMALL_VOCAB


@pytest.mark.parametrize("case, make, error, words", BAD_IDS, ids=[c[0] for c in BAD_IDS])
def test_generate_rejects_bad_ids(small_model, case, make, error, words):
    expect_error(lambda: mm.generate(small_model, make(), 3), error, *words)


@pytest.mark.parametrize("name, value, words", BAD_CONTROLS, ids=[f"{c[0]}={c[1]}" for c in BAD_CONTROLS])
def test_sampling_controls_out_of_range(small_model, name, value, words):
    expect_error(lambda: mm.generate(small_model, small_ids(), 2, **{name: value}), ValueError, *words)
    logits = torch.zeros(2, small_model.config.padded_vocab_size)
    expect_error(lambda: mm.sample_next_token(logits, VOCAB, **{name: value}), ValueError, *words)


def test_generate_rejects_bad_lengths_and_eos(small_model):
    expect_error(lambda: mm.generate(small_model, small_ids(), -1), ValueError, "max_new_tokens", ">= 0", "-1")
    expect_error(lambda: mm.generate(small_model, small_ids(), 2.0), ValueError, "max_new_tokens", "2.0")
    expect_error(lambda: mm.generate(small_model, small_ids(), 2, eos_token_id=VOCAB), ValueError, "eos_token_id", "50")
    expect_error(lambda: mm.generate("model", small_ids(), 2), TypeError, "model", "MambaLM", "str")
    assert torch.equal(mm.generate(small_model, small_ids(), 0), small_ids())  # zero new tokens: the prompt back


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


def test_generate_accepts_int32_prompts_with_a_repetition_penalty(small_model):
    """int32 ids pass validation, so the penalty's gather must not choke on them."""
    out = mm.generate(small_model, small_ids().int(), 3, temperature=0, repetition_penalty=1.3)
    assert out.shape == (2, 8)


# ---- defects found by the adversarial review (2026-11-29, fixed in ede8461) -------------------

@pytest.mark.parametrize("temperature", [0.0, 1.0])
def test_non_finite_logits_raise_instead_of_picking_token_0(temperature):
    """NaN logits: argmax silently picked token 0 and multinomial crashed; now a ValueError names the rows."""
    logits = torch.randn(2, 8)
    logits[1, 3] = float("nan")
    with pytest.raises(ValueError, match=r"NaN or inf in rows \[1\]"):
        mm.sample_next_token(logits, 8, temperature=temperature)


def test_generate_eos_and_lengths_accept_numpy_ints_and_reject_bools():
    model, ids = tiny_lm(), torch.tensor([[1, 2, 3]], dtype=torch.int32)
    with pytest.raises(ValueError, match="eos_token_id"):
        mm.generate(model, ids, 4, eos_token_id=True)
    out = mm.generate(model, ids, np.int64(4), temperature=0, eos_token_id=np.int64(2))
    assert out.shape == (1, 7) and out.dtype == torch.long
    same = mm.generate(model, ids, 0)
    assert same.dtype == torch.long and torch.equal(same, ids.long()) and same is not ids

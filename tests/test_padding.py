"""Padded batches: left padding with ``attention_mask`` gives each row what it gets alone.

Padding must not leak into the convolution or the state: every mixer skips padded steps (their
pre-convolution input becomes a zero placed before the cached inputs, their delta is 0 so
``A_bar = 1`` and ``B_bar = 0``). Also: top-p and min-p sampling for batches above one row,
never choosing a padded-vocabulary column. Guards of issue 9; the injected-bug tests are at the
end of each section.
"""

from __future__ import annotations

import importlib

import pytest
import torch

import minimamba_core as mm

mixer_mod = importlib.import_module("minimamba_core.mixer")
gen_mod = importlib.import_module("minimamba_core.generate")

VOCAB = 37  # padded to 40 rows: three padded-vocabulary columns
ATOL = 2e-5  # fp32; measured max |padded - alone| on logits: 5e-8 (docs/numerics.md)


def _model(seed: int = 0, dtype=torch.float32) -> mm.MambaLM:
    torch.manual_seed(seed)
    cfg = mm.MambaConfig(d_model=16, n_layer=2, vocab_size=VOCAB, d_state=8, d_conv=4)
    return mm.MambaLM(cfg).to(dtype).eval()


def _rows(lengths, seed: int = 1) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(0, VOCAB, (n,), generator=g) for n in lengths]


def _left_pad(rows, pad_id: int = 0, width: int | None = None):
    """``(ids (b, width), mask (b, width) bool)``, each row right-aligned."""
    width = width or max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros(len(rows), width, dtype=torch.bool)
    for i, r in enumerate(rows):
        if len(r):
            ids[i, width - len(r):] = r
            mask[i, width - len(r):] = True
    return ids, mask


def _check_rows_match(model, lengths, pad_id: int = 5) -> None:
    """Batched left-padded forward == each row alone: logits and every cached state."""
    rows = _rows(lengths)
    ids, mask = _left_pad(rows, pad_id)
    cache = model.empty_cache(len(rows))
    with torch.no_grad():
        logits = model(ids, cache=cache, attention_mask=mask)
        for i, r in enumerate(rows):
            alone_cache = model.empty_cache(1)
            alone = model(r[None], cache=alone_cache)[0]  # (len, V)
            torch.testing.assert_close(logits[i, ids.shape[1] - len(r):], alone, atol=ATOL, rtol=0,
                                       msg=lambda m, i=i: f"row {i} logits differ from the row alone: {m}")
            for layer in range(model.config.n_layer):
                torch.testing.assert_close(cache.conv_states[layer][i], alone_cache.conv_states[layer][0],
                                           atol=1e-6, rtol=0, msg=f"row {i} conv_state, layer {layer}")
                torch.testing.assert_close(cache.ssm_states[layer][i], alone_cache.ssm_states[layer][0],
                                           atol=1e-6, rtol=0, msg=f"row {i} ssm_state, layer {layer}")


@pytest.mark.parametrize("lengths", [[9, 4, 1], [20, 3, 17, 2], [5, 5]])
def test_left_padded_forward_matches_rows_alone(lengths):
    """Rows shorter and longer than d_conv = 4 and than a parallel-scan chunk (16 steps)."""
    _check_rows_match(_model(), lengths)


def test_padding_values_do_not_matter():
    """Whatever id fills the padding, the real positions' logits are bit-for-bit the same."""
    model = _model()
    rows = _rows([7, 2, 5])
    outs = []
    with torch.no_grad():
        for pad_id in (0, 3, VOCAB - 1):
            ids, mask = _left_pad(rows, pad_id)
            outs.append(model(ids, attention_mask=mask).masked_fill(~mask[..., None], 0.0))
    assert torch.equal(outs[0], outs[1]) and torch.equal(outs[0], outs[2])


def test_mask_as_integers_equals_mask_as_bool():
    model = _model()
    ids, mask = _left_pad(_rows([6, 3]))
    with torch.no_grad():
        a = model(ids, attention_mask=mask)
        b = model(ids, attention_mask=mask.long())
        c = model(ids, attention_mask=torch.ones_like(mask))
        d = model(ids)
    assert torch.equal(a, b)
    assert torch.allclose(c, d, atol=1e-6, rtol=0)  # an all-ones mask = no mask


def test_left_padded_continuation_with_cache_matches_rows_alone():
    """Prefill and continuation both left-padded (so row 1 has padding in mid-sequence)."""
    model = _model()
    first, second = _rows([3, 6, 1], seed=2), _rows([5, 2, 4], seed=3)
    ids1, mask1 = _left_pad(first, pad_id=7)
    ids2, mask2 = _left_pad(second, pad_id=7)
    cache = model.empty_cache(3)
    with torch.no_grad():
        model(ids1, cache=cache, attention_mask=mask1)
        logits2 = model(ids2, cache=cache, attention_mask=mask2)
        for i in range(3):
            whole = torch.cat([first[i], second[i]])[None]
            alone_cache = model.empty_cache(1)
            alone = model(whole, cache=alone_cache)[0, len(first[i]):]
            torch.testing.assert_close(logits2[i, ids2.shape[1] - len(second[i]):], alone, atol=ATOL, rtol=0)
            for layer in range(model.config.n_layer):
                assert torch.allclose(cache.ssm_states[layer][i], alone_cache.ssm_states[layer][0], atol=1e-6)
                assert torch.allclose(cache.conv_states[layer][i], alone_cache.conv_states[layer][0], atol=1e-6)
        # and decoding goes on identically from there
        step_ids = torch.tensor([[4], [9], [11]])
        batched = model.step(step_ids, cache)[:, 0]
        for i in range(3):
            whole = torch.cat([first[i], second[i], step_ids[i]])[None]
            torch.testing.assert_close(batched[i], model(whole)[0, -1], atol=ATOL, rtol=0)


def test_all_padding_row_leaves_its_states_untouched():
    model = _model()
    cache = model.empty_cache(2)
    with torch.no_grad():
        model(_left_pad(_rows([4, 6]))[0], cache=cache)
        before = [t.clone() for t in cache.conv_states + cache.ssm_states]
        ids = torch.randint(0, VOCAB, (2, 5), generator=torch.Generator().manual_seed(4))
        mask = torch.tensor([[0] * 5, [1] * 5], dtype=torch.bool)
        model(ids, cache=cache, attention_mask=mask)
    for old, new in zip(before, cache.conv_states + cache.ssm_states):
        assert torch.equal(old[0], new[0])  # row 0 saw only padding: exactly unchanged
        assert not torch.equal(old[1], new[1])


def test_padded_training_gradients_match_rows_alone():
    """The mask is differentiable: per-row losses give the same gradients batched or alone."""
    model = _model().train()
    rows = _rows([8, 3])
    ids, mask = _left_pad(rows)
    logits = model(ids, attention_mask=mask)
    loss = sum(logits[i, ids.shape[1] - len(r):].logsumexp(-1).sum() for i, r in enumerate(rows))
    grads = torch.autograd.grad(loss, list(model.parameters()))
    loss_alone = sum(model(r[None])[0].logsumexp(-1).sum() for r in rows)
    grads_alone = torch.autograd.grad(loss_alone, list(model.parameters()))
    for g, g_alone in zip(grads, grads_alone):
        torch.testing.assert_close(g, g_alone, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("repetition_penalty", [1.0, 1.5])
def test_generate_with_attention_mask_matches_rows_alone(repetition_penalty):
    """Greedy tokens per row equal the row's own generation; padding never gets penalized."""
    model = _model(seed=3)
    rows = _rows([6, 2, 9], seed=5)
    ids, mask = _left_pad(rows, pad_id=int(rows[0][0]))  # a pad id that row 0 also uses
    out = mm.generate(model, ids, 12, temperature=0, repetition_penalty=repetition_penalty,
                      attention_mask=mask)
    assert out.shape == (3, ids.shape[1] + 12)
    assert torch.equal(out[:, :ids.shape[1]], ids)  # the prompt, padding included, is kept
    for i, r in enumerate(rows):
        alone = mm.generate(model, r[None], 12, temperature=0, repetition_penalty=repetition_penalty)
        assert torch.equal(out[i, ids.shape[1]:], alone[0, len(r):]), f"row {i}"


def test_bf16_generate_with_attention_mask_matches_rows_alone():
    model = _model(seed=3, dtype=torch.bfloat16)
    rows = _rows([6, 2], seed=6)
    ids, mask = _left_pad(rows)
    out = mm.generate(model, ids, 8, temperature=0, attention_mask=mask)
    for i, r in enumerate(rows):
        alone = mm.generate(model, r[None], 8, temperature=0)
        assert torch.equal(out[i, ids.shape[1]:], alone[0, len(r):]), f"row {i}"


@pytest.mark.parametrize("mask, error, words", [
    (torch.tensor([[1, 1, 0], [1, 1, 1]]), ValueError, ["attention_mask", "left padding", "row 0"]),
    (torch.ones(2, 3), TypeError, ["attention_mask", "torch.float32"]),
    (torch.ones(2, 4, dtype=torch.long), ValueError, ["attention_mask", "(2, 3)", "(2, 4)"]),
    (torch.tensor([[0, 2, 1], [1, 1, 1]]), ValueError, ["attention_mask", "0 (padding) and 1", "2"]),
    ([[1, 1, 1], [1, 1, 1]], TypeError, ["attention_mask", "list"]),
])
def test_bad_attention_mask_is_rejected_with_a_clear_message(mask, error, words):
    model = _model()
    ids = torch.zeros(2, 3, dtype=torch.long)
    for call in (lambda: model(ids, attention_mask=mask),
                 lambda: mm.generate(model, ids, 2, temperature=0, attention_mask=mask)):
        with pytest.raises(error) as info:
            call()
        for w in words:
            assert w in str(info.value), (w, str(info.value))


def test_generate_rejects_an_all_padding_row():
    model = _model()
    mask = torch.tensor([[0, 0, 0], [0, 1, 1]], dtype=torch.bool)
    with pytest.raises(ValueError, match="attention_mask row 0 is all padding"):
        mm.generate(model, torch.zeros(2, 3, dtype=torch.long), 2, attention_mask=mask)


def test_padding_guard_fires_when_the_mask_is_ignored(monkeypatch):
    original = mixer_mod.MambaMixer.forward

    def ignore_mask(self, hidden, cache=None, attention_mask=None):
        return original(self, hidden, cache)
    monkeypatch.setattr(mixer_mod.MambaMixer, "forward", ignore_mask)
    with pytest.raises(AssertionError, match="row 1 logits differ"):
        _check_rows_match(_model(), [9, 4, 1])


def test_padding_guard_fires_when_padding_leaks_into_the_convolution(monkeypatch):
    """Only the state is protected (delta = 0), the padded inputs still reach the conv: the mixer
    runs without the mask, its ``ssm_inputs`` hook giving padded steps a delta that the softplus
    makes 0."""
    original = mixer_mod.MambaMixer.forward

    def conv_sees_padding(self, hidden, cache=None, attention_mask=None):
        if attention_mask is None:
            return original(self, hidden, cache)
        ssm_inputs = self.ssm_inputs

        def zero_delta_on_padding(x):
            delta, B, C = ssm_inputs(x)
            return delta.masked_fill(~attention_mask[:, :, None], -1e4), B, C  # softplus(-1e4 + bias) = 0
        self.ssm_inputs = zero_delta_on_padding  # this call only
        try:
            return original(self, hidden, cache)
        finally:
            del self.ssm_inputs
    monkeypatch.setattr(mixer_mod.MambaMixer, "forward", conv_sees_padding)
    with pytest.raises(AssertionError, match="row 1 logits differ"):
        _check_rows_match(_model(), [9, 4, 1])


# ----------------------------------------------------------------------------------------------
# top-p and min-p for several rows, padded vocabulary never chosen
# ----------------------------------------------------------------------------------------------

V_REAL, V_PADDED = 5, 8
# Two rows with different distributions over the 5 real tokens (chosen by hand so the kept sets
# differ per row); the 3 padded columns get a huge logit that must never matter.
PROBS = torch.tensor([[0.30, 0.25, 0.20, 0.15, 0.10],
                      [0.03, 0.07, 0.15, 0.25, 0.50]])
DRAWS = 3000


def _support(**controls) -> list[set[int]]:
    """Sample every row ``DRAWS`` times with ``gen_mod.sample_next_token``; the set drawn per row."""
    logits = torch.full((2, V_PADDED), 50.0)
    logits[:, :V_REAL] = PROBS.log()
    batch = logits.repeat_interleave(DRAWS, dim=0)  # (2 * DRAWS, V_PADDED)
    g = torch.Generator().manual_seed(0)
    ids = gen_mod.sample_next_token(batch, V_REAL, generator=g, **controls).view(2, DRAWS)
    return [set(row.tolist()) for row in ids]


@pytest.mark.parametrize("controls, expected", [
    # top-p 0.7: row 0 keeps 0.30+0.25 (0.55 < 0.7) and 0.20 (mass before it 0.55 < 0.7);
    # row 1 keeps 0.50 and 0.25 (mass before the third, 0.75, reaches 0.7).
    (dict(top_p=0.7), [{0, 1, 2}, {4, 3}]),
    # min-p 0.4: thresholds 0.4 * 0.30 = 0.12 (row 0) and 0.4 * 0.50 = 0.20 (row 1).
    (dict(min_p=0.4), [{0, 1, 2, 3}, {4, 3}]),
    (dict(top_k=2), [{0, 1}, {4, 3}]),
    (dict(), [{0, 1, 2, 3, 4}, {0, 1, 2, 3, 4}]),
])
def test_top_p_and_min_p_per_row_never_padded_vocab(controls, expected):
    assert _support(**controls) == expected


def test_sampled_frequencies_follow_the_renormalized_kept_probabilities():
    logits = torch.full((2, V_PADDED), 50.0)
    logits[:, :V_REAL] = PROBS.log()
    ids = mm.sample_next_token(logits.repeat_interleave(DRAWS, 0), V_REAL, top_p=0.7,
                               generator=torch.Generator().manual_seed(1)).view(2, DRAWS)
    freq = torch.stack([torch.bincount(r, minlength=V_REAL).float() / DRAWS for r in ids])
    kept = torch.tensor([[0.30, 0.25, 0.20, 0, 0], [0, 0, 0, 0.25, 0.50]])
    expected = kept / kept.sum(-1, keepdim=True)
    assert torch.allclose(freq, expected, atol=0.04)  # 4 sigma of a binomial at n = 3000 is 0.036


def test_sampling_guard_fires_when_padded_vocab_is_not_dropped(monkeypatch):
    original = gen_mod.sample_next_token

    def keeps_padded_columns(logits, vocab_size, **kw):  # the bug: sampling over V_padded
        return original(logits, logits.shape[1], **kw)
    monkeypatch.setattr(gen_mod, "sample_next_token", keeps_padded_columns)
    assert _support(top_p=0.7) != [{0, 1, 2}, {4, 3}]
    assert max(max(s) for s in _support(top_p=0.7)) >= V_REAL

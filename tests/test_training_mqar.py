"""MQAR, multi-query associative recall (``minimamba_core/training/mqar.py``; Arora et al. 2023, "Zoology"):
every query's answer is the value bound to its key, keys are distinct, the query slots follow the
power law, a seed fixes the batch, bad parameters are named; and the one training loop trains a
tiny Transformer and a hybrid on it."""

import pytest
import torch
from helpers import expect_error

import minimamba_core as mm
from minimamba_core.training import IGNORE_INDEX, evaluate, make_batch, mqar, train


def _batch(seed=0, **kw):
    kw = {**dict(batch_size=64, input_seq_len=64, num_kv_pairs=8, vocab_size=256), **kw}
    return mqar(**kw, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("kw", [dict(), dict(random_non_queries=False), dict(power_a=1.0, num_kv_pairs=16)],
                         ids=["noise", "zeros", "uniform_full"])
def test_every_answer_is_the_value_bound_to_its_key(kw):
    inputs, targets = _batch(**kw)
    k, V = kw.get("num_kv_pairs", 8), 256
    assert inputs.shape == targets.shape == (64, 64) and inputs.dtype == targets.dtype == torch.long
    for row in range(64):
        keys, values = inputs[row, 0:2 * k:2].tolist(), inputs[row, 1:2 * k:2].tolist()
        assert len(set(keys)) == k and len(set(values)) == k  # distinct within the sequence
        assert all(1 <= key < V // 2 for key in keys) and all(V // 2 <= v < V for v in values)
        bound = dict(zip(keys, values))
        scored = (targets[row] != IGNORE_INDEX).nonzero().flatten().tolist()
        assert len(scored) == k and all(p >= 2 * k and (p - 2 * k) % 2 == 0 for p in scored)
        assert sorted(inputs[row, scored].tolist()) == sorted(keys)  # each key asked exactly once
        assert all(targets[row, p].item() == bound[inputs[row, p].item()] for p in scored)
    if kw.get("random_non_queries") is False:  # Zoology's layout with zeros: pairs, then keys in slots
        free = targets == IGNORE_INDEX
        free[:, :2 * k] = False
        assert (inputs[free] == 0).all()


def test_a_seed_fixes_the_batch():
    a, b = _batch(seed=3), _batch(seed=3)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[0], _batch(seed=4)[0])
    by_name = make_batch("mqar", 64, 64, vocab_size=256, n_tokens=8, generator=torch.Generator().manual_seed(3))
    assert torch.equal(by_name[0], a[0]) and torch.equal(by_name[1], a[1])


def test_query_slots_follow_the_power_law():
    # one pair, 4 slots (sequence 10 = 2 + 2 * 4): slot j (1-based) has probability j**(a-1) / sum
    a = 0.01
    weight = torch.tensor([j ** (a - 1) for j in range(1, 5)], dtype=torch.float64)
    expected = weight / weight.sum()  # about 0.48, 0.24, 0.16, 0.12
    inputs, targets = mqar(20000, 10, 1, vocab_size=16, power_a=a, generator=torch.Generator().manual_seed(0))
    slot = ((targets != IGNORE_INDEX).nonzero()[:, 1] - 2) // 2  # (20000,)
    freq = torch.bincount(slot, minlength=4).double() / 20000
    assert (freq - expected).abs().max() < 0.015  # 4 standard errors of a count of 20000
    uniform = mqar(20000, 10, 1, vocab_size=16, power_a=1.0, generator=torch.Generator().manual_seed(0))[1]
    freq = torch.bincount(((uniform != IGNORE_INDEX).nonzero()[:, 1] - 2) // 2, minlength=4).double() / 20000
    assert (freq - 0.25).abs().max() < 0.015


@pytest.mark.parametrize("kw, words", [
    (dict(input_seq_len=31), ["input_seq_len=31", "4 * num_kv_pairs = 32"]),
    (dict(vocab_size=16), ["vocab_size=16", "7 key tokens", "num_kv_pairs=8"]),
    (dict(num_kv_pairs=0), ["num_kv_pairs", ">= 1", "0"]),
    (dict(batch_size=2.0), ["batch_size", "2.0"]),
    (dict(power_a=0), ["power_a", "positive", "0"]),
    (dict(power_a=True), ["power_a", "True"]),
], ids=["too_short", "too_few_keys", "no_pairs", "float_batch", "zero_power", "bool_power"])
def test_bad_parameters_raise_clear_errors(kw, words):
    expect_error(lambda: _batch(**kw), ValueError, *words)


def _model(**kw):
    torch.manual_seed(0)
    return mm.MambaLM(mm.MambaConfig(**{**dict(d_model=32, n_layer=2, vocab_size=64, d_state=8,
                                               pad_vocab_size_multiple=1), **kw}))


@pytest.mark.parametrize("kw", [
    dict(attn_layer_idx=[0, 1], d_intermediate=64, attn_cfg={"num_heads": 2, "rotary_emb_dim": 16}),
    dict(attn_layer_idx=[1], attn_cfg={"num_heads": 2, "max_position_embeddings": 32}),
], ids=["transformer", "hybrid"])
def test_the_one_training_loop_trains_on_mqar(kw):
    model = _model(**kw)
    before = [p.detach().clone() for p in model.parameters()]
    g = torch.Generator().manual_seed(0)
    hist = train(model, lambda step: mqar(8, 32, 4, vocab_size=64, generator=g), steps=3, lr=3e-3, progress=False)
    assert len(hist.train_loss) == 3 and all(torch.isfinite(torch.tensor(hist.train_loss)))
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters()))
    x, y = mqar(4, 32, 4, vocab_size=64, generator=torch.Generator().manual_seed(1))
    whole, pieces = evaluate(model, x, y), evaluate(model, x, y, chunk_len=7)  # pieces: through the cache
    assert abs(whole["loss"] - pieces["loss"]) < 1e-4 and whole["tokens"] == 16

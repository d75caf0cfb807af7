"""The training loop (``minimamba_core/training/loop.py``): loss, learning-rate schedule,
parameter groups, evaluation, ``train``, and the shipped Tiny Shakespeare model it trained."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

import minimamba_core as mm
from helpers import tiny_lm as review_lm
from minimamba_core.training import data as D
from minimamba_core.training.loop import (IGNORE_INDEX, evaluate, lm_loss, lr_at, param_groups, steps_for_budget,
                                          train)

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = ROOT / "models" / "shakespeare"


def tiny_lm(vocab_size=11, d_model=16, n_layer=2, seed=0, pad=8):
    torch.manual_seed(seed)
    return mm.MambaLM(mm.MambaConfig(d_model=d_model, n_layer=n_layer, vocab_size=vocab_size,
                                     pad_vocab_size_multiple=pad))


# ---- loss, schedule, parameter groups ------------------------------------------------------

def test_lm_loss_drops_padded_columns_and_ignored_targets():
    torch.manual_seed(0)
    logits = torch.randn(2, 5, 16)  # 11 real tokens, 5 padded columns
    logits[..., 11:] = 50.0  # padded columns would dominate if they were kept
    targets = torch.randint(0, 11, (2, 5))
    targets[0, :2] = IGNORE_INDEX
    keep = targets != IGNORE_INDEX
    logp = torch.log_softmax(logits[..., :11], -1)  # reference: log-softmax over real tokens only
    expected = -logp[keep].gather(-1, targets[keep][:, None]).mean()
    assert torch.allclose(lm_loss(logits, targets, 11), expected, atol=1e-6)
    with pytest.raises(ValueError, match="must agree"):
        lm_loss(logits, targets[:, :3], 11)


def test_lr_schedule_warmup_then_cosine_to_a_tenth():
    assert lr_at(0, 100, 1.0, 10) == pytest.approx(0.1)
    assert lr_at(9, 100, 1.0, 10) == pytest.approx(1.0)
    assert lr_at(10, 100, 1.0, 10) == pytest.approx(1.0)
    assert lr_at(55, 100, 1.0, 10) == pytest.approx(0.55)  # halfway through the cosine: 0.1 + 0.9 / 2
    assert lr_at(100, 100, 1.0, 10) == pytest.approx(0.1)
    values = [lr_at(s, 100, 1.0, 10) for s in range(10, 100)]
    assert all(a >= b for a, b in zip(values, values[1:]))


def test_param_groups_no_decay_on_A_log_D_norms_biases():
    model = tiny_lm()
    decay, no_decay = param_groups(model, 0.1)
    names = {id(p): n for n, p in model.named_parameters()}
    decayed = {names[id(p)].rsplit(".", 1)[-1] for p in decay["params"]}
    kept = {names[id(p)].rsplit(".", 1)[-1] for p in no_decay["params"]}
    assert decayed == {"weight"} and "A_log" in kept and "D" in kept and "bias" in kept
    assert all(p.dim() >= 2 for p in decay["params"])
    assert len(decay["params"]) + len(no_decay["params"]) == len(list(model.parameters()))
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0


# ---- evaluate and train --------------------------------------------------------------------

def test_evaluate_counts_only_scored_tokens_and_chunks_agree():
    model = tiny_lm().eval()
    torch.manual_seed(1)
    x = torch.randint(0, 11, (3, 40))
    y = torch.randint(0, 11, (3, 40))
    y[:, :30] = IGNORE_INDEX
    full = evaluate(model, x, y, batch_size=2)
    chunked = evaluate(model, x, y, batch_size=2, chunk_len=7)
    assert full["tokens"] == 30
    assert chunked["loss"] == pytest.approx(full["loss"], abs=1e-5)
    assert chunked["accuracy"] == full["accuracy"]
    with torch.no_grad():
        ref = lm_loss(model(x), y, 11).item()
    assert full["loss"] == pytest.approx(ref, abs=1e-5)
    assert not model.training


def repeating_batches(seed=0):
    """Sequences of a repeating pattern 0..5: any model with memory learns them fast."""
    g = torch.Generator().manual_seed(seed)

    def batch_fn(step):
        start = torch.randint(0, 6, (8, 1), generator=g)
        seq = (start + torch.arange(25)) % 6  # (8, 25)
        return seq[:, :-1], seq[:, 1:]
    return batch_fn


def test_train_learns_and_is_deterministic():
    losses = []
    for _ in range(2):
        model = tiny_lm(vocab_size=6, pad=1)
        hist = train(model, repeating_batches(), 40, lr=1e-2, warmup=5, progress=False,
                     eval_fn=lambda m: {"loss": 0.0}, eval_every=20)
        losses.append(hist.train_loss)
        assert len(hist.steps) == 40 and hist.eval_steps == [20, 40] and hist.seconds > 0
    assert losses[0] == losses[1]  # same seeds, same machine: bit for bit
    assert losses[0][0] > 1.5 and min(losses[0][-5:]) < 0.2  # ln 6 = 1.79 -> near zero


def test_train_stops_early_when_eval_says_so():
    model = tiny_lm(vocab_size=6, pad=1)
    hist = train(model, repeating_batches(), 100, progress=False, eval_every=10,
                 eval_fn=lambda m: {"loss": 0.0, "stop": True})
    assert len(hist.steps) == 10 and hist.eval_steps == [10]


def test_train_rejects_bad_steps_and_nonfinite_loss():
    model = tiny_lm()
    with pytest.raises(ValueError, match="steps must be a positive int"):
        train(model, repeating_batches(), 0, progress=False)
    with torch.no_grad():
        model.backbone.embedding.weight.fill_(float("nan"))
    with pytest.raises(ValueError, match="became nan at step 0"):
        train(model, repeating_batches(), 3, progress=False)


def test_steps_for_budget_leaves_the_model_alone():
    model = tiny_lm(vocab_size=6, pad=1)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    steps = steps_for_budget(model, repeating_batches(), seconds=60.0, probe=3)
    assert isinstance(steps, int) and steps >= 1
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_train_shakespeare_script_smoke(tmp_path):
    import importlib.util

    spec = importlib.util.spec_from_file_location("train_shakespeare", ROOT / "scripts" / "train_shakespeare.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    out = tmp_path / "tiny"
    report = script.main(["--preset", "smoke", "--steps", "3", "--eval-every", "2", "--out", str(out),
                          "--device", "cpu", "--no-progress"])
    assert report["steps_done"] == 3 and report["val_loss"] < math.log(65) + 0.1
    model = mm.load_pretrained(out)
    assert model.config.vocab_size == 65 and mm.load_tokenizer(out).get_vocab_size() == 65
    assert json.loads((tmp_path / "tiny_recipe.json").read_text())["recipe"]["steps"] == 3


# ---- the shipped model ----------------------------------------------------------------------

def test_shipped_shakespeare_model(split):
    """``models/shakespeare``: loads, its tokenizer is the corpus's, and its loss on a slice of the
    validation split is what the training run measured, below 1.6 nats."""
    text, vocab, _, val_ids = split
    model = mm.load_pretrained(SHIPPED)
    tok = mm.load_tokenizer(SHIPPED)
    recipe = json.loads((ROOT / "models" / "shakespeare_recipe.json").read_text())
    assert model.config.vocab_size == model.config.padded_vocab_size == 65
    assert tok.get_vocab() == mm.build_char_tokenizer(text).get_vocab()
    assert (SHIPPED / "model.safetensors").stat().st_size < 8_000_000  # a few MB
    assert recipe["val_loss"] <= 1.6  # whole validation split, measured by scripts/train_shakespeare.py
    x, y = D.contiguous_windows(val_ids, 256, max_windows=8)  # 2,048 characters
    loss = evaluate(model, x, y, batch_size=8)["loss"]
    # 1.3057: this slice's loss measured on the CPU (float32) when the model was added
    assert loss == pytest.approx(1.3057, abs=0.005)
    assert loss <= 1.6
    g = torch.Generator().manual_seed(0)
    out = mm.generate(model, vocab.encode("KING RICHARD III:\n")[None], 200, temperature=0.8, generator=g)
    sample = vocab.decode(out[0])
    words = sample.split()
    known = set(text.split())
    assert sum(w in known for w in words) / len(words) > 0.6, sample


# ---- defects found by the adversarial review (2026-11-29, fixed in ede8461): each test failed before its fix

def test_a_non_finite_loss_stops_training_before_the_weights_change():
    """``train`` checks the loss before stepping: a non-finite loss stops it with the weights of before."""
    model = review_lm()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        model.backbone.layers[0].mixer.out_proj.weight.fill_(float("inf"))  # the first loss is NaN
    broken = {k: v.clone() for k, v in model.state_dict().items()}
    batch = lambda step: (torch.randint(0, 9, (2, 8)), torch.randint(0, 9, (2, 8)))  # noqa: E731
    with pytest.raises(ValueError, match="weights are those before this step"):
        train(model, batch, 3, progress=False)
    after = model.state_dict()
    assert all(torch.equal(after[k], broken[k]) for k in broken) and len(before) == len(after)


def test_a_batch_without_scored_targets_is_named_as_such():
    """A batch with no scored target is named as such."""
    batch = lambda step: (torch.randint(0, 9, (2, 8)), torch.full((2, 8), IGNORE_INDEX))  # noqa: E731
    with pytest.raises(ValueError, match="no scored targets"):
        train(review_lm(), batch, 2, progress=False)


def test_out_of_range_targets_raise_a_value_error():
    """Targets are checked (range, integer dtype) before the loss is computed."""
    with pytest.raises(ValueError, match=r"targets must be token ids in \[0, 10\).*\[12\]"):
        lm_loss(torch.randn(1, 2, 16), torch.tensor([[3, 12]]), 10)
    with pytest.raises(TypeError, match="targets must be integer"):
        lm_loss(torch.randn(1, 2, 16), torch.tensor([[3.0, 1.0]]), 10)


@pytest.mark.parametrize("kwargs", [dict(chunk_len=0), dict(chunk_len=-1), dict(batch_size=0)])
def test_evaluate_rejects_non_positive_sizes(kwargs):
    """``evaluate``'s sizes are checked."""
    x = torch.randint(0, 9, (2, 8))
    with pytest.raises(ValueError, match=f"{next(iter(kwargs))} must be a positive int"):
        evaluate(review_lm(), x, x, **kwargs)

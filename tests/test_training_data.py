"""Character data (``minimamba_core/training/data.py``): Tiny Shakespeare, its vocabulary, the
90/10 split, windows and the n-gram baselines."""

from __future__ import annotations

import math

import pytest
import torch

import minimamba_core as mm
from minimamba_core.training import data as D


def test_split_is_contiguous_last_ten_percent(split):
    text, vocab, train_ids, val_ids = split
    assert vocab.vocab_size == 65
    assert len(train_ids) == 1_003_854 and len(val_ids) == 111_540  # int(0.9 * 1,115,394)
    assert vocab.decode(val_ids[-20:]) == text[-20:]
    assert vocab.decode(train_ids[-5:]) + vocab.decode(val_ids[:5]) == text[1_003_849:1_003_859]


def test_baselines_match_the_issue(split):
    # 2.48 and 3.35 nats per character: the numbers stated in issue 6 for this split
    _, vocab, train_ids, val_ids = split
    uni = D.unigram_nll(train_ids, val_ids, vocab.vocab_size)
    bi = D.bigram_nll(train_ids, val_ids, vocab.vocab_size)
    assert round(uni, 2) == 3.35 and round(bi, 2) == 2.48
    # independent check of the bigram on a toy text, by hand: "abab" + val "ab"
    tr, va = torch.tensor([0, 1, 0, 1]), torch.tensor([0, 1])
    # pairs a->b twice, b->a once; add-one over V=2: p(b|a) = (2+1)/(2+2) = 3/4
    assert D.bigram_nll(tr, va, 2) == pytest.approx(-math.log(3 / 4))
    assert D.unigram_nll(tr, va, 2) == pytest.approx(-math.log(3 / 6))  # (2+1)/(4+2) each


def test_char_vocab_round_trip_and_errors():
    vocab = D.CharVocab.from_text("hello world\n")
    assert vocab.chars == sorted(set("hello world\n"))
    ids = vocab.encode("world hello")
    assert ids.dtype == torch.long and vocab.decode(ids) == "world hello"
    with pytest.raises(ValueError, match="'z' is not in the vocabulary"):
        vocab.encode("zap")
    with pytest.raises(ValueError, match=r"ids must lie in \[0, 9\)"):
        vocab.decode([0, 9])
    with pytest.raises(ValueError, match="non-empty"):
        D.CharVocab.from_text("")


def test_char_vocab_agrees_with_the_tokenizer(split):
    text, vocab, _, _ = split
    tok = mm.build_char_tokenizer(text)
    snippet = text[10_000:12_000]
    assert tok.encode(snippet).ids == vocab.encode(snippet).tolist()


def test_windows():
    data = torch.arange(100)
    g = torch.Generator().manual_seed(0)
    x, y = D.random_windows(data, 4, 10, g)
    assert x.shape == y.shape == (4, 10) and torch.equal(y, x + 1)
    x, y = D.contiguous_windows(data, 10)
    assert x.shape == (9, 10) and torch.equal(x.flatten(), data[:90]) and torch.equal(y.flatten(), data[1:91])
    assert D.contiguous_windows(data, 10, max_windows=3)[0].shape == (3, 10)
    with pytest.raises(ValueError, match="fewer than seqlen"):
        D.random_windows(data, 2, 100)
    with pytest.raises(ValueError, match="val_fraction"):
        D.split_train_val(data, 1.5)


def test_load_text_names_a_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.txt"):
        D.load_text(tmp_path / "nope.txt")


def test_contiguous_windows_rejects_seqlen_0():
    """Adversarial review (2026-11-29, fixed in ede8461): the window size is checked."""
    with pytest.raises(ValueError, match="seqlen must be a positive int"):
        D.contiguous_windows(torch.arange(100), 0)

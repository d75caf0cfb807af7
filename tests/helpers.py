"""Helpers shared by several test files (imported as ``from helpers import ...``; pytest puts
``tests/`` on ``sys.path``, as for ``browser_harness``)."""

from __future__ import annotations

import math

import torch

import minimamba_core as mm


def expect_error(fn, error: type[Exception], *words: str) -> Exception:
    """Call ``fn``; it must raise ``error`` whose message contains every one of ``words``.

    The check of issue 9's guards: bad input at a public entry point gives an exception that
    names the argument, what was expected and what was given -- never a crash deep inside.
    """
    try:
        fn()
    except Exception as err:  # noqa: BLE001 - the type is the check
        assert isinstance(err, error), f"expected {error.__name__}, got {type(err).__name__}: {err}"
        missing = [w for w in words if w not in str(err)]
        assert not missing, f"message {str(err)!r} lacks {missing}"
        return err
    raise AssertionError(f"expected {error.__name__}, nothing was raised")


SMALL_VOCAB = 50  # the bad-input tests' model: 50 tokens, padded to 56 rows


def small_config(**kw) -> mm.MambaConfig:
    """The bad-input tests' config (``d_model`` 16, two layers, ``d_state`` 4), with changes."""
    return mm.MambaConfig(**{**dict(d_model=16, n_layer=2, vocab_size=SMALL_VOCAB, d_state=4), **kw})


def small_ids(b: int = 2, l: int = 5) -> torch.Tensor:
    """Seeded ids ``(b, l)`` for :func:`small_config`'s model."""
    return torch.randint(0, SMALL_VOCAB, (b, l), generator=torch.Generator().manual_seed(0))


def tiny_lm(vocab_size: int = 9, seed: int = 0, **kw) -> mm.MambaLM:
    """A one-layer ``MambaLM`` (``d_model`` 16, ``d_state`` 4) in eval mode: the review's model."""
    torch.manual_seed(seed)
    return mm.MambaLM(mm.MambaConfig(d_model=16, n_layer=1, vocab_size=vocab_size, d_state=4, **kw)).eval()


# Bad token ids for a model of vocab_size 50, SMALL_VOCAB (check_input_ids, the guard of MambaLM.forward/step
# and generate): (what is wrong, a maker of the ids, error, words the message must contain).
BAD_IDS = [
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

# Sampling controls out of range (check_sampling, the guard of generate, sample_next_token and
# the CLI): (name, value, words the ValueError must contain).
BAD_CONTROLS = [
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


def prefill_then_step(model, ids: torch.Tensor, k: int) -> torch.Tensor:
    """Logits ``(b, l, V)`` of a prefill over ``ids[:, :k]`` then one ``step`` per remaining token."""
    cache = model.allocate_inference_cache(ids.shape[0])
    outs = [model(ids[:, :k], cache=cache)] if k > 0 else []
    for t in range(k, ids.shape[1]):
        outs.append(model.step(ids[:, t:t + 1], cache))
    assert cache.seqlen_offset == ids.shape[1]
    return torch.cat(outs, dim=1)


COMPAT_SMALL = dict(d_model=32, n_layer=2, vocab_size=50, d_state=8)  # the compat tests' model


def compat_model(dtype=torch.float32, seed=0) -> mm.MambaLM:
    """``mm.Mamba`` (the MiniMamba 1.0.1 / mamba_ssm calling convention) of ``COMPAT_SMALL``, eval mode."""
    torch.manual_seed(seed)
    return mm.Mamba(config=mm.MambaConfig(**COMPAT_SMALL)).to(dtype).eval()

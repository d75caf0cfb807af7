"""Multi-query associative recall (MQAR), the recall task of Arora et al. 2023 ("Zoology", arXiv 2312.04927).

A sequence opens with ``num_kv_pairs`` key-value pairs ``k_1 v_1 k_2 v_2 ...``; every key then
comes back once, as a query, somewhere in the rest of the sequence, and the model must answer the
value bound to it. Attention solves it by looking the key up; a model with a fixed-size state
must have stored every pair (Zoology's Figure 2 varies the sequence length 64-512
and the pairs 4-64).

Layout, as Zoology's generator builds it (``multiquery_ar`` and ``_mqar`` in
``zoology/data/associative_recall.py``, HazyResearch/zoology commit 0123f0d; this code is our own):

* keys are drawn without repeats from ``1 .. V//2 - 1``, values without repeats from
  ``V//2 .. V-1``, ``V = vocab_size``;
* the ``L - 2 num_kv_pairs`` positions after the pairs form ``(L - 2 num_kv_pairs) // 2`` slots
  of two tokens; key ``i``'s query goes to the first token of slot ``g_i``, the slots drawn
  without repeats with probability proportional to ``j ** (power_a - 1)``, ``j = 1, 2, ...``
  (a power law: small ``power_a`` puts most queries soon after the pairs; ``power_a = 1`` is
  uniform);
* the target at a query's position is its value (the next token to predict), ``-100`` elsewhere;
* every other position is ``0``, or with ``random_non_queries`` a random token of ``0 .. V-1``
  (which may equal a key or a value: noise, as in Zoology).

Differences from Zoology's generator, none changing the distribution of a batch: one batch at a
time from a ``torch.Generator`` (Zoology draws fixed train and test sets with numpy's global
seed); the slots are drawn by ``torch.multinomial`` without replacement, sequential draws
renormalized as numpy's ``choice(replace=False, p=...)`` does; Zoology's asserts that
``input_seq_len`` is even and smaller than ``vocab_size`` are not needed here and not made.
"""

from __future__ import annotations

import torch

from .data import IGNORE_INDEX


def _check_int(name: str, value, low: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(f"{name} must be an int >= {low}, got {value!r}")


def mqar(batch_size: int, input_seq_len: int, num_kv_pairs: int, vocab_size: int = 8192, power_a: float = 0.01,
         random_non_queries: bool = True, generator: torch.Generator | None = None):
    """A batch of the MQAR task (Zoology's ``multiquery_ar`` parameters; see the module docstring).

    Args:
        batch_size: rows ``b``.
        input_seq_len: ``L``, the sequence length, ``>= 4 num_kv_pairs`` (Zoology's bound: room
            for every query).
        num_kv_pairs: ``k`` pairs, each queried once.
        vocab_size: ``V``; needs ``k <= V//2 - 1`` distinct keys. Zoology's default 8192.
        power_a: the power law of the query slots, ``> 0`` (Zoology's default 0.01).
        random_non_queries: fill the unused positions with random tokens instead of 0.
        generator: a seeded ``torch.Generator`` (on the CPU) for a reproducible batch.

    Returns:
        ``inputs, targets`` int64 ``(b, L)``: the targets are the values at the ``k`` query
        positions and ``-100`` elsewhere.

    Raises:
        ValueError: naming the parameter, for sizes that are not positive ints, too short a
        sequence, too small a vocabulary, a ``power_a`` that is not a positive number.
    """
    _check_int("batch_size", batch_size, 1)
    _check_int("num_kv_pairs", num_kv_pairs, 1)
    _check_int("input_seq_len", input_seq_len, 1)
    _check_int("vocab_size", vocab_size, 1)
    if input_seq_len < 4 * num_kv_pairs:
        raise ValueError(f"input_seq_len={input_seq_len} must be >= 4 * num_kv_pairs = {4 * num_kv_pairs}: "
                         f"the pairs take 2 tokens each, and each query a slot of 2")
    if num_kv_pairs > vocab_size // 2 - 1:
        raise ValueError(f"vocab_size={vocab_size} has {max(0, vocab_size // 2 - 1)} key tokens (1 .. V//2 - 1) "
                         f"for num_kv_pairs={num_kv_pairs} distinct keys; use vocab_size >= {2 * num_kv_pairs + 2}")
    if isinstance(power_a, bool) or not isinstance(power_a, (int, float)) or not power_a > 0:
        raise ValueError(f"power_a must be a positive number (1 is uniform), got {power_a!r}")
    b, L, k, half = batch_size, input_seq_len, num_kv_pairs, vocab_size // 2
    # k distinct keys and k distinct values per row: the first k of a random permutation
    keys = torch.rand(b, half - 1, generator=generator).argsort(dim=1)[:, :k] + 1  # (b, k) in 1 .. V//2-1
    values = torch.rand(b, vocab_size - half, generator=generator).argsort(dim=1)[:, :k] + half  # (b, k)
    context = 2 * k
    slots = (L - context) // 2
    weight = torch.arange(1, slots + 1, dtype=torch.float64) ** (power_a - 1)  # (slots,), the power law
    slot = torch.multinomial(weight.expand(b, -1), k, replacement=False, generator=generator)  # (b, k) distinct
    query_pos = context + 2 * slot  # (b, k)
    if random_non_queries:
        inputs = torch.randint(0, vocab_size, (b, L), generator=generator)  # (b, L) noise
    else:
        inputs = torch.zeros(b, L, dtype=torch.long)
    inputs[:, 0:context:2], inputs[:, 1:context:2] = keys, values  # k_1 v_1 k_2 v_2 ...
    inputs.scatter_(1, query_pos, keys)  # each key asked once
    targets = torch.full((b, L), IGNORE_INDEX, dtype=torch.long).scatter_(1, query_pos, values)
    return inputs, targets

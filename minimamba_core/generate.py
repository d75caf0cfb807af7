"""Autoregressive generation with the cache: prefill once, then constant work per token.

The sampling controls follow their usual definitions (temperature; top-k; top-p, "nucleus",
Holtzman et al. 2020; min-p, Nguyen et al. 2024; the repetition penalty of Keskar et al. 2019 as
Hugging Face applies it). Official counterpart: ``decode`` in ``mamba_ssm/utils/generation.py``
(state-spaces/mamba, commit 0cce0fa). Built in notebook ``10_checkpoints_and_generation``.
"""

from __future__ import annotations

import numbers
from typing import Callable

import torch

from .checks import check_attention_mask, check_input_ids, check_logits, check_sampling
from .model import MambaLM


def sample_next_token(logits: torch.Tensor, vocab_size: int, temperature: float = 1.0, top_k: int = 0,
                      top_p: float = 1.0, min_p: float = 0.0, repetition_penalty: float = 1.0,
                      previous_ids: torch.Tensor | None = None,
                      generator: torch.Generator | None = None) -> torch.Tensor:
    """Pick the next token of every row: ``logits (b, V_padded)`` -> ids ``(b,)`` (long).

    The padded columns ``>= vocab_size`` are dropped first, so they are never chosen. Then, in
    order: repetition penalty over ``previous_ids (b, t)`` (a seen token's logit is divided by
    the penalty when positive, multiplied when negative); greedy argmax when
    ``temperature == 0``; otherwise division by the temperature, top-k, top-p (smallest set
    whose probability reaches ``top_p``, always at least one token), min-p (drop tokens whose
    probability is below ``min_p`` times the largest) and a multinomial draw from ``generator``.

    Raises:
        TypeError: non-float ``logits``, non-integer ``previous_ids``.
        ValueError: a control outside its range (see :func:`generate`), ``logits`` not
            ``(b, V_padded >= vocab_size)`` or not finite, ``previous_ids`` for another batch size
            or out of range.
    """
    check_logits(logits, vocab_size, previous_ids)
    check_sampling(temperature, top_k, top_p, min_p, repetition_penalty)
    logits = logits[:, :vocab_size].float()  # (b, V), padded rows removed
    finite = torch.isfinite(logits).all(dim=-1)  # (b,)
    if not bool(finite.all()):  # argmax would silently pick token 0, multinomial crash
        rows = torch.nonzero(~finite).flatten().tolist()
        raise ValueError(f"logits hold NaN or inf in rows {rows[:5]}: the model's output is not "
                         f"finite (check its weights and dtype)")
    if repetition_penalty != 1.0 and previous_ids is not None and previous_ids.numel() > 0:
        previous_ids = previous_ids.long()  # gather and scatter index with int64
        seen = logits.gather(1, previous_ids)  # (b, t)
        seen = torch.where(seen > 0, seen / repetition_penalty, seen * repetition_penalty)
        logits = logits.scatter(1, previous_ids, seen)
    if temperature == 0:
        return logits.argmax(dim=-1)  # (b,)
    logits = logits / temperature
    if top_k > 0 and top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k, dim=-1).values[:, -1:]  # (b, 1)
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p < 1.0:
        sorted_logits, order = torch.sort(logits, dim=-1, descending=True)  # (b, V)
        probs = torch.softmax(sorted_logits, dim=-1)
        before = torch.cumsum(probs, dim=-1) - probs  # probability mass strictly above each token
        drop_sorted = before >= top_p  # the first token always has before == 0 and is kept
        drop = drop_sorted.scatter(1, order, drop_sorted)  # back to vocabulary order
        logits = logits.masked_fill(drop, float("-inf"))
    if min_p > 0.0:
        probs = torch.softmax(logits, dim=-1)  # (b, V)
        logits = logits.masked_fill(probs < min_p * probs.max(dim=-1, keepdim=True).values, float("-inf"))
    probs = torch.softmax(logits, dim=-1)  # (b, V)
    return torch.multinomial(probs, 1, generator=generator)[:, 0]  # (b,)


@torch.no_grad()
def generate(model: MambaLM, input_ids: torch.Tensor, max_new_tokens: int, temperature: float = 1.0,
             top_k: int = 0, top_p: float = 1.0, min_p: float = 0.0, repetition_penalty: float = 1.0,
             eos_token_id: int | None = None, generator: torch.Generator | None = None,
             streamer: Callable[[torch.Tensor], None] | None = None,
             attention_mask: torch.Tensor | None = None) -> torch.Tensor:
    """Continue each prompt by up to ``max_new_tokens`` tokens.

    Args:
        model: a :class:`MambaLM` (put it in ``eval()`` mode and on its device first).
        input_ids: prompts ``(b, l_prompt)``, integer ids on the model's device.
        max_new_tokens: number of tokens to add, ``>= 0``.
        temperature: ``0`` for greedy decoding, else the softmax temperature.
        top_k, top_p, min_p, repetition_penalty: see :func:`sample_next_token`.
        eos_token_id: an int (Python or numpy); when a row emits it, that row keeps emitting it while others go on;
            generation stops early once every row has emitted it.
        generator: a ``torch.Generator`` on the model's device, for reproducible sampling.
        streamer: called with each step's new ids ``(b,)`` as soon as they exist.
        attention_mask: ``(b, l_prompt)``, 0 on padding, for prompts of different lengths
            padded on the LEFT (see :meth:`MambaLM.forward`); each row then gets the tokens it
            gets alone (greedy) and the padding is never penalized by ``repetition_penalty``.
            Every row needs at least one real token. The returned ids keep the padding.

    Returns:
        ``(b, l_prompt + new)`` long ids, ``new <= max_new_tokens`` (fewer only after every row
        hit ``eos_token_id``).

    The prompt is consumed by one parallel forward (the prefill); every further token costs one
    :meth:`MambaLM.step`, whose work does not grow with the sequence.

    Raises:
        TypeError/ValueError: bad ``input_ids`` (as :meth:`MambaLM.forward`), a negative
        ``max_new_tokens``, a sampling control outside its range, ``eos_token_id`` out of range,
        a bad ``attention_mask`` (as :meth:`MambaLM.forward`) or one with an all-padding row.
    """
    if not isinstance(model, MambaLM):
        raise TypeError(f"model must be a MambaLM, got {type(model).__name__}")
    check_input_ids(input_ids, model.config.vocab_size)
    if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, numbers.Integral) or max_new_tokens < 0:
        raise ValueError(f"max_new_tokens must be an int >= 0, got {max_new_tokens!r}")
    check_sampling(temperature, top_k, top_p, min_p, repetition_penalty)
    vocab_size = model.config.vocab_size
    if eos_token_id is not None and (isinstance(eos_token_id, bool) or not isinstance(eos_token_id, numbers.Integral)
                                     or not 0 <= eos_token_id < vocab_size):
        raise ValueError(f"eos_token_id must be None or an int in [0, {vocab_size}), got {eos_token_id!r}")
    eos_token_id, max_new_tokens = (None if eos_token_id is None else int(eos_token_id)), int(max_new_tokens)
    seen_ids = None  # what the repetition penalty sees: ids with padding replaced
    if attention_mask is not None:
        keep = check_attention_mask(attention_mask, input_ids)  # (b, l) bool
        if not bool(keep[:, -1].all()):
            row = int((~keep[:, -1]).nonzero()[0, 0])
            raise ValueError(f"attention_mask row {row} is all padding; every prompt needs a token")
        first = input_ids.gather(1, keep.int().argmax(dim=1, keepdim=True))  # (b, 1) first real id
        seen_ids = torch.where(keep, input_ids, first)  # (b, l); a repeated id is penalized once
    if max_new_tokens == 0:
        return input_ids.long().clone()  # new long ids, as for max_new_tokens > 0
    cache = model.allocate_inference_cache(input_ids.shape[0])
    logits = model(input_ids, cache=cache, num_last_tokens=1,
                   attention_mask=attention_mask)[:, -1]  # (b, V_padded), the prefill
    ids = input_ids
    finished = torch.zeros(ids.shape[0], dtype=torch.bool, device=ids.device)  # (b,)
    for i in range(max_new_tokens):
        next_ids = sample_next_token(logits, vocab_size, temperature, top_k, top_p, min_p,
                                     repetition_penalty, generator=generator,
                                     previous_ids=ids if seen_ids is None else seen_ids)
        if eos_token_id is not None:
            next_ids = next_ids.masked_fill(finished, eos_token_id)  # (b,)
            finished = finished | (next_ids == eos_token_id)
        ids = torch.cat([ids, next_ids[:, None]], dim=1)  # (b, l + i + 1)
        if seen_ids is not None:
            seen_ids = torch.cat([seen_ids, next_ids[:, None]], dim=1)
        if streamer is not None:
            streamer(next_ids)
        if i + 1 == max_new_tokens or bool(finished.all()):
            break
        logits = model.step(next_ids[:, None], cache)[:, -1]  # (b, V_padded)
    return ids

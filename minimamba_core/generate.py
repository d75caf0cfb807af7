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

from .model import MambaLM


def _check_sampling(temperature, top_k, top_p, min_p, repetition_penalty) -> None:
    if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) or not temperature >= 0:
        raise ValueError(f"temperature must be a number >= 0 (0 means greedy), got {temperature!r}")
    if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 0:
        raise ValueError(f"top_k must be an int >= 0 (0 disables it), got {top_k!r}")
    if not isinstance(top_p, (int, float)) or not 0 < top_p <= 1:
        raise ValueError(f"top_p must lie in (0, 1] (1 disables it), got {top_p!r}")
    if not isinstance(min_p, (int, float)) or not 0 <= min_p < 1:
        raise ValueError(f"min_p must lie in [0, 1) (0 disables it), got {min_p!r}")
    if not isinstance(repetition_penalty, (int, float)) or not repetition_penalty > 0:
        raise ValueError(f"repetition_penalty must be > 0 (1 disables it), got {repetition_penalty!r}")


def _check_logits(logits, vocab_size, previous_ids) -> None:
    if not isinstance(logits, torch.Tensor) or not logits.is_floating_point():
        raise TypeError(f"logits must be a floating-point torch.Tensor (b, V_padded), got "
                        f"{getattr(logits, 'dtype', type(logits).__name__)}")
    if isinstance(vocab_size, bool) or not isinstance(vocab_size, int) or vocab_size < 1:
        raise ValueError(f"vocab_size must be a positive int, got {vocab_size!r}")
    if logits.dim() != 2 or logits.shape[0] == 0 or logits.shape[1] < vocab_size:
        raise ValueError(f"logits must have shape (b >= 1, V_padded >= vocab_size={vocab_size}), got "
                         f"{tuple(logits.shape)}; take the last position with logits[:, -1]")
    if previous_ids is not None:
        if (not isinstance(previous_ids, torch.Tensor) or previous_ids.is_floating_point()
                or previous_ids.is_complex() or previous_ids.dtype == torch.bool):
            raise TypeError(f"previous_ids must be an integer tensor (b, t) of token ids, got "
                            f"{getattr(previous_ids, 'dtype', type(previous_ids).__name__)}")
        if previous_ids.dim() != 2 or previous_ids.shape[0] != logits.shape[0]:
            raise ValueError(f"previous_ids must have shape (b={logits.shape[0]}, t), got {tuple(previous_ids.shape)}")
        if previous_ids.numel() and not 0 <= int(previous_ids.min()) <= int(previous_ids.max()) < vocab_size:
            raise ValueError(f"previous_ids must lie in [0, vocab_size={vocab_size}), got values in "
                             f"[{int(previous_ids.min())}, {int(previous_ids.max())}]")


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
    _check_logits(logits, vocab_size, previous_ids)
    _check_sampling(temperature, top_k, top_p, min_p, repetition_penalty)
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
    model._check_input_ids(input_ids)
    if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, numbers.Integral) or max_new_tokens < 0:
        raise ValueError(f"max_new_tokens must be an int >= 0, got {max_new_tokens!r}")
    _check_sampling(temperature, top_k, top_p, min_p, repetition_penalty)
    vocab_size = model.config.vocab_size
    if eos_token_id is not None and (isinstance(eos_token_id, bool) or not isinstance(eos_token_id, numbers.Integral)
                                     or not 0 <= eos_token_id < vocab_size):
        raise ValueError(f"eos_token_id must be None or an int in [0, {vocab_size}), got {eos_token_id!r}")
    eos_token_id, max_new_tokens = (None if eos_token_id is None else int(eos_token_id)), int(max_new_tokens)
    seen_ids = None  # what the repetition penalty sees: ids with padding replaced
    if attention_mask is not None:
        keep = model._check_attention_mask(attention_mask, input_ids)  # (b, l) bool
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


# ---------------------------------------------------------------------------------------------
# Command line: python -m minimamba_core --checkpoint DIR --prompt TEXT [...] (see __main__.py)
# ---------------------------------------------------------------------------------------------

class _TextStreamer:
    """A ``streamer`` for :func:`generate` (batch of one) that writes text as tokens arrive.

    Each call decodes all ids so far with the ``tokenizers.Tokenizer`` and writes only the new
    characters, so byte-level BPE pieces that form one character, or spaces that a decoder
    adds between words, come out right; it waits while the text ends in an incomplete
    UTF-8 character (decoded as U+FFFD).
    """

    def __init__(self, tokenizer, prompt_ids: list[int], out) -> None:
        self.tokenizer, self.ids, self.out = tokenizer, list(prompt_ids), out
        self.printed = tokenizer.decode(self.ids)
        out.write(self.printed)
        out.flush()

    def __call__(self, next_ids: torch.Tensor) -> None:
        self.ids.append(int(next_ids[0]))
        self._emit(final=False)

    def _emit(self, final: bool) -> None:
        text = self.tokenizer.decode(self.ids)
        if not final and text.endswith("\ufffd"):
            return
        from os.path import commonprefix

        common = len(commonprefix([text, self.printed]))  # all of printed, unless a decoder rewrote
        self.out.write(text[common:])  # earlier text (then the differing tail is written again)
        self.out.flush()
        self.printed = text

    def end(self) -> None:
        """Write what is still held back, and a final newline."""
        self._emit(final=True)
        self.out.write("\n")
        self.out.flush()


def main(argv: list[str] | None = None) -> None:
    """``python -m minimamba_core`` (or ``minimamba-generate``): load a checkpoint and stream a continuation.

    ``--checkpoint`` is a folder in the official or Hugging Face layout (or a Hub id); the text
    is tokenized with its ``tokenizer.json`` (or ``--tokenizer``). ``--temperature 0`` decodes
    greedily; ``--seed`` makes sampling reproducible. Errors exit with status 2 and a message.
    """
    import argparse
    import sys

    from .checkpoint import CheckpointError, load_pretrained
    from .devices import pick_device
    from .tokenizer import load_tokenizer

    parser = argparse.ArgumentParser(prog="python -m minimamba_core",
                                     description="Continue a prompt with a Mamba checkpoint, streaming the text.")
    parser.add_argument("--checkpoint", required=True,
                        help="checkpoint folder (official or Hugging Face layout) or a Hub id")
    parser.add_argument("--prompt", required=True, help="the text to continue")
    parser.add_argument("--max-new-tokens", type=int, default=64, help="tokens to add (default 64)")
    parser.add_argument("--temperature", type=float, default=1.0, help="0 for greedy (default 1.0)")
    parser.add_argument("--top-k", type=int, default=0, help="keep the k likeliest tokens (0: off)")
    parser.add_argument("--top-p", type=float, default=1.0, help="nucleus sampling mass (1.0: off)")
    parser.add_argument("--min-p", type=float, default=0.0, help="min-p filter (0: off)")
    parser.add_argument("--repetition-penalty", type=float, default=1.0,
                        help="divide (multiply) the logits of tokens already seen by this (1.0: off)")
    parser.add_argument("--seed", type=int, default=None, help="seed of the sampler")
    parser.add_argument("--device", default=None, help="cpu, cuda, mps, ... (default: the fastest found)")
    parser.add_argument("--dtype", choices=("float32", "bfloat16", "float16"), default="float32",
                        help="the weights' dtype (default float32)")
    parser.add_argument("--tokenizer", default=None,
                        help="tokenizer.json, or a folder holding it (default: the checkpoint's)")
    args = parser.parse_args(argv)
    try:
        _check_sampling(args.temperature, args.top_k, args.top_p, args.min_p, args.repetition_penalty)
        if args.max_new_tokens < 0:
            raise ValueError(f"--max-new-tokens must be >= 0, got {args.max_new_tokens}")
        device = torch.device(args.device) if args.device else pick_device()
        try:
            torch.empty(0, device=device)  # an unavailable device fails here, not mid-load
        except (RuntimeError, AssertionError) as err:
            raise ValueError(f"--device {device} is not available here ({err}); try --device cpu") from None
    except (ValueError, RuntimeError) as err:
        parser.error(str(err))
    try:
        tokenizer = load_tokenizer(args.tokenizer or args.checkpoint)
        model = load_pretrained(args.checkpoint, device=device, dtype=getattr(torch, args.dtype))
    except CheckpointError as err:
        parser.exit(2, f"error: {err}\n")
    try:
        prompt_ids = tokenizer.encode(args.prompt).ids
    except Exception as err:  # tokenizers raises a bare Exception, e.g. for an unknown character
        parser.exit(2, f"error: the tokenizer cannot encode --prompt ({err}); a character-level "
                       f"tokenizer knows only the characters of its training text\n")
    if not prompt_ids:
        parser.exit(2, "error: --prompt encodes to no tokens; give some text\n")
    if max(prompt_ids) >= model.config.vocab_size:
        parser.exit(2, f"error: the tokenizer gives id {max(prompt_ids)} but the model has only "
                       f"{model.config.vocab_size} tokens; pass the checkpoint's own tokenizer\n")
    generator = torch.Generator(device=device).manual_seed(args.seed) if args.seed is not None else None
    try:
        streamer = _TextStreamer(tokenizer, prompt_ids, sys.stdout)
        generate(model, torch.tensor([prompt_ids], device=device), args.max_new_tokens,
                 temperature=args.temperature, top_k=args.top_k, top_p=args.top_p, min_p=args.min_p,
                 repetition_penalty=args.repetition_penalty, generator=generator, streamer=streamer)
        streamer.end()
    except BrokenPipeError:  # the reader left (e.g. piped into head): stop quietly
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit
        sys.exit(0)


if __name__ == "__main__":
    main()

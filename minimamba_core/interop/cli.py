"""The command line: ``python -m minimamba_core --checkpoint DIR --prompt TEXT [...]``.

Loads a checkpoint (``checkpoint.py``), tokenizes the prompt (``tokenizer.py``) and streams what
:func:`minimamba_core.generate` produces. Also installed as the ``minimamba-generate`` command.
"""

from __future__ import annotations

import argparse
import os
import sys
from os.path import commonprefix

import torch

from ..checks import check_sampling
from ..devices import pick_device
from ..generate import generate
from .checkpoint import CheckpointError, load_pretrained
from .tokenizer import load_tokenizer



class TextStreamer:
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

    called = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else ""
    prog = "python -m minimamba_core" if called in ("", "__main__.py", "-c") else called
    parser = argparse.ArgumentParser(prog=prog,
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
        check_sampling(args.temperature, args.top_k, args.top_p, args.min_p, args.repetition_penalty)
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
        streamer = TextStreamer(tokenizer, prompt_ids, sys.stdout)
        generate(model, torch.tensor([prompt_ids], device=device), args.max_new_tokens,
                 temperature=args.temperature, top_k=args.top_k, top_p=args.top_p, min_p=args.min_p,
                 repetition_penalty=args.repetition_penalty, generator=generator, streamer=streamer)
        streamer.end()
    except BrokenPipeError:  # the reader left (e.g. piped into head): stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit
        sys.exit(0)


if __name__ == "__main__":
    main()

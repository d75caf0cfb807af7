"""Tokenizers: every checkpoint carries a ``tokenizer.json`` read by the ``tokenizers`` library.

Nothing here tokenizes by hand. A pretrained Mamba uses the GPT-NeoX-20B byte-level BPE
tokenizer (the ``tokenizer.json`` of ``state-spaces/mamba-130m-hf``); our small models use
a character-level tokenizer built by :func:`build_char_tokenizer`, a ``tokenizers``
``WordLevel`` model whose words are single characters. Both are saved the same way
(``Tokenizer.save``), so :func:`load_tokenizer` serves every checkpoint.
Built in notebook ``10_checkpoints_and_generation``.
"""

from __future__ import annotations

import os
from pathlib import Path

from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers

from .checkpoint import TOKENIZER_FILE, CheckpointError, resolve_checkpoint


def build_char_tokenizer(text: str, unk_token: str | None = None) -> Tokenizer:
    """A character-level tokenizer whose vocabulary is the distinct characters of ``text``.

    Ids are assigned in sorted character order (``sorted(set(text))``, the convention of
    char-level GPT tutorials), so ``"\\n"`` usually gets id 0. Every character, whitespace and
    newlines included, is one token, and decoding concatenates them: ``decode(encode(s).ids)
    == s`` for every ``s`` drawn from ``text``'s characters.

    Args:
        text: the training text (a non-empty ``str``).
        unk_token: when given, one extra token (last id) that stands for any character not in
            ``text``; when None, encoding an unknown character raises an error.

    Returns:
        A ``tokenizers.Tokenizer``; ``get_vocab_size()`` is the number of distinct characters
        (plus one with ``unk_token``). Save it with ``save_pretrained(..., tokenizer=tok)``.

    Raises:
        TypeError: ``text`` or ``unk_token`` is not a string.
        ValueError: ``text`` is empty, or ``unk_token`` is a character of ``text``.
    """
    if not isinstance(text, str):
        raise TypeError(f"text must be a str, got {type(text).__name__}")
    if not text:
        raise ValueError("text is empty; give the training text whose characters form the vocabulary")
    chars = sorted(set(text))
    vocab = {c: i for i, c in enumerate(chars)}
    if unk_token is not None:
        if not isinstance(unk_token, str) or not unk_token:
            raise TypeError(f"unk_token must be a non-empty str or None, got {unk_token!r}")
        if unk_token in vocab:
            raise ValueError(f"unk_token {unk_token!r} is a character of text; pick a string that is not")
        vocab[unk_token] = len(vocab)
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token=unk_token))
    tokenizer.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")  # one char each
    tokenizer.decoder = decoders.Fuse()  # join tokens with nothing between them
    return tokenizer


def load_tokenizer(path: str | os.PathLike) -> Tokenizer:
    """Read the ``tokenizer.json`` of a checkpoint folder (or of a Hub id, or the file itself).

    Args:
        path: a checkpoint folder, a ``tokenizer.json`` file, or a Hub id such as
            ``"state-spaces/mamba-130m-hf"`` (resolved as :func:`load_pretrained` does).

    Returns:
        A ``tokenizers.Tokenizer``.

    Raises:
        CheckpointError (a ``ValueError``): no such folder, no ``tokenizer.json`` in it (the
        official ``state-spaces/mamba-*`` folders ship none: the message says where to get
        one), or a file that ``tokenizers`` cannot read.
    """
    file = Path(path).expanduser()
    if not (file.is_file() and file.suffix == ".json"):
        file = resolve_checkpoint(path) / TOKENIZER_FILE
    if not file.is_file():
        raise CheckpointError(
            f"{file.parent} has no {TOKENIZER_FILE}. The official state-spaces/mamba-* folders ship "
            f"none: they use the GPT-NeoX-20B tokenizer, whose tokenizer.json is in "
            f"state-spaces/mamba-130m-hf (or EleutherAI/gpt-neox-20b). Copy a tokenizer.json into the folder, "
            f"or pass its path (load_tokenizer(path), or --tokenizer on the command line); for a model of "
            f"your own, save its tokenizer with save_pretrained(..., tokenizer=tok)")
    try:
        return Tokenizer.from_file(str(file))
    except Exception as err:  # tokenizers raises a bare Exception for a bad file
        raise CheckpointError(f"{file} is not a tokenizers file ({str(err).strip()[:200]}); it is "
                              f"truncated or was written by something else: save it again with "
                              f"Tokenizer.save") from None

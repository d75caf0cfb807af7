"""Character-level text data: Tiny Shakespeare, its vocabulary, the 90/10 split, batches, baselines.

The corpus is Karpathy's ``tinyshakespeare/input.txt`` (1,115,394 characters, public domain),
shipped in the repository as ``data/tinyshakespeare.txt`` and found relative to this package,
so nothing depends on the current directory. The split is contiguous: the first 90% of the
characters train, the last 10% validate (as in nanoGPT's ``shakespeare_char``), so validation
text is unseen prose, not shuffled neighbours of training windows.

Baselines on that split (count-based models fitted on the training part, scored on the
validation part, add-one smoothing): unigram 3.35 nats per character, bigram 2.48. Any model
worth its name must beat the bigram. Used by notebook ``08_tiny_shakespeare`` and
``scripts/train_shakespeare.py``.
"""

from __future__ import annotations

from pathlib import Path

import torch

DATA_DIR = Path(__file__).resolve().parents[2] / "data"
TINY_SHAKESPEARE = DATA_DIR / "tinyshakespeare.txt"
TINY_SHAKESPEARE_CHARS = 1_115_394  # len(input.txt) of karpathy/char-rnn's tinyshakespeare
VAL_FRACTION = 0.1
IGNORE_INDEX = -100  # target value of positions that are not scored (torch's default)


def load_text(path: str | Path | None = None) -> str:
    """The text of ``path`` (default: the shipped Tiny Shakespeare), read as UTF-8.

    Raises:
        FileNotFoundError: naming the path, when it does not exist.
    """
    path = Path(path) if path is not None else TINY_SHAKESPEARE
    if not path.is_file():
        raise FileNotFoundError(f"text file not found: {path} (Tiny Shakespeare ships in the "
                                f"repository's data/ folder; run from a full clone)")
    return path.read_text(encoding="utf-8")


class CharVocab:
    """A character vocabulary: the sorted distinct characters of a text, id = rank.

    ``encode(str) -> LongTensor (l,)`` and ``decode(ids) -> str``. The same mapping is written
    as a ``tokenizers`` WordLevel ``tokenizer.json`` by :mod:`minimamba_core.interop.checkpoint`.

    Raises:
        ValueError: an empty text; encoding a character outside the vocabulary (named);
            decoding an id outside ``[0, vocab_size)``.
    """

    def __init__(self, chars: list[str] | str) -> None:
        chars = list(chars)
        if not chars:
            raise ValueError("CharVocab needs at least one character, got an empty list")
        if len(set(chars)) != len(chars) or any(len(c) != 1 for c in chars):
            raise ValueError("CharVocab chars must be distinct single characters")
        self.chars = chars
        self.stoi = {c: i for i, c in enumerate(chars)}

    @classmethod
    def from_text(cls, text: str) -> "CharVocab":
        """The vocabulary of every character that occurs in ``text``, sorted by code point."""
        if not text:
            raise ValueError("CharVocab.from_text needs a non-empty text")
        return cls(sorted(set(text)))

    @property
    def vocab_size(self) -> int:
        return len(self.chars)

    def encode(self, text: str) -> torch.Tensor:
        """``text`` -> ids ``(len(text),)`` int64."""
        try:
            return torch.tensor([self.stoi[c] for c in text], dtype=torch.long)
        except KeyError as err:
            raise ValueError(f"character {err.args[0]!r} is not in the vocabulary") from None

    def decode(self, ids) -> str:
        """ids (any int sequence or 1-D tensor) -> text."""
        ids = ids.tolist() if isinstance(ids, torch.Tensor) else list(ids)
        bad = [i for i in ids if not 0 <= i < len(self.chars)]
        if bad:
            raise ValueError(f"ids must lie in [0, {len(self.chars)}), got {bad[:5]}")
        return "".join(self.chars[i] for i in ids)


def split_train_val(ids: torch.Tensor, val_fraction: float = VAL_FRACTION):
    """Contiguous split: ``ids[:n]`` trains, ``ids[n:]`` validates, ``n = int(len * (1 - val_fraction))``.

    Raises:
        ValueError: ``val_fraction`` outside ``(0, 1)`` or a split with an empty part.
    """
    if not 0 < val_fraction < 1:
        raise ValueError(f"val_fraction must lie in (0, 1), got {val_fraction!r}")
    n = int(len(ids) * (1 - val_fraction))
    if n == 0 or n == len(ids):
        raise ValueError(f"cannot split {len(ids)} ids with val_fraction={val_fraction}")
    return ids[:n], ids[n:]


def random_windows(data: torch.Tensor, batch_size: int, seqlen: int,
                   generator: torch.Generator | None = None):
    """A batch of random windows for next-token prediction: ``x, y (batch_size, seqlen)``, ``y = x`` shifted by one.

    Raises:
        ValueError: ``data`` shorter than ``seqlen + 1``, non-positive sizes.
    """
    if batch_size <= 0 or seqlen <= 0:
        raise ValueError(f"batch_size and seqlen must be positive, got {batch_size}, {seqlen}")
    if len(data) < seqlen + 1:
        raise ValueError(f"data has {len(data)} ids, fewer than seqlen + 1 = {seqlen + 1}")
    starts = torch.randint(0, len(data) - seqlen, (batch_size,), generator=generator)  # (b,)
    idx = starts[:, None] + torch.arange(seqlen + 1)  # (b, seqlen + 1)
    chunk = data[idx]
    return chunk[:, :-1], chunk[:, 1:]


def contiguous_windows(data: torch.Tensor, seqlen: int, max_windows: int | None = None):
    """Non-overlapping windows covering ``data`` from its start: ``x, y (n_windows, seqlen)``.

    The deterministic evaluation set: every position of the covered part is predicted once.
    ``max_windows`` keeps only the first ones (a slice of the split).
    """
    if isinstance(seqlen, bool) or not isinstance(seqlen, int) or seqlen < 1:
        raise ValueError(f"seqlen must be a positive int, got {seqlen!r}")
    n = (len(data) - 1) // seqlen
    if max_windows is not None:
        n = min(n, max_windows)
    if n <= 0:
        raise ValueError(f"data has {len(data)} ids, too few for one window of {seqlen}")
    x = data[: n * seqlen].view(n, seqlen)  # (n, seqlen)
    y = data[1: n * seqlen + 1].view(n, seqlen)
    return x, y


def unigram_nll(train: torch.Tensor, val: torch.Tensor, vocab_size: int, alpha: float = 1.0) -> float:
    """Validation cross-entropy (nats per token) of the add-``alpha`` unigram fitted on ``train``."""
    counts = torch.bincount(train, minlength=vocab_size).double() + alpha  # (V,)
    logp = (counts / counts.sum()).log()
    return float(-logp[val].mean())


def bigram_nll(train: torch.Tensor, val: torch.Tensor, vocab_size: int, alpha: float = 1.0) -> float:
    """Validation cross-entropy (nats per token) of the add-``alpha`` bigram ``p(x_t | x_{t-1})``.

    Fitted on the consecutive pairs of ``train``, scored on the ``len(val) - 1`` pairs of ``val``.
    """
    counts = torch.full((vocab_size, vocab_size), float(alpha), dtype=torch.float64)  # (V, V)
    counts.index_put_((train[:-1], train[1:]), torch.ones(len(train) - 1, dtype=torch.float64),
                      accumulate=True)
    logp = (counts / counts.sum(1, keepdim=True)).log()  # rows: previous char
    return float(-logp[val[:-1], val[1:]].mean())

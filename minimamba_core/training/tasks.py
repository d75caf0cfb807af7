"""The paper's two synthetic tasks, and the LTI ablation that switches selection off.

Gu & Dao 2023, Section 4.1 and Appendix E.1 (Figure 2, Tables 1-2):

* **Selective Copying**: ``k`` data tokens scattered at random positions among noise tokens;
  after them, ``k`` marker tokens ask for the data tokens in order. Unlike the plain Copying
  task (fixed spacing, solvable by a time-invariant convolution), the random spacing needs a
  content-aware model: one that lets data tokens into its state and keeps noise out. The
  paper's setting: context 4096, vocabulary 16 (noise included), 16 data tokens, 2 layers,
  ``d_model = 64``; its layout follows the S4 repository's copying generator
  (``src/dataloaders/datasets/copying.py`` with ``variable=True``).
* **Induction Heads**: random tokens; a special trigger token appears once, followed by some
  token; the sequence ends with the trigger again and the model must answer the token that
  followed its first occurrence (associative recall of one pair; Olsson et al. 2022, H3).
  The paper trains at length 256, vocabulary 16, and tests at lengths up to ``2**20``.

Token layouts (our choice, stated once): selective copying uses ``0`` = noise,
``1 .. V-2`` = data, ``V-1`` = marker; induction heads uses ``0 .. V-2`` = ordinary tokens,
``V-1`` = trigger. Targets are ``-100`` (not scored) except at the answer positions.

**LTI ablation** (the paper's "S4" rows of Table 1): :class:`LTIMixer` is a
:class:`~minimamba_core.mixer.MambaMixer` whose ``delta, B, C`` are learned parameters, the same
at every time step and for every input, instead of projections of ``x``; everything else (the
convolution, the gate, ``A``, ``D``) is unchanged. It replaces ``ssm_inputs``, the mixer's one
hook for where ``delta, B, C`` come from. Built in notebook ``09_selection_tasks``.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

from ..config import MambaConfig
from ..mixer import MambaMixer
from ..model import MambaLM
from .data import IGNORE_INDEX

TASKS = ("selective_copying", "induction_heads")


def _check_positive(**values) -> None:
    for name, v in values.items():
        if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
            raise ValueError(f"{name} must be a positive int, got {v!r}")


def selective_copying(batch_size: int, seqlen: int, n_tokens: int, vocab_size: int = 16,
                      generator: torch.Generator | None = None):
    """A batch of the Selective Copying task.

    Args:
        batch_size: rows ``b``.
        seqlen: the context length ``L``: ``n_tokens`` data tokens and ``L - n_tokens`` noise.
        n_tokens: ``k``, the number of tokens to remember.
        vocab_size: ``V``; ``0`` noise, ``1..V-2`` data (drawn uniformly, repeats allowed),
            ``V-1`` the marker.
        generator: a seeded ``torch.Generator`` for reproducible batches.

    Returns:
        ``inputs, targets`` int64 ``(b, L + k)``: the context, then ``k`` markers; targets are
        the data tokens in order at the marker positions and ``-100`` elsewhere.

    Raises:
        ValueError: non-positive sizes, ``n_tokens > seqlen``, ``vocab_size < 3``.
    """
    _check_positive(batch_size=batch_size, seqlen=seqlen, n_tokens=n_tokens, vocab_size=vocab_size)
    if n_tokens > seqlen:
        raise ValueError(f"n_tokens ({n_tokens}) must be <= seqlen ({seqlen})")
    if vocab_size < 3:
        raise ValueError(f"vocab_size must be >= 3 (noise, marker, one data token), got {vocab_size}")
    b, L, k = batch_size, seqlen, n_tokens
    data = torch.randint(1, vocab_size - 1, (b, k), generator=generator)  # (b, k)
    # k distinct positions per row, in increasing order: the smallest k keys of a random permutation
    pos = torch.rand(b, L, generator=generator).argsort(dim=1)[:, :k].sort(dim=1).values  # (b, k)
    context = torch.zeros(b, L, dtype=torch.long).scatter_(1, pos, data)  # (b, L)
    markers = torch.full((b, k), vocab_size - 1, dtype=torch.long)  # (b, k)
    inputs = torch.cat([context, markers], dim=1)  # (b, L + k)
    targets = torch.full_like(inputs, IGNORE_INDEX)
    targets[:, L:] = data
    return inputs, targets


def induction_heads(batch_size: int, seqlen: int, vocab_size: int = 16,
                    generator: torch.Generator | None = None):
    """A batch of the Induction Heads task.

    Args:
        batch_size: rows ``b``.
        seqlen: ``l``, the whole sequence's length (the query included), at least 4.
        vocab_size: ``V``; ``0..V-2`` ordinary tokens, ``V-1`` the trigger.
        generator: a seeded ``torch.Generator``.

    Returns:
        ``inputs, targets`` int64 ``(b, l)``: ordinary tokens, the trigger once at a random
        position ``p`` in ``[0, l-3]`` followed by the answer ``inputs[:, p+1]``, and the
        trigger again at ``l-1``. ``targets`` is ``-100`` except at ``l-1``, where it is the answer.

    Raises:
        ValueError: non-positive sizes, ``seqlen < 4`` or ``vocab_size < 3``.
    """
    _check_positive(batch_size=batch_size, seqlen=seqlen, vocab_size=vocab_size)
    if seqlen < 4:
        raise ValueError(f"seqlen must be >= 4, got {seqlen}")
    if vocab_size < 3:
        raise ValueError(f"vocab_size must be >= 3, got {vocab_size}")
    b, l, trigger = batch_size, seqlen, vocab_size - 1
    inputs = torch.randint(0, trigger, (b, l), generator=generator)  # (b, l), no trigger yet
    p = torch.randint(0, l - 2, (b,), generator=generator)  # (b,), trigger position
    rows = torch.arange(b)
    inputs[rows, p] = trigger
    inputs[:, -1] = trigger
    targets = torch.full_like(inputs, IGNORE_INDEX)
    targets[:, -1] = inputs[rows, p + 1]
    return inputs, targets


def make_batch(task: str, batch_size: int, seqlen: int, vocab_size: int = 16, n_tokens: int = 8,
               generator: torch.Generator | None = None):
    """:func:`selective_copying` or :func:`induction_heads` by name (``n_tokens`` only for the first)."""
    if task == "selective_copying":
        return selective_copying(batch_size, seqlen, n_tokens, vocab_size, generator)
    if task == "induction_heads":
        return induction_heads(batch_size, seqlen, vocab_size, generator)
    raise ValueError(f"task must be one of {TASKS}, got {task!r}")


class LTIMixer(MambaMixer):
    """A Mamba mixer with selection switched off: ``delta, B, C`` do not depend on the input.

    Parameters beyond the mixer's (``x_proj`` is removed): ``dt_lti (R,)`` passed through
    ``dt_proj`` as the selective mixer passes ``x_proj``'s output, so ``delta`` is one learned
    value per channel, ``softplus(dt_proj(dt_lti))``; ``B_lti, C_lti (N,)``, shared by all
    channels as in the selective mixer. Initialization: ``dt_lti = 0`` (delta starts at the
    official ``dt_proj.bias`` draw), ``B_lti = 1``, ``C_lti ~ N(0, 1/N)``.
    """

    def __init__(self, config: MambaConfig, layer_idx: int = 0) -> None:
        super().__init__(config, layer_idx)
        del self.x_proj
        self.dt_lti = nn.Parameter(torch.zeros(config.dt_rank))  # (R,)
        self.B_lti = nn.Parameter(torch.ones(config.d_state))  # (N,)
        self.C_lti = nn.Parameter(torch.randn(config.d_state) * config.d_state ** -0.5)  # (N,)

    def ssm_inputs(self, x: torch.Tensor):
        """The same values at every step: ``delta (b, l, d_inner)`` before bias/softplus, ``B, C (b, l, N)``."""
        b, l, _ = x.shape
        delta = (self.dt_proj.weight @ self.dt_lti).to(x.dtype)  # (d_inner,)
        delta = delta.expand(b, l, -1)  # (b, l, d_inner)
        B = self.B_lti.to(x.dtype).expand(b, l, -1)  # (b, l, N)
        C = self.C_lti.to(x.dtype).expand(b, l, -1)  # (b, l, N)
        return delta, B, C


def task_model(vocab_size: int = 16, d_model: int = 64, n_layer: int = 2, d_state: int = 16,
               selective: bool = True, seed: int | None = 0) -> MambaLM:
    """The paper's small task model (2 layers, ``d_model = 64``), selective (S6) or LTI.

    With ``selective=False`` every mixer is an :class:`LTIMixer` (same seed, same other
    weights' initialization). No vocabulary padding (``pad_vocab_size_multiple = 1``).
    """
    if seed is not None:
        torch.manual_seed(seed)
    config = MambaConfig(d_model=d_model, n_layer=n_layer, vocab_size=vocab_size, d_state=d_state,
                         pad_vocab_size_multiple=1)
    return _build(config, selective)


def _build(config: MambaConfig, selective: bool) -> MambaLM:
    model = MambaLM(config)
    if not selective:
        for i, layer in enumerate(model.backbone.layers):
            layer.mixer = LTIMixer(config, i)
    return model


def is_selective(model: MambaLM) -> bool:
    """False when the model's mixers are :class:`LTIMixer` (the ablation)."""
    return not isinstance(model.backbone.layers[0].mixer, LTIMixer)


def save_task_model(model: MambaLM, directory: str | Path, info: dict | None = None) -> Path:
    """Write ``config.json`` (model config, ``selective`` flag and ``info``) and ``model.safetensors``.

    The tasks' models are not language models with a tokenizer, and the LTI variant has
    parameters no official checkpoint has, so they use this small format rather than
    :func:`~minimamba_core.interop.checkpoint.save_pretrained`.
    """
    from safetensors.torch import save_model

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    meta = {"config": model.config.to_dict(), "selective": is_selective(model), "info": info or {}}
    (directory / "config.json").write_text(json.dumps(meta, indent=2) + "\n")
    save_model(model, str(directory / "model.safetensors"))  # copies to the CPU; the model stays put
    return directory


def load_task_model(directory: str | Path, device: torch.device | str | None = None):
    """Read a folder written by :func:`save_task_model`; returns ``(model in eval mode, info dict)``.

    Raises:
        FileNotFoundError: naming the folder, when its files are missing.
    """
    from safetensors.torch import load_model

    directory = Path(directory)
    if not (directory / "config.json").is_file() or not (directory / "model.safetensors").is_file():
        raise FileNotFoundError(f"{directory} has no config.json + model.safetensors task checkpoint")
    meta = json.loads((directory / "config.json").read_text())
    config = MambaConfig.from_dict(meta["config"])
    model = _build(config, meta["selective"])
    load_model(model, str(directory / "model.safetensors"))
    return model.to(device or "cpu").eval(), meta["info"]

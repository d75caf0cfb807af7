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
convolution, the gate, ``A``, ``D``) is unchanged. ``B, C`` are per channel ``(d_inner, N)`` as
in the paper's S4 (Algorithm 1), and the SSM, a fixed convolution per channel (eq. 3), runs by
FFT; the first version shared ``B, C (N,)`` over channels (``bc="shared"``, still loadable).
Built in notebook ``09_selection_tasks``.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ..cache import InferenceCache
from ..config import MambaConfig
from ..mixer import MambaMixer, autocast_off, causal_conv, causal_conv_step
from ..model import MambaLM
from .data import IGNORE_INDEX
from .mqar import mqar

TASKS = ("selective_copying", "induction_heads", "mqar")  # mqar: Zoology's recall task, in mqar.py


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
    """:func:`selective_copying`, :func:`induction_heads` or :func:`~minimamba_core.training.mqar.mqar` by name
    (``n_tokens``: the data tokens of the first, the key-value pairs of ``"mqar"``; unused by the second)."""
    if task == "mqar":
        return mqar(batch_size, seqlen, n_tokens, vocab_size, generator=generator)
    if task == "selective_copying":
        return selective_copying(batch_size, seqlen, n_tokens, vocab_size, generator)
    if task == "induction_heads":
        return induction_heads(batch_size, seqlen, vocab_size, generator)
    raise ValueError(f"task must be one of {TASKS}, got {task!r}")


LTI_BC = ("channel", "shared")


def lti_kernel(log_A_bar: torch.Tensor, B_bar: torch.Tensor, C: torch.Tensor, length: int) -> torch.Tensor:
    """The LTI SSM's convolution kernel ``K[d, j] = sum_n C[d, n] A_bar[d, n]**j B_bar[d, n]``.

    Gu & Dao 2023, eq. (3a-3b): with ``delta, A, B, C`` constant, the recurrence
    ``h_t = A_bar h_{t-1} + B_bar x_t, y_t = C h_t`` is the causal convolution ``y = x * K``,
    one kernel per channel.

    Args:
        log_A_bar: ``delta[:, None] * A``, ``(d, N)`` float (``A_bar = exp(log_A_bar)``).
        B_bar: ``delta[:, None] * B``, ``(d, N)``.
        C: ``(d, N)``.
        length: ``l``, the number of taps ``j = 0 .. l-1``.

    Returns:
        ``K (d, l)``, the dtype of the inputs.
    """
    j = torch.arange(length, device=log_A_bar.device, dtype=log_A_bar.dtype)  # (l,)
    powers = torch.exp(log_A_bar[:, :, None] * j)  # (d, N, l), A_bar**j
    return torch.einsum("dn,dnl->dl", C * B_bar, powers)


def lti_scan_fft(x: torch.Tensor, log_A_bar: torch.Tensor, B_bar: torch.Tensor, C: torch.Tensor,
                 h0: torch.Tensor | None = None, return_last_state: bool = False):
    """The per-channel LTI SSM over a whole sequence, as a causal convolution computed by FFT.

    ``y_t = sum_{j<=t} K[:, j] x_{t-j}`` (:func:`lti_kernel`) by a real FFT of length ``2 l``
    (zero padding makes the circular convolution causal). A starting state ``h0`` adds
    ``C A_bar**(t+1) h0`` at step ``t``; the last state is
    ``A_bar**l h0 + sum_j A_bar**(l-1-j) B_bar x_j``. No ``D`` skip, no gate.

    Args:
        x: ``(b, l, d)`` float32 or float64.
        log_A_bar, B_bar, C: ``(d, N)``, as in :func:`lti_kernel`, the dtype of ``x``.
        h0: ``(b, d, N)`` or None (zeros).
        return_last_state: also return the state after the last step.

    Returns:
        ``y (b, l, d)``, and ``h (b, d, N)`` when asked.
    """
    b, l, d = x.shape
    j = torch.arange(l, device=x.device, dtype=x.dtype)  # (l,)
    powers = torch.exp(log_A_bar[:, :, None] * j)  # (d, N, l)
    K = torch.einsum("dn,dnl->dl", C * B_bar, powers)  # (d, l)
    n = 2 * l
    y = torch.fft.irfft(torch.fft.rfft(x, n=n, dim=1) * torch.fft.rfft(K.T, n=n, dim=0), n=n, dim=1)[:, :l]
    A_bar = torch.exp(log_A_bar)  # (d, N)
    if h0 is not None:
        y = y + torch.einsum("bdn,dnl->bld", h0.to(x.dtype), C[:, :, None] * A_bar[:, :, None] * powers)
    if not return_last_state:
        return y
    h = torch.einsum("bld,dnl->bdn", x, B_bar[:, :, None] * powers.flip(-1))  # (b, d, N)
    if h0 is not None:
        h = h + torch.exp(log_A_bar * l) * h0.to(x.dtype)
    return y, h


def lti_scan_sequential(x: torch.Tensor, A_bar: torch.Tensor, B_bar: torch.Tensor, C: torch.Tensor,
                        h0: torch.Tensor | None = None, keep: torch.Tensor | None = None):
    """The per-channel LTI recurrence step by step: ``h_t = A_bar h_{t-1} + B_bar x_t``, ``y_t = C . h_t``.

    Gu & Dao 2023, eq. (2a-2b) with constant parameters (S4D-Real: diagonal ``A``).

    Args:
        x: ``(b, l, d)`` float32 or float64.
        A_bar, B_bar, C: ``(d, N)``, the dtype of ``x``.
        h0: ``(b, d, N)`` or None (zeros).
        keep: ``(b, l)`` bool or None; where False the step is skipped (the state passes
            through unchanged, as ``delta = 0`` would make it: ``A_bar = 1, B_bar = 0``).

    Returns:
        ``y (b, l, d)`` and the last state ``h (b, d, N)``.
    """
    b, l, d = x.shape
    h = x.new_zeros(b, d, A_bar.shape[1]) if h0 is None else h0.to(x.dtype)  # (b, d, N)
    ys = []
    for t in range(l):
        h_new = A_bar * h + B_bar * x[:, t, :, None]  # (b, d, N)
        h = h_new if keep is None else torch.where(keep[:, t, None, None], h_new, h)
        ys.append(torch.einsum("bdn,dn->bd", h, C))  # (b, d)
    return torch.stack(ys, dim=1), h  # (b, l, d), (b, d, N)


class LTIMixer(MambaMixer):
    """A Mamba mixer with selection switched off: ``delta, B, C`` do not depend on the input.

    Args:
        config: the model's :class:`MambaConfig`.
        layer_idx: this mixer's index in an :class:`~minimamba_core.cache.InferenceCache`.
        bc: ``"channel"`` (default): ``B, C`` per channel, ``(d_inner, N)``, as the paper's S4
            (Gu & Dao 2023, Algorithm 1: ``B, C : (D, N)`` without selection; S4D-Real with
            ``A = -exp(A_log)``); ``"shared"``: ``B, C (N,)`` shared by all channels as in the
            selective mixer (the first version of this ablation; old folders load with it).

    Parameters beyond the mixer's (``x_proj`` is removed): ``dt_lti (R,)`` passed through
    ``dt_proj`` as the selective mixer passes ``x_proj``'s output, so ``delta`` is one learned
    value per channel, ``softplus(dt_proj(dt_lti))``; ``B_lti, C_lti`` (``(d_inner, N)`` or
    ``(N,)``). Initialization: ``dt_lti = 0`` (delta starts at the official ``dt_proj.bias``
    draw), ``B_lti = 1``, ``C_lti ~ N(0, 1/N)``.

    With ``bc="shared"`` the mixer runs the selective mixer's code with constant inputs. With
    ``bc="channel"`` it has its own SSM path: :func:`lti_scan_fft` (a convolution by FFT) for
    ``forward``, including a cache (prefill or continuation from ``ssm_state``), and
    :func:`lti_scan_sequential` for ``step`` and for an ``attention_mask`` (left padding skipped
    exactly as in :meth:`MambaMixer.forward`).

    Raises:
        ValueError: ``bc`` not in ``LTI_BC``.
    """

    def __init__(self, config: MambaConfig, layer_idx: int = 0, bc: str = "channel") -> None:
        if bc not in LTI_BC:
            raise ValueError(f"bc must be one of {LTI_BC}, got {bc!r}")
        super().__init__(config, layer_idx)
        del self.x_proj
        self.bc = bc
        shape = (config.d_state,) if bc == "shared" else (config.d_inner, config.d_state)
        self.dt_lti = nn.Parameter(torch.zeros(config.dt_rank))  # (R,)
        self.B_lti = nn.Parameter(torch.ones(shape))  # (N,) or (d_inner, N)
        self.C_lti = nn.Parameter(torch.randn(shape) * config.d_state ** -0.5)  # (N,) or (d_inner, N)

    def ssm_inputs(self, x: torch.Tensor):
        """The same values at every step, as views: ``delta (b, l, d_inner)`` before bias/softplus,
        ``B, C (b, l, N)`` (``bc="shared"``) or ``(b, l, d_inner, N)`` (``bc="channel"``)."""
        b, l, _ = x.shape
        delta = (self.dt_proj.weight @ self.dt_lti).to(x.dtype)  # (d_inner,)
        delta = delta.expand(b, l, -1)  # (b, l, d_inner)
        B = self.B_lti.to(x.dtype).expand(b, l, *self.B_lti.shape)  # (b, l, [d_inner,] N)
        C = self.C_lti.to(x.dtype).expand(b, l, *self.C_lti.shape)  # (b, l, [d_inner,] N)
        return delta, B, C

    def discretized(self, dtype: torch.dtype):
        """``log_A_bar = delta A``, ``B_bar = delta B``, ``C`` ``(d_inner, N)`` and ``D (d_inner,)`` in ``dtype``
        (zero-order hold for ``A``, Euler for ``B``, as the selective scan; Gu & Dao 2023, eq. 4)."""
        A, D, bias = self.scan_params()
        delta = F.softplus((self.dt_proj.weight @ self.dt_lti).to(A.dtype) + bias)  # (d_inner,)
        B = self.B_lti.to(A.dtype).expand(self.config.d_inner, -1)  # (d_inner, N)
        C = self.C_lti.to(A.dtype).expand(self.config.d_inner, -1)  # (d_inner, N)
        return ((delta[:, None] * A).to(dtype), (delta[:, None] * B).to(dtype), C.to(dtype), D.to(dtype))

    def forward(self, hidden: torch.Tensor, cache: InferenceCache | None = None,
                attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """As :meth:`MambaMixer.forward` (``(b, l, d_model) -> (b, l, d_model)``, cache and mask
        rules the same); ``bc="channel"`` runs :func:`lti_scan_fft` (the recurrence with a mask)."""
        if self.bc == "shared":
            return super().forward(hidden, cache, attention_mask)
        x, z = self.in_proj(hidden).chunk(2, dim=-1)  # (b, l, d_inner) each
        acc = torch.promote_types(hidden.dtype, torch.float32)
        state = cache.layers[self.layer_idx] if cache is not None else None
        with autocast_off(hidden.device.type):
            x, conv_state = causal_conv(x, self.conv1d, state["conv_state"] if state else None,
                                        attention_mask)  # (b, l, d_inner) float32, (b, d_inner, k)
            x = x.to(hidden.dtype).to(acc)  # rounded as the selective path rounds it
            log_A_bar, B_bar, C, D = self.discretized(acc)  # (d_inner, N) x3, (d_inner,)
            h0 = state["ssm_state"] if state else None
            if attention_mask is None:
                out = lti_scan_fft(x, log_A_bar, B_bar, C, h0, return_last_state=state is not None)
                y, h = out if state is not None else (out, None)
            else:
                y, h = lti_scan_sequential(x, torch.exp(log_A_bar), B_bar, C, h0, keep=attention_mask)
            y = (y + D * x) * F.silu(z.to(acc))  # (b, l, d_inner)
        if state is not None:
            state["conv_state"] = conv_state.detach().to(state["conv_state"].dtype)
            state["ssm_state"] = h.detach().to(state["ssm_state"].dtype, copy=True)
        return self.out_proj(y.to(hidden.dtype))  # (b, l, d_model)

    def step(self, hidden_t: torch.Tensor, cache: InferenceCache) -> torch.Tensor:
        """As :meth:`MambaMixer.step`: ``(b, 1, d_model) -> (b, 1, d_model)``, one recurrence step."""
        if self.bc == "shared":
            return super().step(hidden_t, cache)
        x, z = self.in_proj(hidden_t).chunk(2, dim=-1)  # (b, 1, d_inner) each
        acc = torch.promote_types(hidden_t.dtype, torch.float32)
        state = cache.layers[self.layer_idx]
        with autocast_off(hidden_t.device.type):
            x, conv_state = causal_conv_step(x, self.conv1d, state["conv_state"])  # (b, 1, d_inner)
            x = x.to(hidden_t.dtype).to(acc)
            log_A_bar, B_bar, C, D = self.discretized(acc)
            y, h = lti_scan_sequential(x, torch.exp(log_A_bar), B_bar, C, state["ssm_state"])
            y = (y + D * x) * F.silu(z.to(acc))  # (b, 1, d_inner)
        state["conv_state"] = conv_state.detach()
        state["ssm_state"] = h.detach().to(state["ssm_state"].dtype)
        return self.out_proj(y.to(hidden_t.dtype))  # (b, 1, d_model)


def task_model(vocab_size: int = 16, d_model: int = 64, n_layer: int = 2, d_state: int = 16,
               selective: bool = True, seed: int | None = 0, lti_bc: str = "channel") -> MambaLM:
    """The paper's small task model (2 layers, ``d_model = 64``), selective (S6) or LTI.

    With ``selective=False`` every mixer is an :class:`LTIMixer` with ``bc=lti_bc`` (same seed,
    same other weights' initialization): ``"channel"`` (the default; ``B, C (d_inner, N)``, the
    paper's S4) or ``"shared"`` (``B, C (N,)``, the first version of the ablation). No vocabulary padding
    (``pad_vocab_size_multiple = 1``).

    Raises:
        ValueError: ``lti_bc`` not in ``LTI_BC``.
    """
    if seed is not None:
        torch.manual_seed(seed)
    config = MambaConfig(d_model=d_model, n_layer=n_layer, vocab_size=vocab_size, d_state=d_state,
                         pad_vocab_size_multiple=1)
    return _build(config, selective, lti_bc)


def _build(config: MambaConfig, selective: bool, lti_bc: str = "channel") -> MambaLM:
    if lti_bc not in LTI_BC:
        raise ValueError(f"lti_bc must be one of {LTI_BC}, got {lti_bc!r}")
    model = MambaLM(config)
    if not selective:
        for i, layer in enumerate(model.backbone.layers):
            layer.mixer = LTIMixer(config, i, bc=lti_bc)
    return model


def is_selective(model: MambaLM) -> bool:
    """False when the model's mixers are :class:`LTIMixer` (the ablation)."""
    return not isinstance(model.backbone.layers[0].mixer, LTIMixer)


def save_task_model(model: MambaLM, directory: str | Path, info: dict | None = None) -> Path:
    """Write ``config.json`` (model config, ``selective`` flag, for an LTI model ``lti_bc``, and
    ``info``) and ``model.safetensors``.

    The tasks' models are not language models with a tokenizer, and the LTI variant has
    parameters no official checkpoint has, so they use this small format rather than
    :func:`~minimamba_core.interop.checkpoint.save_pretrained`.
    """
    from safetensors.torch import save_model

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    meta = {"config": model.config.to_dict(), "selective": is_selective(model)}
    if not meta["selective"]:
        meta["lti_bc"] = model.backbone.layers[0].mixer.bc
    meta["info"] = info or {}
    (directory / "config.json").write_text(json.dumps(meta, indent=2) + "\n")
    save_model(model, str(directory / "model.safetensors"))  # copies to the CPU; the model stays put
    return directory


def load_task_model(directory: str | Path, device: torch.device | str | None = None):
    """Read a folder written by :func:`save_task_model`; returns ``(model in eval mode, info dict)``.

    An LTI model's ``B, C`` layout comes from ``config.json``'s ``"lti_bc"``; folders written
    before per-channel ``B, C`` have no such key and hold shared ones (``"shared"``).

    Raises:
        FileNotFoundError: naming the folder, when its files are missing.
    """
    from safetensors.torch import load_model

    directory = Path(directory)
    if not (directory / "config.json").is_file() or not (directory / "model.safetensors").is_file():
        raise FileNotFoundError(f"{directory} has no config.json + model.safetensors task checkpoint")
    meta = json.loads((directory / "config.json").read_text())
    config = MambaConfig.from_dict(meta["config"])
    model = _build(config, meta["selective"], meta.get("lti_bc", "shared"))
    load_model(model, str(directory / "model.safetensors"))
    return model.to(device or "cpu").eval(), meta["info"]

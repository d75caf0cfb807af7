"""Plot of notebook 05: scrubbing a line of text through a mixer's selection (``delta_t``,
``B_t``, ``C_t`` per token), in the shipped Tiny Shakespeare model or in the same model untrained.

The plot returns ``(fig, data)``; tests/test_viz.py asserts on ``data``.
"""

from __future__ import annotations

import functools
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import torch
import torch.nn.functional as F

from ..mixer import MambaMixer
from .widgets import check_choice, check_int

# -- 05: the mixer ------------------------------------------------------------------------------

#: The line scrubbed through: a speaker's name, a newline, a verse line (one character per token).
SCRUB_TEXT = "ROMEO:\nWhat light through yonder window breaks?"
#: ``"trained"``: the model in ``models/shakespeare/`` (notebook 08); ``"untrained"``: the same
#: configuration at the official initialization (seed 0).
SCRUB_MODELS = ("untrained", "trained")
SHAKESPEARE_MODEL = Path(__file__).resolve().parents[2] / "models" / "shakespeare"


@functools.lru_cache(maxsize=2)
def scrub_lm(model: str):
    """The float64 ``MambaLM`` named by ``model`` (one of :data:`SCRUB_MODELS`) and the ids ``(1, l)``
    of :data:`SCRUB_TEXT`; cached, so the widget reloads nothing. Reads ``models/shakespeare``."""
    from ..interop import load_pretrained, load_tokenizer
    from ..model import MambaLM

    trained = load_pretrained(SHAKESPEARE_MODEL, dtype=torch.float64).eval()
    ids = torch.tensor([load_tokenizer(SHAKESPEARE_MODEL).encode(SCRUB_TEXT).ids])  # (1, l)
    if model == "trained":
        return trained, ids
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return MambaLM(trained.config).double().eval(), ids


@torch.no_grad()
def mixer_scrub_example(model: str = "trained", layer: int = 0):
    """The mixer of ``layer`` and its input on :data:`SCRUB_TEXT`, for :func:`plot_mixer_scrub`.

    ``model``: one of :data:`SCRUB_MODELS`; both have the shipped model's configuration
    (``d_model = 256``, 4 layers, ``d_inner = 512``, ``N = 16``, ``dt_rank = 16``) in float64. The
    input is what the mixer sees inside the model: the residual stream after ``layer`` blocks,
    through the block's RMSNorm. Returns ``(mixer, hidden (1, l, d_model), tokens)`` (``tokens``:
    the characters); the global RNG is untouched.

    Raises ValueError: an unknown ``model``, or ``layer`` not in ``[0, 4)``.
    """
    check_choice("model", model, SCRUB_MODELS)
    lm, ids = scrub_lm(model)
    check_int("layer", layer, 0, lm.config.n_layer - 1)
    residual = lm.backbone.embedding(ids)  # (1, l, d_model)
    for block in lm.backbone.layers[:layer]:
        residual = block(residual)  # (1, l, d_model)
    block = lm.backbone.layers[layer]
    return block.mixer, block.norm(residual), list(SCRUB_TEXT)  # (1, l, d_model)


@torch.no_grad()
def mixer_selection(mixer: MambaMixer, hidden: torch.Tensor) -> dict:
    """The input-dependent SSM parameters of ``mixer`` for ``hidden (b, l, d_model)``.

    ``in_proj`` -> ``x, z``; causal depthwise ``conv1d`` + SiLU; ``x_proj`` -> ``(dt, B, C)``;
    ``delta = softplus(dt_proj(dt))`` (paper Algorithm 2). Returns tensors ``x (b, l, d_inner)``
    after the convolution, ``z (b, l, d_inner)``, ``delta (b, l, d_inner)`` after the softplus,
    ``B, C (b, l, N)``, ``A (d_inner, N)``.
    """
    cfg = mixer.config
    l, k = hidden.shape[1], cfg.d_conv
    x, z = mixer.in_proj(hidden).chunk(2, dim=-1)  # (b, l, d_inner) each
    # The causal depthwise convolution as a sum of k shifted copies (the same numbers as
    # conv1d(padding=k-1)[..., :l]; small conv1d calls can be slow on a busy CPU).
    w = mixer.conv1d.weight[:, 0, :]  # (d_inner, k)
    x_pad = F.pad(x, (0, 0, k - 1, 0))  # (b, k-1+l, d_inner): zeros before the first token
    x = sum(w[:, j] * x_pad[:, j:j + l] for j in range(k))  # (b, l, d_inner)
    if mixer.conv1d.bias is not None:
        x = x + mixer.conv1d.bias
    x = F.silu(x)  # (b, l, d_inner)
    dt, B, C = mixer.x_proj(x).split([cfg.dt_rank, cfg.d_state, cfg.d_state], dim=-1)
    delta = F.softplus(mixer.dt_proj(dt))  # (b, l, d_inner)
    return dict(x=x, z=z, delta=delta, B=B, C=C, A=-torch.exp(mixer.A_log))


@functools.lru_cache(maxsize=8)
def _scrub_selection(model: str, layer: int) -> dict:
    """:func:`mixer_selection` of :func:`mixer_scrub_example` (cached: the widget redraws often)."""
    mixer, hidden, _ = mixer_scrub_example(model, layer)
    return mixer_selection(mixer, hidden)


def plot_mixer_scrub(position: int = 0, channel: int = 0, model: str = "untrained", layer: int = 0):
    """Scrub along a line: the step ``delta_t`` of one channel, and ``B_t``, ``C_t`` at one token.

    Uses :func:`mixer_scrub_example` (the mixer of ``layer`` in the ``"trained"`` Tiny Shakespeare
    model or in the same model ``"untrained"``) and :func:`mixer_selection`. Top: ``delta_t`` of
    ``channel`` for every token of :data:`SCRUB_TEXT`, the chosen ``position`` marked. Bottom: at
    that position, ``1 - A_bar`` (the fraction of each state forgotten at this token, ``A_bar =
    exp(delta_t A)``) for the channel's states, and ``B_t``, ``C_t`` (shared by all channels).
    Bar limits are fixed over the line, so positions can be compared.

    Returns ``(fig, data)``; ``data``: ``tokens`` (list of str), ``delta (l,)`` for the channel,
    ``B, C (l, N)``, ``delta_at`` (float), ``A_bar_at, B_at, C_at (N,)``, ``spread`` (float:
    ``max / min`` of the channel's ``delta`` over the line).

    Raises ValueError: ``model`` not in :data:`SCRUB_MODELS`, ``layer`` not in ``[0, 4)``,
    ``position`` not in ``[0, l)`` or ``channel`` not in ``[0, 512)``.
    """
    check_choice("model", model, SCRUB_MODELS)
    check_int("layer", layer, 0, scrub_lm(model)[0].config.n_layer - 1)
    sel = _scrub_selection(model, layer)
    tokens = list(SCRUB_TEXT)
    l, d_inner = sel["delta"].shape[1:]
    check_int("position", position, 0, l - 1)
    check_int("channel", channel, 0, d_inner - 1)
    delta = sel["delta"][0, :, channel].numpy()  # (l,)
    B, C = sel["B"][0].numpy(), sel["C"][0].numpy()  # (l, N)
    A = sel["A"][channel].numpy()  # (N,)
    A_bar_at = np.exp(delta[position] * A)  # (N,)
    forget_max = float(1.0 - np.exp(delta.max() * A).min())  # largest 1 - A_bar over the line
    data = dict(tokens=tokens, delta=delta, B=B, C=C, delta_at=float(delta[position]), A_bar_at=A_bar_at,
                B_at=B[position], C_at=C[position], spread=float(delta.max() / delta.min()))

    fig = plt.figure(figsize=(11, 5.4))
    grid = fig.add_gridspec(2, 3, height_ratios=[1.2, 1])
    ax = fig.add_subplot(grid[0, :])
    ax.plot(np.arange(l), delta, "o-", ms=4, color="C3" if model == "trained" else "C7")
    ax.plot([position], [delta[position]], "o", ms=12, mfc="none", mec="k", mew=2)
    ax.axvline(position, color="k", ls=":", lw=1)
    ax.set_ylim(0, 1.1 * delta.max())
    ax.set_xticks(np.arange(l))
    ax.set_xticklabels([{" ": "_", "\n": "⏎"}.get(c, c) for c in tokens])
    ax.set_ylabel(rf"$\Delta_t$, channel {channel}")
    ax.set_title(f"{model}, layer {layer}: token {position} = {tokens[position]!r}, delta = {delta[position]:.4f} "
                 f"(max/min over the line {data['spread']:.1f})")
    n = np.arange(1, B.shape[1] + 1)
    for j, (vals, name, lim) in enumerate((
            (1.0 - A_bar_at, r"forgotten: $1 - e^{\Delta_t A}$ (this channel)", (0.0, 1.1 * forget_max)),
            (B[position], r"$B_t$ (all channels)", (B.min() * 1.1, B.max() * 1.1)),
            (C[position], r"$C_t$ (all channels)", (C.min() * 1.1, C.max() * 1.1)))):
        axb = fig.add_subplot(grid[1, j])
        axb.bar(n, vals, color=("C0", "C1", "C2")[j])
        axb.set_ylim(*lim)
        axb.set_xticks(n[::2])
        axb.set_xlabel("state n")
        axb.set_title(name, fontsize=10)
    fig.tight_layout()
    return fig, data

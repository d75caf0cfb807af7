"""Plot of notebook 05: scrubbing a sentence through an untrained mixer's selection
(``delta_t``, ``B_t``, ``C_t`` per token).

The plot returns ``(fig, data)``; tests/test_viz.py asserts on ``data``.
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import torch
import torch.nn.functional as F

from ..config import MambaConfig
from ..mixer import MambaMixer
from .widgets import check_int

# -- 05: the mixer ------------------------------------------------------------------------------

SCRUB_TEXT = "mamba keeps what matters"


def mixer_scrub_example(seed: int = 0):
    """A seeded float64 :class:`MambaMixer` and its input for :func:`plot_mixer_scrub` (notebook 05).

    ``d_model = 16``, ``d_state = 8``, ``d_conv = 4``, ``expand = 2`` (``d_inner = 32``, ``dt_rank = 1``),
    official initialization. The input is :data:`SCRUB_TEXT`, one character per token, embedded by
    a seeded random table. Returns ``(mixer, hidden (1, l, 16), tokens)``; the global RNG is untouched.
    """
    config = MambaConfig(d_model=16, n_layer=1, vocab_size=32, d_state=8, d_conv=4, expand=2)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        mixer = MambaMixer(config).double()
        chars = sorted(set(SCRUB_TEXT))
        table = torch.randn(len(chars), config.d_model, dtype=torch.float64)  # (vocab, d_model)
    ids = torch.tensor([chars.index(c) for c in SCRUB_TEXT])
    return mixer, table[ids][None], list(SCRUB_TEXT)  # (1, l, d_model)


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


def plot_mixer_scrub(position: int = 0, channel: int = 0):
    """Scrub along a sentence: the step ``delta_t`` of one channel, and ``B_t``, ``C_t`` at one token.

    Uses :func:`mixer_scrub_example` (an untrained mixer) and :func:`mixer_selection`. Top:
    ``delta_t`` of ``channel`` for every token, the chosen ``position`` marked. Bottom: at that
    position, ``1 - A_bar`` (the fraction of each state forgotten at this token, ``A_bar =
    exp(delta_t A)``) for the channel's states, and ``B_t``, ``C_t`` (shared by all channels).
    Bar limits are fixed over the sentence, so positions can be compared.

    Returns ``(fig, data)``; ``data``: ``tokens`` (list of str), ``delta (l,)`` for the channel,
    ``B, C (l, N)``, ``delta_at`` (float), ``A_bar_at, B_at, C_at (N,)``.

    Raises ValueError: ``position`` not in ``[0, l)`` or ``channel`` not in ``[0, 32)``.
    """
    mixer, hidden, tokens = mixer_scrub_example()
    sel = mixer_selection(mixer, hidden)
    l, d_inner = sel["delta"].shape[1:]
    check_int("position", position, 0, l - 1)
    check_int("channel", channel, 0, d_inner - 1)
    delta = sel["delta"][0, :, channel].numpy()  # (l,)
    B, C = sel["B"][0].numpy(), sel["C"][0].numpy()  # (l, N)
    A = sel["A"][channel].numpy()  # (N,)
    A_bar_at = np.exp(delta[position] * A)  # (N,)
    forget_max = float(1.0 - np.exp(delta.max() * A).min())  # largest 1 - A_bar over the sentence
    data = dict(tokens=tokens, delta=delta, B=B, C=C, delta_at=float(delta[position]), A_bar_at=A_bar_at,
                B_at=B[position], C_at=C[position])

    fig = plt.figure(figsize=(10, 5.4))
    grid = fig.add_gridspec(2, 3, height_ratios=[1.2, 1])
    ax = fig.add_subplot(grid[0, :])
    ax.plot(np.arange(l), delta, "o-", ms=4, color="C3")
    ax.plot([position], [delta[position]], "o", ms=12, mfc="none", mec="k", mew=2)
    ax.axvline(position, color="k", ls=":", lw=1)
    ax.set_xticks(np.arange(l))
    ax.set_xticklabels(["_" if c == " " else c for c in tokens])
    ax.set_ylabel(rf"$\Delta_t$, channel {channel}")
    ax.set_title(f"token {position} = {tokens[position]!r}: delta = {delta[position]:.4f}")
    n = np.arange(1, B.shape[1] + 1)
    for j, (vals, name, lim) in enumerate((
            (1.0 - A_bar_at, r"forgotten: $1 - e^{\Delta_t A}$ (this channel)", (0.0, 1.1 * forget_max)),
            (B[position], r"$B_t$ (all channels)", (B.min() * 1.1, B.max() * 1.1)),
            (C[position], r"$C_t$ (all channels)", (C.min() * 1.1, C.max() * 1.1)))):
        axb = fig.add_subplot(grid[1, j])
        axb.bar(n, vals, color=("C0", "C1", "C2")[j])
        axb.set_ylim(*lim)
        axb.set_xticks(n)
        axb.set_xlabel("state n")
        axb.set_title(name, fontsize=10)
    fig.tight_layout()
    return fig, data

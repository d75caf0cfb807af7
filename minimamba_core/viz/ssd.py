"""Plots of notebook 12: the SSD matrix of one head, its chunks, and the rank of its blocks.

One head of Mamba-2's scalar-decay SSM (Dao & Gu 2024, arXiv 2405.21060, Sections 3 and 5),
``h_t = exp(dt_t A) h_{t-1} + dt_t B_t x_t``, ``y_t = C_t . h_t``, is the product ``y = M x`` with
the lower-triangular matrix

    M[t, s] = (C_t . B_s) exp(dt_{s+1} A + ... + dt_t A) dt_s     for s <= t, 0 above.

Cut ``M`` into chunks of ``Q`` steps (Section 6): the blocks on the diagonal are small masked
attentions, and every block below them has rank at most ``N = d_state`` (``M`` is
``N``-semiseparable, Section 3.2). Everything here is numpy float64, built by its own few lines
(no call into ``minimamba_core.ssd``), so tests/test_viz_ssd.py can hold it against the package.
Each plot returns ``(fig, data)``.
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.patches import Rectangle
from matplotlib.ticker import MaxNLocator

from .widgets import check_int

#: Singular values below this fraction of a block's largest one count as zero (float64 SVD
#: round-off is about 1e-16 of the largest; the real ones of our examples are far above 1e-10).
RANK_RTOL = 1e-10


def _check_nonnegative(name: str, value) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
        raise ValueError(f"{name} must be a number >= 0, got {value!r}")


def ssd_matrix_example(decay: float = 0.1, spread: float = 0.5, length: int = 48, d_state: int = 3,
                       dt_mean: float = 0.5, seed: int = 0) -> dict:
    """One seeded head: its inputs and its matrix ``M``, numpy float64.

    ``A = -decay``; ``dt_t = dt_mean * exp(spread * z_t - spread**2 / 2)`` with ``z_t`` standard
    normal: log-normal with mean ``dt_mean``, constant for ``spread = 0`` (``spread`` is the
    standard deviation of ``log dt``: how selective the step is). ``B, C`` standard normal.
    The random draws do not depend on ``decay`` or ``spread``.

    Returns ``dt (l,)``, ``A`` (float), ``B, C (l, N)``, ``L (l, l)`` the decay mask
    ``exp(dt_{s+1} A + ... + dt_t A)`` (0 above the diagonal), ``scores (l, l)`` ``= C B^T``,
    ``M (l, l)`` ``= L * scores * dt[None, :]``.

    Raises ValueError: ``decay`` or ``spread`` < 0, ``dt_mean`` <= 0, sizes out of range.
    """
    _check_nonnegative("decay", decay)
    _check_nonnegative("spread", spread)
    if isinstance(dt_mean, bool) or not isinstance(dt_mean, (int, float)) or not dt_mean > 0:
        raise ValueError(f"dt_mean must be a number > 0, got {dt_mean!r}")
    check_int("length", length, 1, 1024)
    check_int("d_state", d_state, 1, 256)
    rng = np.random.default_rng(seed)
    z = rng.standard_normal(length)  # (l,)
    B = rng.standard_normal((length, d_state))  # (l, N)
    C = rng.standard_normal((length, d_state))  # (l, N)
    dt = dt_mean * np.exp(spread * z - spread ** 2 / 2)  # (l,) > 0
    A = -float(decay)
    a = dt * A  # (l,) log-decay of each step
    r, s = np.arange(length)[:, None], np.arange(length)[None, :]
    # [t, s] = a[s+1] + ... + a[t]: a masked cumulative sum (each entry a sum of its own terms)
    seg = np.cumsum(np.where(r > s, a[:, None], 0.0), axis=0)  # (l, l)
    L = np.where(r >= s, np.exp(seg), 0.0)  # (l, l), 1 on the diagonal
    scores = C @ B.T  # (l, l): C_t . B_s, the "attention scores" with Q = C, K = B
    M = L * scores * dt[None, :]  # (l, l)
    return dict(dt=dt, A=A, B=B, C=C, L=L, scores=scores, M=M)


def chunk_boundaries(length: int, chunk: int) -> list[int]:
    """``[0, Q, 2Q, ..., length]``: where the chunks of ``chunk`` steps start (the last may be short)."""
    check_int("length", length, 1, 1 << 20)
    check_int("chunk", chunk, 1, 1 << 20)
    return list(range(0, length, chunk)) + [length]


def block_singular_values(M: np.ndarray, chunk: int, rtol: float = RANK_RTOL) -> dict:
    """Singular values and numerical ranks of the blocks of ``M (l, l)`` below the diagonal blocks.

    Block ``(i, j)``, ``i > j``, holds rows of chunk ``i`` and columns of chunk ``j``. Returns
    ``blocks`` (list of ``(i, j)``), ``singular_values`` (list of arrays, largest first),
    ``ranks`` (list of ints: values above ``rtol`` times the block's largest; 0 for a zero block).
    """
    M = np.asarray(M, dtype=np.float64)
    edges = chunk_boundaries(M.shape[0], chunk)
    blocks, svs, ranks = [], [], []
    for i in range(len(edges) - 1):
        for j in range(i):
            block = M[edges[i]:edges[i + 1], edges[j]:edges[j + 1]]  # (rows of chunk i, cols of chunk j)
            sv = np.linalg.svd(block, compute_uv=False)  # descending
            blocks.append((i, j))
            svs.append(sv)
            ranks.append(int((sv > rtol * sv[0]).sum()) if sv[0] > 0 else 0)
    return dict(blocks=blocks, singular_values=svs, ranks=ranks)


def plot_ssd_matrix(decay: float = 0.1, spread: float = 0.5, chunk: int = 8, length: int = 48,
                    d_state: int = 3):
    """The SSD matrix ``M`` of one head with its chunks, and the singular values of its blocks (notebook 12).

    Left: ``M`` (:func:`ssd_matrix_example`) as a heat map; the chunk boundaries every ``chunk``
    steps; the diagonal blocks (small masked attentions) outlined. Right: for every block below
    the diagonal blocks, its singular values divided by its largest, on a log scale: at most
    ``d_state`` of them stand above round-off.

    Returns ``(fig, data)``; ``data``: the keys of :func:`ssd_matrix_example`, ``boundaries``
    (:func:`chunk_boundaries`), the keys of :func:`block_singular_values`, ``max_rank`` (0 when
    there is a single chunk), ``d_state``.

    Raises ValueError: as :func:`ssd_matrix_example`, or ``chunk`` not in ``[1, length]``.
    """
    ex = ssd_matrix_example(decay, spread, length, d_state)
    check_int("chunk", chunk, 1, length)
    edges = chunk_boundaries(length, chunk)
    sv = block_singular_values(ex["M"], chunk)
    max_rank = max(sv["ranks"], default=0)

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.6), gridspec_kw=dict(width_ratios=[1.15, 1]))
    M = ex["M"]
    vmax = max(np.abs(M).max(), 1e-300)
    im = ax1.imshow(M, cmap="RdBu_r", vmin=-vmax, vmax=vmax, interpolation="nearest")
    for e in edges[1:-1]:
        ax1.axhline(e - 0.5, color="0.35", lw=0.8)
        ax1.axvline(e - 0.5, color="0.35", lw=0.8)
    for lo, hi in zip(edges[:-1], edges[1:]):
        ax1.add_patch(Rectangle((lo - 0.5, lo - 0.5), hi - lo, hi - lo, fill=False, ec="k", lw=1.8))
    ax1.set_xlabel("input step s")
    ax1.set_ylabel("output step t")
    ax1.set_title(f"M: |A| = {decay:g}, spread of log dt = {spread:g}, chunks of {chunk}", fontsize=10)
    fig.colorbar(im, ax=ax1, fraction=0.046, pad=0.04, label="M[t, s]")

    floor = 1e-18  # exact zeros drawn here on the log axis
    for values in sv["singular_values"]:
        rel = values / values[0] if values[0] > 0 else np.zeros_like(values)
        k = np.arange(1, len(values) + 1)
        ax2.semilogy(k, np.maximum(rel, floor), "o-", ms=3, lw=0.8, color="C0", alpha=0.35)
    ax2.axvline(d_state + 0.5, color="C3", ls="--", lw=1.2, label=f"N = {d_state}")
    ax2.axhline(RANK_RTOL, color="0.5", ls=":", lw=1, label=f"threshold {RANK_RTOL:g}")
    ax2.set_ylim(floor / 3, 3)
    ax2.set_xlim(0.5, chunk + 0.5)
    ax2.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax2.set_xlabel("k")
    ax2.set_ylabel(r"$\sigma_k / \sigma_1$ of each block")
    if sv["blocks"]:
        ax2.set_title(f"{len(sv['blocks'])} blocks below the diagonal: rank <= {max_rank}", fontsize=10)
        ax2.legend(loc="upper right", fontsize=8)
    else:
        ax2.set_title("one chunk: no block below the diagonal", fontsize=10)
    fig.tight_layout()
    data = dict(ex, boundaries=edges, **sv, max_rank=max_rank, d_state=d_state)
    return fig, data

"""Plots of notebook 13 (Mamba-2): the four chunked steps on the SSD matrix, where a mixer's
parameters go, and two training runs side by side.

The chunked SSD algorithm (Dao & Gu 2024, arXiv 2405.21060, Section 6) computes ``y = M x`` for
the matrix ``M`` of one head (:func:`~minimamba_core.viz.ssd.ssd_matrix_example`, notebook 12)
without building it. With chunks of ``Q`` steps, a block of ``M`` below the diagonal blocks, rows
in chunk ``i`` and columns in chunk ``j < i``, factors into three pieces (:func:`chunked_factors`)::

    M[t, s] = left[t] . right[s] * chunk_decay[i, j]
    left[t]  = exp(a_{start of i} + ... + a_t) C_t                  (step 4: read the state out)
    right[s] = exp(a_{s+1} + ... + a_{end of j}) dt_s B_s           (step 2: the chunk's state)
    chunk_decay[i, j] = exp(sum of a over the chunks j+1 .. i-1)     (step 3: pass the states on)

with ``a_t = dt_t A``; the diagonal blocks are step 1. Everything here is numpy float64, built by
its own few lines (no call into ``minimamba_core.ssd``), so tests/test_viz_mamba2.py can hold it
against ``M``. Each plot returns ``(fig, data)``.
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.patches import Rectangle
from matplotlib.ticker import FuncFormatter

from .ssd import chunk_boundaries, ssd_matrix_example
from .widgets import check_int

#: The four steps of the chunked algorithm, as the panels of :func:`plot_chunked_steps` title them.
CHUNK_STEPS = ("1. inside each chunk", "2. each chunk's state", "3. states passed on", "4. states read out")
#: What panel 3's numbers are, under its title.
BETWEEN_LABEL = "decays between chunks"


def chunked_factors(ex: dict, chunk: int) -> dict:
    """The four steps' pieces of ``M`` for one head ``ex`` (the dict of :func:`ssd_matrix_example`).

    Returns ``boundaries`` (:func:`chunk_boundaries`), ``same_chunk (l, l)`` bool (True inside
    the diagonal blocks), ``diag_part``, ``off_part (l, l)`` (``M`` inside and outside them, summing
    to ``M``), ``left, right (l, N)`` and ``chunk_decay (c, c)`` (0 on and above its diagonal),
    as in the module docstring.
    """
    dt, A, B, C, M = ex["dt"], ex["A"], ex["B"], ex["C"], ex["M"]
    length = len(dt)
    edges = chunk_boundaries(length, chunk)
    which = np.searchsorted(edges, np.arange(length), side="right") - 1  # (l,): the chunk of each step
    same_chunk = which[:, None] == which[None, :]  # (l, l)
    a = dt * A  # (l,) log-decay of each step
    left, right = np.empty_like(C), np.empty_like(B)
    for lo, hi in zip(edges[:-1], edges[1:]):
        into = np.cumsum(a[lo:hi])  # a_lo + ... + a_t: partial sums inside one chunk
        out_of = np.append(np.cumsum(a[lo:hi][::-1])[::-1][1:], 0.0)  # a_{s+1} + ... + a_{hi-1}, from the end
        left[lo:hi] = np.exp(into)[:, None] * C[lo:hi]  # (Q, N)
        right[lo:hi] = (np.exp(out_of) * dt[lo:hi])[:, None] * B[lo:hi]  # (Q, N)
    per_chunk = np.array([a[lo:hi].sum() for lo, hi in zip(edges[:-1], edges[1:])])  # (c,)
    c = len(per_chunk)
    chunk_decay = np.zeros((c, c))
    for i in range(c):
        for j in range(i):
            chunk_decay[i, j] = np.exp(per_chunk[j + 1:i].sum())  # 1 for neighbours: no chunk between
    return dict(boundaries=edges, same_chunk=same_chunk, diag_part=np.where(same_chunk, M, 0.0),
                off_part=np.where(same_chunk, 0.0, M), left=left, right=right, chunk_decay=chunk_decay)


def plot_chunked_steps(decay: float = 0.1, spread: float = 0.5, chunk: int = 12, length: int = 48,
                       d_state: int = 3):
    """The SSD matrix ``M`` of one head four times, each panel lighting up what one step computes.

    1. the diagonal blocks (small masked attentions, the quadratic form inside each chunk);
    2. for each chunk ``j``, the columns below its diagonal block: its inputs, gathered into its
       own state ``S_j`` of ``N`` numbers per channel at the chunk's end (``right``); the last
       chunk has no block below it, its ``S`` only feeds the final state;
    3. every block below the diagonal blocks, labelled with the scalar decay that carries chunk
       ``j``'s state across the chunks between (``chunk_decay``): a recurrence over chunks;
    4. for each chunk ``i``, the rows left of its diagonal block: the entering state
       ``h_{into i}`` read out at every step (``left``).

    Returns ``(fig, data)``; ``data``: the keys of :func:`ssd_matrix_example` and of
    :func:`chunked_factors`, ``steps`` (:data:`CHUNK_STEPS`). Raises ValueError as
    :func:`~minimamba_core.viz.ssd.plot_ssd_matrix`.
    """
    ex = ssd_matrix_example(decay, spread, length, d_state)
    check_int("chunk", chunk, 1, length)
    f = chunked_factors(ex, chunk)
    edges, M = f["boundaries"], ex["M"]
    below = np.abs(M[np.tri(length, dtype=bool)])
    vmax = max(np.quantile(below, 0.9), 1e-300)  # saturate the largest tenth: the small entries stay visible
    regions = (f["same_chunk"], ~f["same_chunk"] & np.tri(length, dtype=bool))  # step 1; steps 2-4
    fig, axes = plt.subplots(1, 4, figsize=(16, 4.8))
    for k, ax in enumerate(axes):
        lit = regions[0 if k == 0 else 1]
        ax.imshow(M, cmap="RdBu_r", vmin=-vmax, vmax=vmax, interpolation="nearest")
        veil = np.zeros((length, length, 4))
        veil[..., :3] = 1.0
        veil[..., 3] = np.where(lit, 0.0, 0.85)  # fade what this step does not compute
        ax.imshow(veil, interpolation="nearest")
        for e in edges[1:-1]:
            ax.axhline(e - 0.5, color="0.6", lw=0.5)
            ax.axvline(e - 0.5, color="0.6", lw=0.5)
        for n, (lo, hi) in enumerate(zip(edges[:-1], edges[1:])):
            box = dict(fill=False, ec="k", lw=1.6)
            if k == 0:
                ax.add_patch(Rectangle((lo - 0.5, lo - 0.5), hi - lo, hi - lo, **box))
            elif k == 1 and hi < length:  # the columns of chunk n, below its diagonal block
                ax.add_patch(Rectangle((lo - 0.5, hi - 0.5), hi - lo, length - hi, **box))
                ax.text((lo + hi - 1) / 2, hi - 1, f"$S_{n}$", ha="center", va="bottom", fontsize=10)
            elif k == 3 and lo > 0:  # the rows of chunk n, left of its diagonal block
                ax.add_patch(Rectangle((-0.5, lo - 0.5), lo, hi - lo, **box))
                ax.text(lo - 0.5, (lo + hi - 1) / 2, f"$h_{{\\mathrm{{into}}\\,{n}}}$ ", ha="right", va="center", fontsize=9,
                        bbox=dict(fc="white", ec="none", alpha=0.8, pad=0.5))
        if k == 2:
            for i in range(len(edges) - 1):
                for j in range(i):
                    ax.add_patch(Rectangle((edges[j] - 0.5, edges[i] - 0.5), edges[j + 1] - edges[j],
                                           edges[i + 1] - edges[i], fill=False, ec="k", lw=0.8))
                    ax.text((edges[j] + edges[j + 1] - 1) / 2, (edges[i] + edges[i + 1] - 1) / 2,
                            f"{f['chunk_decay'][i, j]:.2f}", ha="center", va="center", fontsize=9,
                            bbox=dict(fc="white", ec="none", alpha=0.8, pad=0.5))
        ax.set_title(CHUNK_STEPS[k] + (f"\n({BETWEEN_LABEL})" if k == 2 else ""), fontsize=11)
        ax.set_xticks([])
        ax.set_yticks([])
    axes[0].set_ylabel("output step t")
    for ax in axes:
        ax.set_xlabel("input step s")
    fig.suptitle(f"the chunked algorithm on M: |A| = {decay:g}, chunks of {chunk}", fontsize=12)
    fig.tight_layout()
    return fig, dict(ex, **f, steps=CHUNK_STEPS)


def plot_parameter_split(counts: dict):
    """Where a mixer's parameters go: one stacked horizontal bar per mixer, a segment per parameter.

    Args:
        counts: ``{mixer label: {parameter name: count}}``; a name shared by two mixers gets the
            same colour in both bars.

    Returns ``(fig, data)``; ``data``: ``labels``, ``names`` (every parameter name, first seen
    first), ``counts (len(labels), len(names))`` int64 (0 where a mixer has no such parameter),
    ``totals``, ``too_small`` (``{label: [names]}``, the nonzero segments under 1% of the longest bar,
    listed under the axis label). Raises ValueError for an empty ``counts`` or a negative count.
    """
    if not counts:
        raise ValueError("counts must name at least one mixer")
    labels = list(counts)
    names = list(dict.fromkeys(name for per in counts.values() for name in per))
    table = np.array([[counts[label].get(name, 0) for name in names] for label in labels], dtype=np.int64)
    if (table < 0).any():
        raise ValueError("parameter counts must be >= 0")
    totals = table.sum(axis=1)
    fig, ax = plt.subplots(figsize=(9, 2.2 + 0.5 * len(labels)))
    left = np.zeros(len(labels))
    for j, name in enumerate(names):
        ax.barh(labels, table[:, j], left=left, label=name, color=f"C{j % 10}")
        for i in range(len(labels)):
            if table[i, j] > 0.06 * totals.max():  # label the segments wide enough to hold it
                ax.text(left[i] + table[i, j] / 2, i, name, ha="center", va="center", fontsize=8, color="white")
        left += table[:, j]
    ax.set(xlabel="parameters per layer", title="where the parameters of one mixer go")
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:,.0f}"))  # 20,000 rather than 20000
    too_small = {label: [name for j, name in enumerate(names) if 0 < table[i, j] < 0.01 * totals.max()]
                 for i, label in enumerate(labels)}
    caption = "; ".join(f"{label}: {', '.join(small)}" for label, small in too_small.items() if small)
    if caption:  # under the axis label, inside the layout
        ax.set_xlabel(f"parameters per layer\n(too small to see: {caption})")
    ax.invert_yaxis()
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1))
    fig.tight_layout()
    return fig, dict(labels=labels, names=names, counts=table, totals=totals, too_small=too_small)


def _moving_average(values, window: int) -> np.ndarray:
    v = np.asarray(values, dtype=np.float64)
    w = max(1, min(int(window), len(v)))
    csum = np.cumsum(np.insert(v, 0, 0.0))
    return np.array([(csum[i + 1] - csum[max(0, i + 1 - w)]) / min(i + 1, w) for i in range(len(v))])


def plot_loss_comparison(runs: dict, baselines: dict | None = None, smooth: int = 20, title: str = "training"):
    """Training runs in one plot: each run's smoothed training loss (line) and validation loss (dots).

    Args:
        runs: ``{label: {"step": [...], "train_loss": [...], "eval_step": [...], "val_loss": [...]}}``.
        baselines: ``{"bigram": 2.48, ...}`` drawn as dashed horizontal lines.
        smooth: moving-average window for the training losses.

    Returns ``(fig, data)``; ``data``: ``smoothed`` and ``final_val`` (the last validation loss),
    each ``{label: ...}``. Raises ValueError for no runs, lists that do not pair up, or a run
    without a validation point.
    """
    if not runs:
        raise ValueError("runs must hold at least one run")
    fig, ax = plt.subplots(figsize=(7.5, 3.8))
    smoothed, final_val = {}, {}
    for k, (label, run) in enumerate(runs.items()):
        steps, train_loss, eval_steps, val = (run[key] for key in ("step", "train_loss", "eval_step", "val_loss"))
        if len(steps) != len(train_loss) or len(eval_steps) != len(val) or not len(val):
            raise ValueError(f"run {label!r}: step/train_loss and eval_step/val_loss must pair up; "
                             "need >= 1 validation point")
        smoothed[label] = _moving_average(train_loss, smooth)
        final_val[label] = float(val[-1])
        ax.plot(steps, smoothed[label], color=f"C{k}", lw=1.2, label=f"{label}: train (moving average)")
        ax.plot(eval_steps, val, "o--", color=f"C{k}", ms=4, lw=0.8, label=f"{label}: validation")
    for j, (name, value) in enumerate((baselines or {}).items()):
        ax.axhline(value, color="0.5", ls=(0, (4, 2 + j)), lw=0.9)
        ax.text(ax.get_xlim()[1], value, f" {name}", va="center", fontsize=8, color="0.4")
    ax.set(xlabel="optimizer step", ylabel="nats per character", title=title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig, dict(smoothed=smoothed, final_val=final_val)

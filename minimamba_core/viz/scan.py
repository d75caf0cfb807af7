"""Plots of notebooks 03 and 04: the sequential scan traced step by step, and parallel scans as
schedules (Hillis-Steele, Blelloch, the package's chunked scan) drawn level by level.

Each plot returns ``(fig, data)``; tests/test_viz.py asserts on ``data``.
"""

from __future__ import annotations

from typing import Callable

import matplotlib.pyplot as plt
import numpy as np
import torch
import torch.nn.functional as F

from ..scan import selective_scan_sequential
from .widgets import check_choice, check_int

SCAN_ALGORITHMS = ("hillis-steele", "blelloch", "chunked")


# -- 03: the sequential scan --------------------------------------------------------------------

def scan_trace_example(length: int = 40, d_inner: int = 4, d_state: int = 6, seed: int = 0) -> dict:
    """The seeded scan inputs behind :func:`plot_scan_trace`, float64, batch 1 (notebook 03).

    ``x (1, l, d)`` smooth waves plus noise; ``delta (1, l, d)`` raw, with ``delta_bias (d,)`` set so
    that after the softplus channel ``d`` has a typical step of ``0.05 * 3**d``; ``A (d, N)`` = -(1..N)
    (S4D-Real); ``B, C (1, l, N)`` standard normal. No ``D`` skip and no gate.
    """
    g = torch.Generator().manual_seed(seed)
    f64 = torch.float64
    t = torch.arange(length, dtype=f64)[:, None]  # (l, 1)
    phase = torch.arange(d_inner, dtype=f64)[None, :]  # (1, d)
    x = torch.sin(t / 4.0 + phase) + 0.3 * torch.randn(length, d_inner, generator=g, dtype=f64)
    target = 0.05 * 3.0 ** torch.arange(d_inner, dtype=f64)  # (d,) typical delta per channel
    return dict(
        x=x[None],  # (1, l, d)
        delta=0.5 * torch.randn(1, length, d_inner, generator=g, dtype=f64),  # (1, l, d) before bias
        delta_bias=target + torch.log(-torch.expm1(-target)),  # (d,) softplus^-1(target)
        A=-torch.arange(1, d_state + 1, dtype=f64).expand(d_inner, d_state).clone(),  # (d, N)
        B=torch.randn(1, length, d_state, generator=g, dtype=f64),  # (1, l, N)
        C=torch.randn(1, length, d_state, generator=g, dtype=f64),  # (1, l, N)
    )


def plot_scan_trace(channel: int = 0, state: int = 0):
    """One channel and one state of the selective scan over time (notebook 03).

    Runs the recurrence of paper Algorithm 2 (``A_bar = exp(delta A)``, ``B_bar = delta B``) on
    :func:`scan_trace_example` and draws ``x_t`` with ``delta_t`` of ``channel``, the state
    ``h_t[channel, state]``, and the output ``y_t[channel] = C_t . h_t[channel]``.

    Returns ``(fig, data)``; ``data``: ``x, delta, h, y (l,)`` for the chosen channel/state,
    ``u (l,)`` the term ``delta_t B_t x_t`` added to that state at each step,
    ``y_package (l,)`` (``selective_scan_sequential``'s output for that channel), ``A`` (float).

    Raises ValueError: ``channel`` not in ``[0, 3]`` or ``state`` not in ``[0, 5]``.
    """
    ex = scan_trace_example()
    d_inner, d_state = ex["A"].shape
    check_int("channel", channel, 0, d_inner - 1)
    check_int("state", state, 0, d_state - 1)
    delta = F.softplus(ex["delta"] + ex["delta_bias"])[0, :, channel]  # (l,)
    x = ex["x"][0, :, channel]  # (l,)
    A = ex["A"][channel]  # (N,)
    h = torch.zeros_like(A)  # (N,)
    hs, us, ys = [], [], []
    for t in range(x.shape[0]):
        u = delta[t] * ex["B"][0, t] * x[t]  # (N,)  B_bar_t x_t
        h = torch.exp(delta[t] * A) * h + u  # (N,)  eq. 2a
        hs.append(h[state])
        us.append(u[state])
        ys.append(torch.dot(ex["C"][0, t], h))  # eq. 2b
    y_package = selective_scan_sequential(ex["x"], ex["delta"], ex["A"], ex["B"], ex["C"],
                                          delta_bias=ex["delta_bias"], delta_softplus=True)
    data = dict(x=x.numpy(), delta=delta.numpy(), h=torch.stack(hs).numpy(), u=torch.stack(us).numpy(),
                y=torch.stack(ys).numpy(),
                y_package=y_package[0, :, channel].numpy(), A=float(A[state]))

    t = np.arange(x.shape[0])
    fig, axes = plt.subplots(3, 1, figsize=(10, 6), sharex=True)
    axes[0].plot(t, data["x"], color="0.35", label=r"$x_t$")
    axes[0].set_ylabel(r"$x_t$")
    ax_d = axes[0].twinx()
    ax_d.plot(t, data["delta"], color="C3", label=r"$\Delta_t$")
    ax_d.set_ylabel(r"$\Delta_t$", color="C3")
    axes[0].set_title(rf"channel {channel}: input and step size (typical $\Delta$ = {0.05 * 3 ** channel:.2f})")
    axes[1].bar(t, data["u"], color="0.8", width=0.7, label=r"$\bar B_t x_t$ added at this step")
    axes[1].plot(t, data["h"], "o-", ms=3, color="C0", label=r"state $h_t$")
    axes[1].axhline(0.0, color="0.8", lw=0.8)
    axes[1].legend(loc="upper right", fontsize=8)
    axes[1].set_ylabel(rf"$h_t$[{channel}, {state}]")
    axes[1].set_title(rf"state {state} (A = {data['A']:.0f}): decays by $e^{{\Delta_t A}}$ each step")
    axes[2].plot(t, data["y_package"], color="C2", lw=3, alpha=0.5, label="mm.selective_scan_sequential")
    axes[2].plot(t, data["y"], "k.", ms=4, label=r"$C_t \cdot h_t$ (this loop)")
    axes[2].set_ylabel(rf"$y_t$[{channel}]")
    axes[2].set_xlabel("time t")
    axes[2].legend(loc="upper right", fontsize=8)
    fig.tight_layout()
    return fig, data


# -- 04: parallel scans as schedules ------------------------------------------------------------

def scan_schedule(algorithm: str, length: int, chunk: int = 4) -> list[tuple[str, list]]:
    """The levels of an inclusive parallel scan, as data (notebook 04).

    Returns a list of ``(name, ops)`` levels, level 0 being the input (no ops). Each op is
    ``(dst, sources)``: position ``dst`` becomes the combination, left to right with the
    associative operator, of ``sources``, a tuple of ``(level, position)``; ``()`` is the
    identity. Positions without an op keep their value. All ops of one level run at once.

    * ``"hillis-steele"``: level ``j`` combines position ``i`` with ``i - 2**(j-1)``; any length.
    * ``"blelloch"``: up-sweep, clear the root, down-sweep (an exclusive scan), then one
      elementwise step to make it inclusive; ``length`` a power of two.
    * ``"chunked"``: the summarized schedule of the package's scan (``fast_scan/chunked.py``) with chunks of
      ``chunk`` steps: every chunk's summary in one level (the package computes it without a
      loop, from cumulative sums of ``delta``), the chunk summaries scanned one after another (the
      package does that in groups of ``chunk``, recursively), then every chunk runs its steps
      from the state entering it, all chunks at once. A chunk's last position is already final
      after the summaries and is not redrawn.

    Raises ValueError: unknown ``algorithm``; ``length`` < 1; Blelloch with a length that is not
    a power of two; ``chunk`` < 2.
    """
    check_choice("algorithm", algorithm, SCAN_ALGORITHMS)
    check_int("length", length, 1, 4096)
    check_int("chunk", chunk, 2, 4096)
    L = length
    levels: list[tuple[str, list]] = [("input", [])]

    def prev():
        return len(levels) - 1

    def add(name, ops):
        if ops:  # a level that writes nothing is not a level
            levels.append((name, ops))

    if algorithm == "hillis-steele":
        s = 1
        while s < L:
            p = prev()
            levels.append((f"stride {s}", [(i, ((p, i - s), (p, i))) for i in range(s, L)]))
            s *= 2
    elif algorithm == "blelloch":
        if L & (L - 1):
            raise ValueError(f"length must be a power of two for blelloch, got {L}")
        s = 1
        while s < L:
            p = prev()
            levels.append((f"up, stride {s}", [(i + 2 * s - 1, ((p, i + s - 1), (p, i + 2 * s - 1)))
                                               for i in range(0, L, 2 * s)]))
            s *= 2
        levels.append(("clear root", [(L - 1, ())]))
        s = L // 2
        while s >= 1:
            p = prev()
            ops = []
            for i in range(0, L, 2 * s):
                left, right = i + s - 1, i + 2 * s - 1
                ops.append((left, ((p, right),)))  # the prefix before this block moves left
                ops.append((right, ((p, right), (p, left))))  # ... and absorbs the left half
            levels.append((f"down, stride {s}", ops))
            s //= 2
        p = prev()
        levels.append(("inclusive", [(i, ((p, i), (0, i))) for i in range(L)]))
    else:
        T = chunk
        n_chunks = -(-L // T)
        ends = [min(c * T + T - 1, L - 1) for c in range(n_chunks)]
        add("chunk sums", [(ends[c], tuple((0, i) for i in range(c * T, ends[c] + 1)))
                           for c in range(n_chunks) if ends[c] > c * T])
        for c in range(1, n_chunks):  # the summaries, one after another: the state after chunk c
            p = prev()
            add(f"chunk ends, step {c}", [(ends[c], ((p, ends[c - 1]), (p, ends[c])))])
        for j in range(T - 1):  # every chunk's own steps, from the state entering it
            p = prev()
            ops = []
            for c in range(n_chunks):
                i = c * T + j
                if i >= ends[c] or (j == 0 and c == 0):  # already final
                    continue
                ops.append((i, ((p, ends[c - 1] if j == 0 else i - 1), (p, i))))  # (p, i) is still x_i
            add(f"in chunks, step {j + 1}", ops)
    return levels


def scan_depth(algorithm: str, length: int, chunk: int = 4) -> int:
    """The number of levels of :func:`scan_schedule` after the input: the last ``level`` to draw.

    Blelloch: ``2 log2 L + 2`` (up-sweep, clear the root, down-sweep, the inclusive step).
    """
    return len(scan_schedule(algorithm, length, chunk)) - 1


def level_slider(algorithm, length, value: int = 1, description: str = "level"):
    """An ``ipywidgets.IntSlider`` for :func:`plot_scan_tree`'s ``level``, from 0 to the last level.

    ``algorithm`` and ``length`` are the widget controls (dropdowns) of the other two arguments:
    whenever either changes, the slider's ``max`` becomes :func:`scan_depth` of the new choice
    (ipywidgets then pulls a value past it back to the last level), so the slider never runs past
    the picture.
    """
    import ipywidgets  # only a widget needs it

    slider = ipywidgets.IntSlider(value=0, min=0, max=scan_depth(algorithm.value, length.value),
                                  step=1, description=description)
    slider.value = min(value, slider.max)

    def follow(_change=None):
        slider.max = scan_depth(algorithm.value, length.value)

    algorithm.observe(follow, names="value")
    length.observe(follow, names="value")
    return slider


def run_schedule(levels: list[tuple[str, list]], inputs: list, combine: Callable, identity) -> list[list]:
    """Values at every level of a :func:`scan_schedule` for ``inputs`` (a list of length ``L``).

    ``combine(p, q)`` is the associative operator (``p`` first), ``identity`` its neutral
    element. Returns one list of ``L`` values per level (level 0 is ``inputs``).
    """
    values = [list(inputs)]
    for _, ops in levels[1:]:
        new = list(values[-1])
        for dst, sources in ops:
            acc = identity
            for lev, pos in sources:
                acc = combine(acc, values[lev][pos])
            new[dst] = acc
        values.append(new)
    return values


def combine_ranges(p, q):
    """The operator on index ranges ``(lo, hi)``; ``None`` is the empty range (the identity).

    Run through :func:`run_schedule` on the inputs ``(i, i)``, it shows which inputs each
    position has combined (what :func:`plot_scan_tree` draws).
    """
    if p is None:
        return q
    if q is None:
        return p
    assert p[1] + 1 == q[0], f"combining non-adjacent ranges {p} and {q}"
    return (p[0], q[1])


def plot_scan_tree(algorithm: str = "hillis-steele", length: int = 8, level: int = 3):
    """A parallel scan drawn level by level: which inputs each position has combined (notebook 04).

    Each box shows the range ``lo:hi`` of inputs folded into that position so far (``-`` is the
    identity); arrows show the combines, the current ``level`` highlighted, later levels hidden.
    ``level`` is clamped to the algorithm's number of levels.

    Returns ``(fig, data)``; ``data``: ``level`` (clamped), ``n_levels``, ``names`` (level names),
    ``ranges`` (per level, ``L`` entries ``(lo, hi)`` or ``None``), ``written`` (positions written at
    ``level``), ``work`` (combines up to ``level``), ``work_total``, ``depth`` (levels).

    Raises ValueError: as :func:`scan_schedule`, or ``level`` < 0.
    """
    levels = scan_schedule(algorithm, length)
    check_int("level", level, 0, 10**6)
    n_levels = len(levels) - 1
    requested, level = level, min(level, n_levels)
    ranges = run_schedule(levels, [(i, i) for i in range(length)], combine_ranges, None)
    counts = [sum(max(len(src) - 1, 0) for _, src in ops) for _, ops in levels]  # combines per level
    written = sorted(dst for dst, _ in levels[level][1])

    fig, ax = plt.subplots(figsize=(0.62 * length + 1.8, 0.5 * n_levels + 1.6))
    for lev in range(level + 1):
        for dst, sources in levels[lev][1]:
            for slev, spos in sources:
                current = lev == level
                ax.annotate("", xy=(dst, -lev + 0.18), xytext=(spos, -slev - 0.18),
                            arrowprops=dict(arrowstyle="-|>", lw=1.6 if current else 0.7,
                                            color="C3" if current else "0.6", shrinkA=0, shrinkB=0))
    for lev in range(level + 1):
        for i, r in enumerate(ranges[lev]):
            label = "-" if r is None else (f"{r[0]}" if r[0] == r[1] else f"{r[0]}:{r[1]}")
            hot = lev == level and i in written
            ax.text(i, -lev, label, ha="center", va="center", fontsize=7.5,
                    bbox=dict(boxstyle="round,pad=0.25", fc="#ffd9a0" if hot else "white",
                              ec="C3" if hot else "0.5", lw=0.8))
    ax.set_yticks([-lev for lev in range(n_levels + 1)])
    ax.set_yticklabels([name for name, _ in levels], fontsize=8)
    ax.set_xticks(range(length))
    ax.set_xlim(-0.7, length - 0.3)
    ax.set_ylim(-n_levels - 0.6, 0.6)
    ax.set_xlabel("position i")
    for side in ("top", "right", "left"):
        ax.spines[side].set_visible(False)
    work = sum(counts[: level + 1])
    asked = f" (slider at {requested}: past the last level)" if requested > n_levels else ""
    ax.set_title(f"{algorithm}, L = {length}: level {level} of {n_levels}{asked}, "
                 f"{work} of {sum(counts)} combines done", fontsize=10)
    fig.tight_layout()
    data = dict(level=level, n_levels=n_levels, names=[name for name, _ in levels], ranges=ranges,
                written=written, work=work, work_total=sum(counts), depth=n_levels)
    return fig, data

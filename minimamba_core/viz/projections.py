"""Plot of notebook 02, section 3: what ``B`` writes into the state and what ``C`` reads from it.

One channel of a diagonal SSM with ``N`` states, ``A_n = -n`` (S4D-Real, notebook 01) and a fixed
step ``delta``, with the package's rule ``A_bar_n = exp(delta A_n)``, ``B_bar_t = delta B_t``
(Gu & Dao 2023, Algorithm 2; the official ``selective_scan_ref``):

    h_t[n] = A_bar_n h_{t-1}[n] + delta B_t[n] x_t,        y_t = sum_n C[n] h_t[n].

``B`` and ``C`` are bumps over the state index centred on ``write`` and ``read``; ``B_t`` is zero
at the token ``skip`` (a selective ``B_t``: that token is not written). :func:`write_read` runs it,
:func:`plot_write_read` draws it and returns ``(fig, data)``; tests/test_viz_projections.py
asserts on ``data``. No official counterpart (a visualization).
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np

from .ssm import selection_signal
from .widgets import check_int, check_positive


def state_bump(center: int, d_state: int, width: float = 1.0) -> np.ndarray:
    """``exp(-(n - center)^2 / (2 width^2))`` for ``n = 1 .. d_state``: ``(d_state,)`` float64, peak 1."""
    n = np.arange(1, d_state + 1, dtype=np.float64)
    return np.exp(-((n - center) ** 2) / (2.0 * width ** 2))


def write_read(x: np.ndarray, B_t: np.ndarray, C: np.ndarray, delta: float) -> tuple[np.ndarray, np.ndarray]:
    """States and outputs of ``h_t = exp(delta A) h_{t-1} + delta B_t x_t``, ``y_t = C h_t``, ``A_n = -n``.

    ``x (L,)``, ``B_t (L, N)``, ``C (N,)``, ``delta > 0``; ``h_{-1} = 0``. Returns ``h (N, L)`` and
    ``y (L,)``, float64. Equals ``mm.selective_scan_sequential`` with ``d_inner = 1`` (tests).
    """
    check_positive("delta", delta)
    x, B_t, C = (np.asarray(v, dtype=np.float64) for v in (x, B_t, C))
    A = -np.arange(1.0, C.shape[0] + 1.0)  # (N,)  S4D-Real
    A_bar = np.exp(delta * A)  # (N,)
    h, hs = np.zeros_like(A), []
    for t in range(x.shape[0]):
        h = A_bar * h + delta * B_t[t] * x[t]  # (N,)  write: B_t says where x_t goes
        hs.append(h)
    h = np.stack(hs, axis=1)  # (N, L)
    return h, C @ h  # (N, L), (L,)  read: C says which states y_t sees


def plot_write_read(write: int = 2, read: int = 2, skip: int = 13, delta: float = 0.1,
                    signal: str = "pulses", length: int = 48, d_state: int = 8):
    """Input, states and output of one channel whose ``B`` writes around state ``write`` and whose
    ``C`` reads around state ``read``; ``B_t = 0`` at token ``skip``.

    Returns ``(fig, data)``; ``data``: ``x (L,)``, ``B (N,)``, ``C (N,)``, ``B_t (L, N)``,
    ``h (N, L)``, ``y (L,)``, ``horizons (N,)`` = ``1 / (delta n)`` steps.
    Raises ValueError: ``write``/``read`` not in ``[1, d_state]``, ``skip`` not in ``[0, length)``,
    ``delta <= 0``, an unknown ``signal``.
    """
    check_int("d_state", d_state, 1, 256)
    check_int("length", length, 1, 10000)
    check_int("write", write, 1, d_state)
    check_int("read", read, 1, d_state)
    check_int("skip", skip, 0, length - 1)
    check_positive("delta", delta)
    x = selection_signal(signal, length)  # (L,)
    B, C = state_bump(write, d_state), state_bump(read, d_state)  # (N,), (N,)
    B_t = np.tile(B, (length, 1))  # (L, N)
    B_t[skip] = 0.0  # the token at `skip` is not written
    h, y = write_read(x, B_t, C, delta)  # (N, L), (L,)
    horizons = 1.0 / (delta * np.arange(1.0, d_state + 1.0))  # (N,)

    fig = plt.figure(figsize=(10, 5.6), constrained_layout=True)
    grid = fig.add_gridspec(2, 2, width_ratios=[4, 1], height_ratios=[1, 1.3])
    ax_x, ax_h = fig.add_subplot(grid[0, 0]), fig.add_subplot(grid[1, 0])
    ax_bc = fig.add_subplot(grid[1, 1], sharey=ax_h)
    t = np.arange(length)
    ax_x.bar(t, x, color="0.45", width=0.8, label=r"input $x_t$")
    ax_x.plot(t, y / max(np.abs(y).max(), 1e-12) * np.abs(x).max(), color="C1", lw=2,
              label=r"output $y_t = C h_t$ (scaled)")
    ax_x.axvline(skip, color="C3", ls=":", lw=1.2)
    ax_x.set_title(rf"$B$ writes near state {write}, $C$ reads near state {read}, $B_t = 0$ at token {skip}",
                   fontsize=10)
    ax_x.legend(loc="upper right", fontsize=8)
    v = max(np.abs(h).max(), 1e-12)
    ax_h.imshow(h, aspect="auto", cmap="RdBu_r", vmin=-v, vmax=v, interpolation="nearest",
                extent=(-0.5, length - 0.5, d_state + 0.5, 0.5))
    ax_h.axvline(skip, color="C3", ls=":", lw=1.2)
    ax_h.set_xlabel("token t")
    ax_h.set_ylabel(r"state n  ($A_n = -n$)")
    ax_h.set_title(r"states $h_t$", fontsize=10)
    n = np.arange(1, d_state + 1)
    ax_bc.barh(n - 0.2, B, height=0.4, color="C0", label="B (write)")
    ax_bc.barh(n + 0.2, C, height=0.4, color="C1", label="C (read)")
    ax_bc.set_xlabel("weight")
    ax_bc.legend(loc="lower right", fontsize=8)
    ax_bc.set_title(rf"$\Delta$ = {delta:g}: horizons {horizons[0]:.0f} to {horizons[-1]:.1f} steps", fontsize=9)
    data = dict(x=x, B=B, C=C, B_t=B_t, h=h, y=y, horizons=horizons)
    return fig, data

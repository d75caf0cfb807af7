"""Plot of notebook 00: one scalar state space model reading an input, step by step.

:func:`scalar_ssm` runs ``h_t = A_bar h_{t-1} + B_bar x_t``, ``y_t = C h_t`` with the package's
rule (``A_bar = exp(delta A)`` exact, ``B_bar = delta`` for ``B = 1``: the Euler rule for the
input term, as ``mm.selective_scan_*`` and the official ``selective_scan_ref``); notebook 01
derives the discretization, notebook 02 explains the ``B_bar`` rule. :func:`plot_state_evolution`
draws it and returns ``(fig, data)``; tests/test_viz_intro.py asserts on ``data``.
No official counterpart (a visualization).
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np

from .ssm import selection_signal
from .widgets import check_int, check_positive


def scalar_ssm(x: np.ndarray, delta: float, A: float, C: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """States and outputs of the scalar SSM ``h_t = exp(delta A) h_{t-1} + delta x_t``, ``y_t = C h_t``.

    ``x (L,)`` float; ``delta > 0``; ``A < 0``; ``C`` any number; ``h_{-1} = 0``.
    Returns ``h (L,)`` and ``y (L,)``, float64. Raises ValueError: ``delta <= 0`` or ``A >= 0``.
    Equals ``mm.selective_scan_sequential`` with ``d_inner = N = 1``, ``B = 1`` (tests/test_viz_intro.py).
    """
    check_positive("delta", delta)
    if isinstance(A, bool) or not isinstance(A, (int, float)) or not A < 0:
        raise ValueError(f"A must be a number < 0 (a stable system), got {A!r}")
    x = np.asarray(x, dtype=np.float64)  # (L,)
    A_bar, B_bar = float(np.exp(delta * A)), float(delta)  # exact A_bar; Euler B_bar = delta * B, B = 1
    h, hs = 0.0, []
    for x_t in x:
        h = A_bar * h + B_bar * x_t  # the recurrence, one step
        hs.append(h)
    h = np.asarray(hs, dtype=np.float64)  # (L,)
    return h, C * h


def plot_state_evolution(delta: float = 0.5, A: float = -1.0, C: float = 1.5, signal: str = "pulses",
                         length: int = 48):
    """A scalar SSM reading ``signal``: the input ``x_t`` (top), the state ``h_t`` and output ``y_t``.

    ``delta`` the step size, ``A < 0`` the state's decay, ``C`` the read-out; ``signal`` one of
    ``"pulses"``, ``"steps"``, ``"noise"`` (:func:`~minimamba_core.viz.selection_signal`).
    Returns ``(fig, data)``; ``data``: ``x, h, y (length,)``, ``A_bar``, ``B_bar``, ``memory_steps``
    (``1 / (delta |A|)``, the steps for ``A_bar^k`` to fall to ``1/e``).
    Raises ValueError: as :func:`scalar_ssm`, an unknown ``signal``, ``length`` not in ``[1, 10000]``.
    """
    check_int("length", length, 1, 10000)
    x = selection_signal(signal, length)  # (L,)
    h, y = scalar_ssm(x, delta, A, C)  # (L,), (L,)
    A_bar, B_bar = float(np.exp(delta * A)), float(delta)
    memory = 1.0 / (delta * abs(A))

    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(9, 4.6), sharex=True, constrained_layout=True,
                                   gridspec_kw=dict(height_ratios=[1, 1.6]))
    t = np.arange(length)
    ax1.bar(t, x, color="0.45", width=0.8)
    ax1.set_ylabel(r"input $x_t$")
    ax1.set_title(rf"$\bar A = e^{{\Delta A}}$ = {A_bar:.3f},  $\bar B = \Delta$ = {B_bar:.2f};  "
                  f"memory ~ {memory:.1f} steps")
    ax2.plot(t, h, "o-", ms=3, color="C0", label=r"state $h_t$")
    ax2.plot(t, y, "-", lw=2, color="C1", alpha=0.8, label=rf"output $y_t = C h_t$ (C = {C:g})")
    ax2.axhline(0.0, color="0.8", lw=0.8)
    ax2.set_xlabel("token t")
    ax2.legend(loc="upper right", fontsize=8)
    data = dict(x=x, h=h, y=y, A_bar=A_bar, B_bar=B_bar, memory_steps=memory)
    return fig, data


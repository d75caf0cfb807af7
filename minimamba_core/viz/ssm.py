"""Plots of notebooks 01 and 02: discretizing a scalar SSM, and what selection keeps.

Each takes the widget's plain values, builds its own small seeded example, and returns
``(fig, data)``: ``data`` holds the numbers drawn (numpy float64 arrays, floats, lists), so
tests/test_viz.py asserts on them. Controls: see each notebook's widget cell.
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np

from .widgets import check_choice, check_int, check_positive

DISCRETIZATIONS = ("zoh", "euler", "bilinear")
SELECTION_SIGNALS = ("pulses", "steps", "noise")
B_BAR_RULES = ("zoh", "euler")


# -- 01: discretization -------------------------------------------------------------------------

def discretize_scalar(delta: float, A: float, B: float = 1.0, method: str = "zoh") -> tuple[float, float]:
    """``(A_bar, B_bar)`` of the scalar SSM ``h'(t) = A h(t) + B x(t)`` for the step ``delta``.

    * ``"zoh"``: ``A_bar = exp(delta A)``, ``B_bar = (delta A)^-1 (exp(delta A) - 1) delta B``
      (paper eq. 4, Gu & Dao 2023);
    * ``"euler"``: ``A_bar = 1 + delta A``, ``B_bar = delta B``;
    * ``"bilinear"``: ``A_bar = (1 + delta A / 2) / (1 - delta A / 2)``,
      ``B_bar = delta B / (1 - delta A / 2)`` (S4, Gu et al. 2022, eq. 3).

    Raises ValueError: ``delta <= 0``, ``A >= 0`` or an unknown ``method``. Notebook 01.
    """
    check_positive("delta", delta)
    if isinstance(A, bool) or not isinstance(A, (int, float)) or not A < 0:
        raise ValueError(f"A must be a number < 0 (a stable continuous system), got {A!r}")
    check_choice("method", method, DISCRETIZATIONS)
    dA = delta * A
    if method == "zoh":
        return float(np.exp(dA)), float(np.expm1(dA) / A * B)
    if method == "euler":
        return 1.0 + dA, delta * B
    return (1.0 + dA / 2) / (1.0 - dA / 2), delta * B / (1.0 - dA / 2)


def plot_discretization(delta: float = 0.5, A: float = -1.0, method: str = "zoh", length: int = 40):
    """Discrete convolution kernel and step response of ``h' = A h + x, y = h`` (notebook 01).

    Left: ``K_k / delta`` with ``K_k = C A_bar^k B_bar`` (``B = C = 1``) at ``t = k delta``,
    against the continuous impulse response ``exp(A t)``. Right: the discrete step response
    ``y_k = K_0 + ... + K_k`` at ``t = (k + 1) delta`` against the continuous one
    ``(exp(A t) - 1) / A``; zero-order hold lands on it exactly.

    Returns ``(fig, data)``; ``data``: ``A_bar, B_bar`` (floats), ``stable`` (``|A_bar| < 1``),
    ``memory_steps`` (steps for ``|A_bar|^k`` to fall to ``1/e``; ``inf`` when unstable),
    ``t (length,)`` = ``k delta``, ``kernel (length,)``, ``step (length,)``, ``step_exact (length,)``
    (continuous step response at ``(k + 1) delta``).

    Raises ValueError: as :func:`discretize_scalar`, or ``length`` not in ``[1, 10000]``.
    """
    A_bar, B_bar = discretize_scalar(delta, A, 1.0, method)
    check_int("length", length, 1, 10000)
    k = np.arange(length, dtype=np.float64)
    with np.errstate(over="ignore"):
        kernel = B_bar * A_bar ** k  # (length,)  K_k = C A_bar^k B_bar
    step = np.cumsum(kernel)  # (length,)  response to x_j = 1 for j >= 0
    step_exact = np.expm1(A * (k + 1) * delta) / A  # integral_0^t exp(A s) ds at t = (k+1) delta
    stable = abs(A_bar) < 1.0
    if not stable:
        memory = float("inf")
    elif A_bar == 0.0:
        memory = 0.0
    else:
        memory = float(-1.0 / np.log(abs(A_bar)))

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.6))
    t_fine = np.linspace(0.0, length * delta, 400)
    ax1.plot(t_fine, np.exp(A * t_fine), color="0.55", lw=2, label=r"continuous $C e^{At} B$")
    ax1.plot(k * delta, kernel / delta, "o-", ms=3.5, color="C0", label=r"discrete $K_k / \Delta$")
    ax1.axhline(0.0, color="0.8", lw=0.8)
    ax1.set_xlabel("time t")
    ax1.set_title(rf"{method}: $\bar A$ = {A_bar:.3f}, $\bar B$ = {B_bar:.3f}")
    ax2.plot(t_fine, np.expm1(A * t_fine) / A, color="0.55", lw=2, label="continuous")
    ax2.plot((k + 1) * delta, step, "o", ms=3.5, color="C1", label=f"discrete ({method})")
    ax2.set_xlabel("time t")
    if stable:
        ax2.set_title(f"step response; memory ~ {memory:.1f} steps")
    else:
        ax2.set_title(r"step response; unstable: $|\bar A| > 1$", color="C3")
        for ax, lim in ((ax1, 3.0), (ax2, 3.0 / abs(A))):
            ax.set_ylim(-lim, lim)
            ax.text(0.5, 0.06, rf"unstable: $|\bar A|$ = {abs(A_bar):.2f} > 1", color="C3",
                    transform=ax.transAxes, ha="center")
    ax1.legend(loc="upper right", fontsize=8)
    ax2.legend(loc="lower right" if stable else "center right", fontsize=8)
    fig.tight_layout()
    data = dict(A_bar=A_bar, B_bar=B_bar, stable=stable, memory_steps=memory, t=k * delta,
                kernel=kernel, step=step, step_exact=step_exact)
    return fig, data


# -- 02: selection ------------------------------------------------------------------------------

def selection_signal(signal: str = "pulses", length: int = 48) -> np.ndarray:
    """The demo inputs of notebook 02, ``(length,)`` float64: ``"pulses"`` (four spikes at
    4, 13, 22, 35), ``"steps"`` (+1 / -0.5 alternating every 12 tokens), ``"noise"`` (seeded)."""
    check_choice("signal", signal, SELECTION_SIGNALS)
    check_int("length", length, 1, 10000)
    t = np.arange(length)
    if signal == "pulses":
        x = np.zeros(length)
        for pos, value in zip((4, 13, 22, 35), (1.0, -0.7, 0.8, -1.0)):
            if pos < length:
                x[pos] = value
        return x
    if signal == "steps":
        return np.where((t // 12) % 2 == 0, 1.0, -0.5)
    return np.random.default_rng(0).normal(0.0, 0.6, length)


def diagonal_ssm_states(x: np.ndarray, delta: np.ndarray, A: np.ndarray, rule: str = "zoh") -> np.ndarray:
    """All states of ``h_t = A_bar_t h_{t-1} + B_bar_t x_t`` for a diagonal ``A`` and ``B = 1``.

    ``x, delta (L,)``, ``A (N,)`` negative; ``A_bar_t = exp(delta_t A)``; ``B_bar_t`` is the exact
    ZOH ``(exp(delta_t A) - 1) / A`` (``rule="zoh"``) or the Euler ``delta_t`` (``"euler"``, the
    package's and the official code's rule). Returns ``h (N, L)``, float64. Notebook 02.
    """
    check_choice("rule", rule, B_BAR_RULES)
    x, delta, A = (np.asarray(v, dtype=np.float64) for v in (x, delta, A))
    A_bar = np.exp(delta[:, None] * A[None, :])  # (L, N)
    B_bar = np.expm1(delta[:, None] * A[None, :]) / A[None, :] if rule == "zoh" else \
        np.broadcast_to(delta[:, None], A_bar.shape)  # (L, N)
    h = np.zeros(A.shape[0])  # (N,)
    hs = []
    for t in range(x.shape[0]):
        h = A_bar[t] * h + B_bar[t] * x[t]  # (N,)
        hs.append(h)
    return np.stack(hs, axis=1) if hs else np.zeros((A.shape[0], 0))  # (N, L)


def plot_selection(signal: str = "pulses", pick: int = 22, delta_low: float = 0.05,
                   delta_high: float = 3.0, rule: str = "zoh", length: int = 48, d_state: int = 8):
    """What an LTI SSM (S4) and a selective one (S6) keep of the same input (notebook 02).

    Both run ``d_state`` states with ``A_n = -n`` (S4D-Real) and ``B = 1``. S4 uses one step
    ``delta_low`` for every token; S6 uses ``delta_low`` everywhere except ``delta_high`` at token
    ``pick``, standing in for a delta computed from the input. Top: ``x_t`` and ``delta_t``;
    middle and bottom: heatmaps of the states ``h_t`` (state index against time).

    Returns ``(fig, data)``; ``data``: ``x (L,)``, ``delta_s4 (L,)``, ``delta_s6 (L,)``,
    ``A (N,)``, ``h_s4 (N, L)``, ``h_s6 (N, L)``.

    Raises ValueError: unknown ``signal`` or ``rule``, ``pick`` outside ``[0, length)``,
    non-positive deltas.
    """
    check_int("length", length, 1, 10000)
    check_int("pick", pick, 0, length - 1)
    check_int("d_state", d_state, 1, 256)
    check_positive("delta_low", delta_low)
    check_positive("delta_high", delta_high)
    x = selection_signal(signal, length)  # (L,)
    A = -np.arange(1, d_state + 1, dtype=np.float64)  # (N,)
    delta_s4 = np.full(length, float(delta_low))  # (L,)
    delta_s6 = delta_s4.copy()
    delta_s6[pick] = delta_high
    h_s4 = diagonal_ssm_states(x, delta_s4, A, rule)  # (N, L)
    h_s6 = diagonal_ssm_states(x, delta_s6, A, rule)

    fig, axes = plt.subplots(3, 1, figsize=(10, 6.6), sharex=True, constrained_layout=True,
                             gridspec_kw=dict(height_ratios=[1, 1.3, 1.3]))
    t = np.arange(length)
    axes[0].bar(t, x, color="0.45", width=0.8, label=r"input $x_t$")
    axes[0].set_ylabel(r"$x_t$")
    ax_d = axes[0].twinx()
    ax_d.semilogy(t, delta_s6, "o-", color="C3", ms=3, label=r"S6 $\Delta_t$")
    ax_d.semilogy(t, delta_s4, "--", color="C0", label=r"S4 $\Delta$")
    ax_d.set_ylim(min(delta_low, delta_high) / 3, max(delta_low, delta_high) * 3)
    ax_d.set_ylabel(r"$\Delta_t$")
    ax_d.legend(loc="upper right", fontsize=8)
    axes[0].set_title(f"input '{signal}', B_bar rule: {rule}")
    vmax = max(np.abs(h_s4).max(), np.abs(h_s6).max(), 1e-12)
    for ax, h, name in ((axes[1], h_s4, "S4 (fixed delta)"), (axes[2], h_s6, "S6 (delta per token)")):
        im = ax.imshow(h, aspect="auto", cmap="RdBu_r", vmin=-vmax, vmax=vmax, interpolation="nearest",
                       extent=(-0.5, length - 0.5, d_state + 0.5, 0.5))
        ax.axvline(pick, color="k", ls=":", lw=1)
        ax.set_ylabel("state n  (A = -n)")
        ax.set_title(f"{name}: states h_t")
    axes[2].set_xlabel("token t")
    fig.colorbar(im, ax=list(axes[1:]), label=r"$h_t$")
    data = dict(x=x, delta_s4=delta_s4, delta_s6=delta_s6, A=A, h_s4=h_s4, h_s6=h_s6)
    return fig, data

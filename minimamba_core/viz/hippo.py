"""Plots of notebook 01, section 4: where ``A`` comes from.

* HiPPO-LegS (Gu, Dao, Ermon, Rudra, Ré 2020, "HiPPO: Recurrent Memory with Optimal Polynomial
  Projections", arXiv 2008.07669, Section 3, Theorem 2): a state ``c(t) (N,)`` that holds the coefficients
  of the input's whole past ``f(s), 0 <= s <= t`` in the Legendre polynomials, updated online by
  ``c'(t) = -(1/t) A c(t) + (1/t) B f(t)``. :func:`legs_matrices`, :func:`legs_states`,
  :func:`legendre_reconstruct`, :func:`plot_hippo_reconstruction`.
* Diagonal initializations of ``A`` (Gu, Gupta, Goel, Ré 2022, "On the Parameterization and
  Initialization of Diagonal State Space Models", arXiv 2206.11893): S4D-Real ``A_n = -(n + 1)``,
  which Mamba uses, against a constant and a random one; :func:`init_A`,
  :func:`plot_memory_horizons`.

Every plot returns ``(fig, data)``; tests/test_viz_hippo.py asserts on ``data``. No official
counterpart (the official S4 code builds the same LegS matrix in ``transition('legs', N)``).
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
from numpy.polynomial import legendre

from .widgets import check_choice, check_int, check_positive

HIPPO_SIGNALS = ("smooth", "steps")
A_INITS = ("s4d-real", "constant", "random")


# -- HiPPO-LegS ---------------------------------------------------------------------------------

def legs_matrices(N: int) -> tuple[np.ndarray, np.ndarray]:
    """HiPPO-LegS ``A (N, N)`` and ``B (N,)``, float64, in the paper's sign convention.

    ``A[n, k] = sqrt(2n+1) sqrt(2k+1)`` for ``n > k``, ``n + 1`` for ``n = k``, ``0`` for ``n < k``;
    ``B[n] = sqrt(2n+1)`` (HiPPO, Section 3, Theorem 2, eq. 3). The dynamics are
    ``c'(t) = -(1/t) A c(t) + (1/t) B f(t)``. Raises ValueError: ``N`` not in ``[1, 512]``.
    """
    check_int("N", N, 1, 512)
    r = np.sqrt(2.0 * np.arange(N) + 1.0)  # (N,)
    A = np.tril(np.outer(r, r), -1) + np.diag(np.arange(1.0, N + 1.0))  # (N, N)
    return A, r.copy()


def legs_states(f: np.ndarray, N: int) -> np.ndarray:
    """All states ``c_k (N,)`` of HiPPO-LegS reading ``f (L,)``, sample ``f_k`` held on ``[k, k+1)``.

    ``c_0 = f_0 e_0`` (a constant on ``[0, 1)`` has only a degree-0 coefficient); then each step
    from ``t = k`` to ``k + 1`` applies the bilinear rule of notebook 01 with ``1/t`` taken at the
    step's middle: ``(I + d A / 2) c_{k+1} = (I - d A / 2) c_k + d B f_k``, ``d = 1 / (k + 1/2)``.
    Returns ``c (L, N)``, float64: row ``k`` describes ``f`` on ``[0, k + 1)``.
    Raises ValueError: ``f`` not one-dimensional and non-empty, or a bad ``N``.
    """
    A, B = legs_matrices(N)
    f = np.asarray(f, dtype=np.float64)
    if f.ndim != 1 or f.shape[0] == 0:
        raise ValueError(f"f must be a non-empty 1-d array, got shape {f.shape}")
    I = np.eye(N)
    c = np.zeros(N)
    c[0] = f[0]
    out = [c]
    for k in range(1, f.shape[0]):
        d = 1.0 / (k + 0.5)
        c = np.linalg.solve(I + d / 2 * A, (I - d / 2 * A) @ c + d * B * f[k])  # (N,)
        out.append(c)
    return np.stack(out)  # (L, N)


def legendre_reconstruct(c: np.ndarray, s: np.ndarray) -> np.ndarray:
    """``sum_n c_n sqrt(2n+1) P_n(2s - 1)``: the function that coefficients ``c (N,)`` describe.

    ``s (S,)`` is the position as a fraction of the history read so far (``0`` the first sample,
    ``1`` now). ``P_n`` are the Legendre polynomials on ``[-1, 1]``; ``sqrt(2n+1) P_n(2s - 1)``
    are orthonormal on ``[0, 1]``. Returns ``(S,)``, float64.
    """
    c = np.asarray(c, dtype=np.float64)
    n = np.arange(c.shape[0])
    return legendre.legval(2.0 * np.asarray(s, dtype=np.float64) - 1.0, c * np.sqrt(2.0 * n + 1.0))


def hippo_signal(signal: str = "smooth", length: int = 400) -> np.ndarray:
    """The inputs of notebook 01's reconstruction, ``(length,)`` float64: ``"smooth"`` (two
    sinusoids under a slow decay) or ``"steps"`` (a piecewise-constant signal with three jumps)."""
    check_choice("signal", signal, HIPPO_SIGNALS)
    check_int("length", length, 2, 100000)
    u = np.arange(length) / length  # (L,) position in [0, 1)
    if signal == "smooth":
        return np.sin(6 * np.pi * u) * np.exp(-u) + 0.5 * np.cos(2.6 * np.pi * u)
    return np.select([u < 0.3, u < 0.55, u < 0.8], [0.5, -0.8, 1.0], -0.2)


def plot_hippo_reconstruction(N: int = 16, signal: str = "smooth", length: int = 400):
    """The input's whole past, read back from the final HiPPO-LegS state of size ``N``.

    Returns ``(fig, data)``; ``data``: ``f (L,)``, ``recon (L,)`` (the reconstruction at the
    sample midpoints ``s = (k + 1/2) / L``), ``c (N,)`` (the final state), ``rms`` (root mean
    square of ``recon - f``). Raises ValueError: as :func:`legs_states` and :func:`hippo_signal`.
    """
    f = hippo_signal(signal, length)  # (L,)
    c = legs_states(f, N)[-1]  # (N,) the state after reading all of f
    recon = legendre_reconstruct(c, (np.arange(length) + 0.5) / length)  # (L,)
    rms = float(np.sqrt(np.mean((recon - f) ** 2)))

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.4), gridspec_kw=dict(width_ratios=[2.2, 1]),
                                   constrained_layout=True)
    ax1.plot(f, color="0.55", lw=3, label=r"input $f$")
    ax1.plot(recon, color="C3", lw=1.5, label=f"read back from the state (N = {N})")
    ax1.set_xlabel("token k")
    ax1.set_title(f"the whole past from {N} numbers: rms error {rms:.2g}")
    fig.legend(*ax1.get_legend_handles_labels(), loc="outside lower left", ncol=2, fontsize=8)
    ax2.bar(np.arange(N), c, color="C0")
    ax2.axhline(0.0, color="0.6", lw=0.8)
    ax2.set_xlabel("state index n (Legendre degree)")
    ax2.set_title("the state $c$ after the last token", fontsize=10)
    return fig, dict(f=f, recon=recon, c=c, rms=rms)


# -- diagonal initializations -------------------------------------------------------------------

def init_A(init: str = "s4d-real", d_state: int = 8) -> np.ndarray:
    """A diagonal ``A (d_state,)``, float64, all entries negative.

    ``"s4d-real"``: ``A_n = -(n + 1)`` for ``n = 0 .. N-1`` (S4D-Real; Mamba's ``A_log = log(1..N)``);
    ``"constant"``: ``A_n = -1/2`` (the real part of S4D-Lin's ``-1/2 + i pi n``);
    ``"random"``: ``-U(0.1, N)``, seeded. Raises ValueError: unknown ``init``, ``d_state`` not in ``[1, 256]``.
    """
    check_choice("init", init, A_INITS)
    check_int("d_state", d_state, 1, 256)
    if init == "s4d-real":
        return -np.arange(1.0, d_state + 1.0)
    if init == "constant":
        return np.full(d_state, -0.5)
    return -np.random.default_rng(0).uniform(0.1, d_state, d_state)


def plot_memory_horizons(init: str = "s4d-real", delta: float = 0.1, d_state: int = 8, length: int = 60):
    """The impulse response ``exp(k delta A_n)`` of every state channel, and its horizon.

    The horizon ``1 / (delta |A_n|)`` is the number of steps for channel ``n`` to fall to ``1/e``.
    Returns ``(fig, data)``; ``data``: ``A (N,)``, ``horizons (N,)``, ``kernels (N, length)``,
    ``spread`` (longest over shortest horizon). Raises ValueError: as :func:`init_A`,
    ``delta <= 0``, ``length`` not in ``[2, 10000]``.
    """
    check_positive("delta", delta)
    check_int("length", length, 2, 10000)
    A = init_A(init, d_state)  # (N,)
    horizons = 1.0 / (delta * np.abs(A))  # (N,) steps
    k = np.arange(length, dtype=np.float64)  # (length,)
    kernels = np.exp(delta * A[:, None] * k[None, :])  # (N, length)  A_bar_n^k
    spread = float(horizons.max() / horizons.min())

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.6), gridspec_kw=dict(width_ratios=[2, 1]),
                                   constrained_layout=True)
    colors = plt.cm.viridis(np.linspace(0.0, 0.9, d_state))
    for n in range(d_state):
        ax1.plot(k, kernels[n], color=colors[n], lw=1.5)
        if horizons[n] <= k[-1]:
            ax1.plot(horizons[n], np.exp(-1.0), "o", color=colors[n], ms=4)
    ax1.axhline(np.exp(-1.0), color="0.6", lw=0.8, ls="--")
    ax1.set_xlabel("steps k after the impulse")
    ax1.set_ylabel(r"$\bar A_n^k = e^{k \Delta A_n}$")
    ax1.set_title(rf"{init}, $\Delta$ = {delta:g}: one curve per state channel; dots at $1/e$")
    ax2.barh(np.arange(d_state), horizons, color=colors)
    ax2.set_yticks(np.arange(d_state))
    ax2.set_yticklabels([f"{a:.2f}" for a in A], fontsize=7)
    ax2.invert_yaxis()
    ax2.set_ylabel(r"$A_n$")
    ax2.set_xlabel(r"horizon $1/(\Delta|A_n|)$, steps")
    ax2.set_title(f"longest / shortest = {spread:.1f}", fontsize=10)
    return fig, dict(A=A, horizons=horizons, kernels=kernels, spread=spread)

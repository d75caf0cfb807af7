"""Plots of notebook 15 (Mamba-3): the trapezoid rule's error, a state turning in the plane, parity.

Three small float64 examples, each built by its own few lines (numpy, no call into
``minimamba_core.mamba3``), so that tests/test_viz_mamba3.py and the notebook can hold them
against closed forms and against the package's scan:

* **one step of a discretization rule** on the scalar ODE ``h'(t) = A h(t) + x(t)`` with the
  smooth input ``x(t) = cos(w t)``, whose exact solution is known in closed form
  (:func:`exact_solution`). The rules (:data:`STEP_RULES`), from ``h_k`` at ``t_k`` to
  ``h_{k+1}`` at ``t_k + delta``::

      euler       h_{k+1} = (1 + delta A) h_k + delta x(t_k)                   forward Euler
      exp-euler   h_{k+1} = exp(delta A) h_k + delta x(t_{k+1})                 Mamba-1/2 (ZOH A, Euler B)
      zoh         h_{k+1} = exp(delta A) h_k + (exp(delta A) - 1) / A x(t_{k+1})  zero-order hold
      trapezoid   h_{k+1} = exp(delta A) h_k + (1 - lam) delta exp(delta A) x(t_k)
                                             + lam delta x(t_{k+1})              Mamba-3, lam = 1/2

  (Lahoti et al. 2026, arXiv 2603.15569, the "exponential-trapezoidal" rule; ``lam`` is the
  package's ``sigmoid(trap)``);
* **a rotation as a complex eigenvalue**: the 2-D state ``h_t = r R(theta) h_{t-1}``, that is the
  complex number ``h_t = r e^{i theta} h_{t-1}`` with ``r = exp(-decay)``;
* **parity** of a bit string read off a state turned by pi at every 1 (eigenvalue -1).

Each plot returns ``(fig, data)``.
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np

from .widgets import check_choice, check_int, check_positive

#: The one-step rules of :func:`step_rule`, in the order the plots draw them.
STEP_RULES = ("euler", "exp-euler", "zoh", "trapezoid")
#: The ODE of the discretization figure: ``h' = A h + cos(W t)``, ``h(0) = H0``.
ODE_A, ODE_W, ODE_H0 = -1.0, 2.0, 0.5
#: The step sizes of the log-log error plot, and the start times its one-step errors average over.
DELTAS = np.logspace(-2.5, -0.5, 9)
START_TIMES = np.linspace(0.0, np.pi, 8, endpoint=False)


def exact_solution(t, A: float = ODE_A, w: float = ODE_W, h0: float = ODE_H0) -> np.ndarray:
    """``h(t)`` of ``h' = A h + cos(w t)``, ``h(0) = h0``, in closed form (``A < 0``).

    A particular solution is ``Re(e^{i w t} / (i w - A))``; the rest decays as ``e^{A t}``.
    ``t`` a float or an array -> an array of the same shape, float64.
    """
    t = np.asarray(t, dtype=np.float64)
    particular = lambda s: np.real(np.exp(1j * w * s) / (1j * w - A))  # noqa: E731
    return particular(t) + (h0 - particular(0.0)) * np.exp(A * t)


def step_rule(h, t, delta: float, rule: str, lam: float = 0.5, A: float = ODE_A, w: float = ODE_W):
    """One step of ``rule`` (:data:`STEP_RULES`, module docstring) from ``h`` at time ``t``.

    ``h``, ``t`` floats or arrays of one shape -> ``h`` at ``t + delta``. ``lam`` is used by the
    trapezoid only. Raises ValueError: unknown ``rule``, ``delta <= 0``, ``lam`` outside ``[0, 1]``.
    """
    check_choice("rule", rule, STEP_RULES)
    check_positive("delta", delta)
    if not 0.0 <= lam <= 1.0:
        raise ValueError(f"lam must be in [0, 1], got {lam!r}")
    x_now, x_next = np.cos(w * np.asarray(t)), np.cos(w * (np.asarray(t) + delta))
    decay = np.exp(delta * A)
    if rule == "euler":
        return (1.0 + delta * A) * h + delta * x_now
    if rule == "exp-euler":
        return decay * h + delta * x_next
    if rule == "zoh":
        return decay * h + np.expm1(delta * A) / A * x_next
    return decay * h + (1.0 - lam) * delta * decay * x_now + lam * delta * x_next


def local_errors(rule: str, lam: float = 0.5, deltas=DELTAS) -> np.ndarray:
    """Mean ``|one step of rule - exact|`` over :data:`START_TIMES`, started on the exact solution.

    -> ``(len(deltas),)`` float64. The local error of a method of global order ``p`` falls as
    ``delta^(p+1)``.
    """
    h = exact_solution(START_TIMES)  # (8,)
    return np.array([np.abs(step_rule(h, START_TIMES, d, rule, lam) - exact_solution(START_TIMES + d)).mean()
                     for d in deltas])


def error_slope(errors, deltas=DELTAS) -> float:
    """The least-squares slope of ``log(errors)`` against ``log(deltas)``."""
    return float(np.polyfit(np.log(deltas), np.log(errors), 1)[0])


def plot_discretization_error(delta: float = 0.3, rule: str = "trapezoid", lam: float = 0.5, length: float = 6.0):
    """Left: ``rule``'s steps of ``delta`` against the exact ``h(t)``. Right: every rule's one-step
    error against the step size, log-log, with ``rule`` at ``delta`` marked.

    Returns ``(fig, data)``; ``data``: ``t (k,)``, ``h (k,)`` (the discrete states from
    ``h(0)``), ``h_exact (k,)``, ``global_error`` (max ``|h - h_exact|``), ``deltas (9,)``,
    ``errors`` (dict rule -> ``(9,)``, at ``lam`` for the trapezoid), ``slopes`` (dict rule ->
    float), ``local_error`` (``rule``'s one-step error at ``delta``). Raises ValueError as
    :func:`step_rule`, or ``length`` not a number > 0.
    """
    check_positive("length", length)
    step_rule(0.0, 0.0, delta, rule, lam)  # validates the arguments
    steps = int(np.floor(length / delta + 1e-9))
    t = delta * np.arange(steps + 1)  # (k,)
    h = np.empty(steps + 1)
    h[0] = ODE_H0
    for k in range(steps):
        h[k + 1] = step_rule(h[k], t[k], delta, rule, lam)
    h_exact = exact_solution(t)
    errors = {r: local_errors(r, lam) for r in STEP_RULES}
    slopes = {r: error_slope(e) for r, e in errors.items()}
    local = float(local_errors(rule, lam, deltas=np.array([delta]))[0])

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10.5, 3.8))
    t_fine = np.linspace(0.0, max(length, delta), 400)
    ax1.plot(t_fine, exact_solution(t_fine), color="0.55", lw=2, label="exact")
    ax1.plot(t, h, "o-", ms=3.5, color=f"C{STEP_RULES.index(rule)}", label=rule)
    ax1.set_xlabel("time t")
    ax1.set_ylabel("h(t)")
    a_h = "-h" if ODE_A == -1 else rf"{ODE_A:g}\,h"
    ax1.set_title(rf"$h' = {a_h} + \cos({ODE_W:g}t)$, $\Delta$ = {delta:g}: max error {np.abs(h - h_exact).max():.3f}")
    ax1.legend(loc="lower left", fontsize=8)
    for i, r in enumerate(STEP_RULES):
        lab = f"{r}" + (rf" ($\lambda$ = {lam:g})" if r == "trapezoid" else "") + f": slope {slopes[r]:.2f}"
        ax2.loglog(DELTAS, errors[r], "o-", ms=3, color=f"C{i}", lw=2.5 if r == rule else 1.0, label=lab)
    ax2.loglog([delta], [local], "*", ms=14, color=f"C{STEP_RULES.index(rule)}", mec="k")
    ax2.set_xlabel(r"step size $\Delta$")
    ax2.set_ylabel("one-step error")
    ax2.set_title("local error against step size")
    ax2.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    data = dict(t=t, h=h, h_exact=h_exact, global_error=float(np.abs(h - h_exact).max()), deltas=DELTAS,
                errors=errors, slopes=slopes, local_error=local)
    return fig, data


def rotation_orbit(theta: float, decay: float, steps: int = 24, h0=(1.0, 0.0)) -> np.ndarray:
    """The 2-D states ``h_t = exp(-decay) R(theta) h_{t-1}`` for ``t = 0 .. steps``, ``h_0 = h0``.

    ``R(theta) = [[cos, -sin], [sin, cos]]``: the real form of multiplying ``h[0] + i h[1]`` by
    ``e^{i theta}``. -> ``(steps + 1, 2)`` float64.
    """
    c, s, r = np.cos(theta), np.sin(theta), np.exp(-decay)
    turn = r * np.array([[c, -s], [s, c]])  # (2, 2)
    h = np.empty((steps + 1, 2))
    h[0] = h0
    for k in range(steps):
        h[k + 1] = turn @ h[k]
    return h


def plot_rotation(theta: float = 0.6, decay: float = 0.05, steps: int = 24):
    """Left: the state as a point turning in the plane, ``theta`` radians and a factor
    ``exp(-decay)`` per step. Right: its eigenvalue ``exp(-decay + i theta)`` in the complex plane,
    next to the eigenvalues a real decay ``exp(delta A)`` can reach, ``(0, 1]``, and ``-1``.

    Returns ``(fig, data)``; ``data``: ``h (steps + 1, 2)``, ``eigenvalue`` (complex),
    ``radius``, ``angle`` (of the eigenvalue, in ``(-pi, pi]``). Raises ValueError: ``decay < 0``
    or ``steps`` not in ``[1, 1000]``.
    """
    if isinstance(decay, bool) or not isinstance(decay, (int, float)) or decay < 0:
        raise ValueError(f"decay must be a number >= 0, got {decay!r}")
    check_int("steps", steps, 1, 1000)
    h = rotation_orbit(theta, decay, steps)
    lam = np.exp(complex(-decay, theta))

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(9.5, 4.4))
    circle = np.exp(1j * np.linspace(0, 2 * np.pi, 200))
    for ax in (ax1, ax2):
        ax.plot(circle.real, circle.imag, color="0.85", lw=1)
        ax.axhline(0, color="0.85", lw=0.8)
        ax.axvline(0, color="0.85", lw=0.8)
        ax.set_aspect("equal")
        ax.set_xlim(-1.25, 1.25)
        ax.set_ylim(-1.25, 1.25)
    ax1.plot(h[:, 0], h[:, 1], "-", color="0.7", lw=0.8)
    ax1.scatter(h[:, 0], h[:, 1], c=np.arange(steps + 1), cmap="viridis", s=18, zorder=3)
    ax1.annotate("$h_0$", h[0], textcoords="offset points", xytext=(4, 4))
    ax1.set_xlabel("$h[0]$ (real part)")
    ax1.set_ylabel("$h[1]$ (imaginary part)")
    ax1.set_title(rf"$\theta$ = {theta:.2f} rad, decay {decay:.2f} per step")
    ax2.plot([0, 1], [0, 0], color="C1", lw=4, alpha=0.6, label=r"real $e^{\Delta A}$, $A < 0$")
    ax2.plot([lam.real], [lam.imag], "o", ms=9, color="C0", label=r"$e^{-\mathrm{decay} + i\theta}$")
    ax2.plot([-1], [0], "x", ms=10, mew=2, color="C3", label="$-1$ (parity)")
    ax2.set_xlabel("real")
    ax2.set_ylabel("imaginary")
    ax2.set_title("the eigenvalue")
    ax2.legend(loc="lower left", fontsize=8)
    fig.tight_layout()
    return fig, dict(h=h, eigenvalue=lam, radius=float(abs(lam)), angle=float(np.angle(lam)))


def parity_by_rotation(bits) -> np.ndarray:
    """The parity of every prefix of ``bits``, read off a unit complex state turned by pi at each 1.

    ``h_0 = 1``; ``h_t = e^{i pi u_t} h_{t-1}``, i.e. ``-h`` at a 1 and ``h`` at a 0; the parity
    is ``(1 - Re h_t) / 2``. ``bits (l,)`` of 0/1 -> ``(l,)`` float64, each 0.0 or 1.0 (up to
    rounding).
    """
    bits = np.asarray(bits)
    h, out = 1.0 + 0.0j, np.empty(len(bits))
    for t, u in enumerate(bits):
        h = np.exp(1j * np.pi * u) * h  # (1,): the eigenvalue -1 at a 1
        out[t] = (1.0 - h.real) / 2
    return out


def plot_parity(length: int = 40, seed: int = 0, decay_state: float = 0.9):
    """Parity of a random bit string: a state turned by pi at each 1 against a positive decay.

    Top: the bits and their running parity. Middle: the rotation state's real part, ``+1`` or
    ``-1``. Bottom: on the string of ones, the real state ``h_n = a h_{n-1} + 1`` with
    ``a = decay_state`` in ``(0, 1]`` climbs monotonically to ``1 / (1 - a)``, while the state
    ``-(-1)^n`` of the eigenvalue -1 alternates with the parity. Returns ``(fig, data)``; ``data``: ``bits (length,)``, ``parity (length,)``,
    ``by_rotation (length,)`` (:func:`parity_by_rotation`), ``ones_real (length,)``.
    """
    check_int("length", length, 1, 10000)
    bits = np.random.default_rng(seed).integers(0, 2, length)
    parity = np.cumsum(bits) % 2
    by_rot = parity_by_rotation(bits)
    ones_real = np.empty(length)
    h = 0.0
    for n in range(length):
        h = decay_state * h + 1.0
        ones_real[n] = h
    t = np.arange(length)
    fig, (ax1, ax2, ax3) = plt.subplots(3, 1, figsize=(9, 5.6), sharex=True)
    ax1.bar(t, bits, width=0.6, color="0.75", label="bit")
    ax1.plot(t, parity, "o", ms=4, color="C3", label="parity so far")
    ax1.set_yticks([0, 1])
    ax1.set_ylim(-0.1, 1.7)
    ax1.legend(loc="upper right", fontsize=8, ncol=2)
    ax2.plot(t, 1 - 2 * by_rot, "o-", ms=3, color="C0")
    ax2.set_ylabel("Re $h_t$")
    ax2.set_yticks([-1, 1])
    ax2.set_title(r"rotation by $\pi$ at each 1: $h_t = \pm 1$", fontsize=10)
    ax3.plot(t, ones_real, "o-", ms=3, color="C1", label=f"real decay a = {decay_state:g}")
    ax3.plot(t, -np.cos(np.pi * t), "o--", ms=3, color="C0", label="eigenvalue $-1$")
    ax3.legend(loc="center right", fontsize=8)
    ax3.set_ylabel("$h_n$")
    ax3.set_xlabel("token")
    ax3.set_title("on the string 1 1 1 ...: a positive decay climbs, the eigenvalue $-1$ alternates", fontsize=10)
    fig.tight_layout()
    return fig, dict(bits=bits, parity=parity, by_rotation=by_rot, ones_real=ones_real)

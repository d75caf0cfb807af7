"""Plot functions behind the notebooks' figures and widgets (needs the ``notebooks`` extra).

Every function here is a plain function of its slider values that returns ``(fig, data)``:
``data`` is a dict of the arrays drawn, so tests assert on numbers rather than pixels, and a
notebook shows a static call before the widget so it reads on GitHub, where widgets do not render.
:func:`widget` wires a function to ``ipywidgets.interact``.
"""

from __future__ import annotations

import os
from typing import Any, Callable

import matplotlib.pyplot as plt

# Environment switch for the browser test's failure check: when it names a plot function,
# that function's widget callback does nothing, so the browser test must report a dead widget.
NOOP_ENV = "MINIMAMBA_WIDGET_NOOP"


def widget(plot_fn: Callable[..., tuple[Any, dict]], **controls):
    """``ipywidgets.interact`` over ``plot_fn`` with inline matplotlib; ``controls`` as for interact.

    The figure is shown and closed on every call. Honours ``MINIMAMBA_WIDGET_NOOP`` (see above).
    Returns what ``interact`` returns: the wrapped callback, whose ``.widget`` is the ``interactive`` box.
    """
    import ipywidgets

    noop = os.environ.get(NOOP_ENV) == plot_fn.__name__

    def callback(**values):
        if noop:
            return None
        fig, _ = plot_fn(**values)
        plt.show()
        plt.close(fig)

    callback.__name__ = plot_fn.__name__
    return ipywidgets.interact(callback, **controls)


# ---- notebooks 00-05 (plots added below this line) -------------------------------------------
# Plots of notebooks 01-05. Each takes the widget's plain values, builds its own small seeded
# example, and returns ``(fig, data)``: ``data`` holds the numbers drawn (numpy float64 arrays,
# floats, lists), so tests/test_viz.py asserts on them. Controls: see each notebook's widget cell.

import numpy as np  # noqa: E402  (each section keeps its own imports: sections are edited apart)
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from .config import MambaConfig  # noqa: E402
from .mixer import MambaMixer  # noqa: E402
from .scan import selective_scan_sequential  # noqa: E402

DISCRETIZATIONS = ("zoh", "euler", "bilinear")
SELECTION_SIGNALS = ("pulses", "steps", "noise")
B_BAR_RULES = ("zoh", "euler")
SCAN_ALGORITHMS = ("hillis-steele", "blelloch", "chunked")


def _check_choice(name: str, value, allowed: tuple) -> None:
    if value not in allowed:
        raise ValueError(f"{name} must be one of {allowed}, got {value!r}")


def _check_int(name: str, value, lo: int, hi: int) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not lo <= value <= hi:
        raise ValueError(f"{name} must be an int in [{lo}, {hi}], got {value!r}")


def _check_positive(name: str, value) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise ValueError(f"{name} must be a number > 0, got {value!r}")


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
    _check_positive("delta", delta)
    if isinstance(A, bool) or not isinstance(A, (int, float)) or not A < 0:
        raise ValueError(f"A must be a number < 0 (a stable continuous system), got {A!r}")
    _check_choice("method", method, DISCRETIZATIONS)
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
    _check_int("length", length, 1, 10000)
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
    _check_choice("signal", signal, SELECTION_SIGNALS)
    _check_int("length", length, 1, 10000)
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
    _check_choice("rule", rule, B_BAR_RULES)
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
    _check_int("length", length, 1, 10000)
    _check_int("pick", pick, 0, length - 1)
    _check_int("d_state", d_state, 1, 256)
    _check_positive("delta_low", delta_low)
    _check_positive("delta_high", delta_high)
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
    _check_int("channel", channel, 0, d_inner - 1)
    _check_int("state", state, 0, d_state - 1)
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
    * ``"chunked"``: the GPU schedule of the package's scan (``fast_scan.py``) with chunks of
      ``chunk`` steps: every chunk's summary in one level (the package computes it without a
      loop, from cumulative sums of ``delta``), the chunk summaries scanned one after another (the
      package does that in groups of ``chunk``, recursively), then every chunk runs its steps
      from the state entering it, all chunks at once. A chunk's last position is already final
      after the summaries and is not redrawn.

    Raises ValueError: unknown ``algorithm``; ``length`` < 1; Blelloch with a length that is not
    a power of two; ``chunk`` < 2.
    """
    _check_choice("algorithm", algorithm, SCAN_ALGORITHMS)
    _check_int("length", length, 1, 4096)
    _check_int("chunk", chunk, 2, 4096)
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


def _combine_ranges(p, q):
    """The operator on index ranges ``(lo, hi)``; ``None`` is the empty range (the identity)."""
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
    _check_int("level", level, 0, 10**6)
    n_levels = len(levels) - 1
    requested, level = level, min(level, n_levels)
    ranges = run_schedule(levels, [(i, i) for i in range(length)], _combine_ranges, None)
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
    _check_int("position", position, 0, l - 1)
    _check_int("channel", channel, 0, d_inner - 1)
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



# ---- notebooks 06, 07, 10 (plots added below this line) --------------------------------------

# Plots of the language model (06), the cache (07) and generation (10). Each measures what it
# draws from minimamba_core itself; the notebooks check the numbers against inline references.
import math as _math
import time as _time

import numpy as _np
import torch as _torch

from .config import MambaConfig as _MambaConfig
from .generate import generate as _generate
from .generate import sample_next_token as _sample_next_token
from .mixer import MambaMixer as _MambaMixer
from .model import MambaLM as _MambaLM


def plot_dt_init(dt_min: float = 0.001, dt_max: float = 0.1, d_inner: int = 1536, seed: int = 0,
                 bins: int = 20):
    """Histogram of the initial step size delta per channel against its log-uniform target.

    Builds one :class:`~minimamba_core.MambaMixer` (``d_model = d_inner // 2``, ``expand = 2``)
    with the official initialization and reads ``delta_0 = softplus(dt_proj.bias)`` for each of
    its ``d_inner`` channels: the step every channel takes when ``dt_proj``'s input is zero.
    The target is log-uniform on ``[dt_min, dt_max]``, clamped below at ``dt_init_floor = 1e-4``.

    Args:
        dt_min, dt_max: the range, ``0 < dt_min <= dt_max``.
        d_inner: number of channels (even, >= 2).
        seed: ``torch.manual_seed`` before building the mixer.
        bins: histogram bins over ``[log10 dt_min, log10 dt_max]``.

    Returns:
        ``(fig, data)``; ``data`` holds ``dt (d_inner,)`` float64, ``edges (bins+1,)`` in log10,
        ``counts (bins,)``, ``expected (bins,)`` (the log-uniform target's counts),
        ``ks`` (Kolmogorov-Smirnov distance of ``log dt`` from uniform), ``ks_threshold``
        (``1.63 / sqrt(d_inner)``, the 1 % critical value) and ``floor``.

    Raises:
        ValueError: odd or too small ``d_inner``, or a range ``MambaConfig`` rejects.
    """
    if isinstance(d_inner, bool) or not isinstance(d_inner, int) or d_inner < 2 or d_inner % 2:
        raise ValueError(f"d_inner must be an even int >= 2, got {d_inner!r}")
    if isinstance(bins, bool) or not isinstance(bins, int) or bins < 1:
        raise ValueError(f"bins must be a positive int, got {bins!r}")
    config = _MambaConfig(d_model=d_inner // 2, n_layer=1, vocab_size=8, dt_min=dt_min, dt_max=dt_max)
    with _torch.random.fork_rng(devices=[]):  # seeded here, the caller's random state untouched
        _torch.manual_seed(seed)
        mixer = _MambaMixer(config)
    dt = _torch.nn.functional.softplus(mixer.dt_proj.bias.detach().double()).numpy()  # (d_inner,)
    lo, hi = _math.log10(dt_min), _math.log10(dt_max)
    edges = _np.linspace(lo, hi, bins + 1) if hi > lo else _np.array([lo - 0.5, hi + 0.5])
    counts, _ = _np.histogram(_np.log10(dt), bins=edges)
    expected = _np.full(len(counts), d_inner / len(counts))
    # KS distance: the largest gap between the empirical CDF of log(dt) and the uniform CDF.
    u = _np.sort((_np.log(dt) - _math.log(dt_min)) / max(_math.log(dt_max) - _math.log(dt_min), 1e-300))
    n = len(u)
    ks = float(max(_np.max(_np.arange(1, n + 1) / n - u), _np.max(u - _np.arange(n) / n)))
    floor = config.dt_init_floor

    fig, (ax0, ax1) = plt.subplots(1, 2, figsize=(10, 3.4))
    ax0.bar(edges[:-1], counts, width=_np.diff(edges), align="edge", alpha=0.7, label="MambaMixer init")
    ax0.step(edges, _np.append(expected, expected[-1]), where="post", color="k", label="log-uniform target")
    ax0.set(xlabel=r"$\log_{10}\,\Delta_0$ per channel", ylabel="channels",
            title=f"initial delta of {d_inner} channels")
    ax0.legend(fontsize=8)
    ax1.plot(_np.log10(_np.sort(dt)), _np.arange(1, n + 1) / n, label="empirical CDF")
    ax1.plot([lo, hi], [0, 1], "k--", label="target CDF")
    if floor > dt_min:
        ax1.axvline(_math.log10(floor), color="r", lw=0.8, label=f"floor {floor:g}")
    ax1.set(xlabel=r"$\log_{10}\,\Delta_0$", ylabel="fraction of channels",
            title=f"KS distance {ks:.3f} (1% threshold {1.63 / _math.sqrt(n):.3f})")
    ax1.legend(fontsize=8)
    fig.tight_layout()
    return fig, {"dt": dt, "edges": edges, "counts": counts, "expected": expected, "ks": ks,
                 "ks_threshold": 1.63 / _math.sqrt(n), "floor": floor}


_PARAM_GROUPS = ("embedding (= head)", "in_proj", "out_proj", "x_proj + dt_proj", "conv1d, A_log, D, norms")


def _param_group(name: str) -> str:
    if "embedding" in name or name.startswith("lm_head"):
        return _PARAM_GROUPS[0]
    for part, group in (("in_proj", 1), ("out_proj", 2), ("x_proj", 3), ("dt_proj", 3)):
        if f".{part}." in name:
            return _PARAM_GROUPS[group]
    return _PARAM_GROUPS[4]


def plot_param_breakdown(configs: dict):
    """Where the parameters of each model go: a stacked bar per configuration.

    Each :class:`~minimamba_core.MambaLM` is built on the ``meta`` device (shapes only, no
    memory), and its distinct parameters (a tied head counted once) are summed by group.

    Args:
        configs: ``{label: MambaConfig}``, drawn in the given order.

    Returns:
        ``(fig, data)``; ``data`` holds ``labels``, ``groups`` (the group names),
        ``counts (len(configs), len(groups))`` int64 and ``totals (len(configs),)``.

    Raises:
        ValueError: an empty ``configs``. TypeError: a value that is not a ``MambaConfig``.
    """
    if not configs:
        raise ValueError("configs must name at least one MambaConfig")
    labels = list(configs)
    counts = _np.zeros((len(labels), len(_PARAM_GROUPS)), dtype=_np.int64)
    for i, label in enumerate(labels):
        if not isinstance(configs[label], _MambaConfig):
            raise TypeError(f"configs[{label!r}] must be a MambaConfig, got {type(configs[label]).__name__}")
        with _torch.device("meta"):
            model = _MambaLM(configs[label])
        for name, p in model.named_parameters():  # named_parameters lists a tied tensor once
            counts[i, _PARAM_GROUPS.index(_param_group(name))] += p.numel()
    totals = counts.sum(axis=1)
    fig, ax = plt.subplots(figsize=(7, 3.2))
    left = _np.zeros(len(labels))
    for j, group in enumerate(_PARAM_GROUPS):
        share = counts[:, j] / totals
        ax.barh(labels, share, left=left, label=group)
        left += share
    ax.set(xlabel="share of the parameters", xlim=(0, 1), title="where the parameters are")
    ax.invert_yaxis()
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1))
    fig.tight_layout()
    return fig, {"labels": labels, "groups": list(_PARAM_GROUPS), "counts": counts, "totals": totals}


def _tiny_lm(d_model: int, n_layer: int, vocab_size: int, d_state: int, seed: int,
             dtype: _torch.dtype = _torch.float32, expand: int = 2, d_conv: int = 4) -> _MambaLM:
    config = _MambaConfig(d_model=d_model, n_layer=n_layer, vocab_size=vocab_size, d_state=d_state,
                          expand=expand, d_conv=d_conv)
    with _torch.random.fork_rng(devices=[]):  # seeded here, the caller's random state untouched
        _torch.manual_seed(seed)
        return _MambaLM(config).to(dtype).eval()


@_torch.no_grad()
def plot_decode_error(length: int = 128, d_model: int = 32, n_layer: int = 2, d_state: int = 16,
                      vocab_size: int = 64, seed: int = 0):
    """Error of step-by-step decoding against the full forward, per position, in fp32 and fp64.

    For each dtype, a freshly initialized :class:`~minimamba_core.MambaLM` (same seed) reads
    ``length`` random tokens twice: once with one parallel forward, once as a one-token prefill
    followed by ``length - 1`` calls of :meth:`~minimamba_core.MambaLM.step`. The error at
    position ``t`` is ``max |logits_step[t] - logits_full[t]|`` over the vocabulary.

    Returns:
        ``(fig, data)``; ``data`` holds ``positions (length,)``, ``err_fp32``, ``err_fp64``
        ``(length,)`` float64 and ``logit_scale`` (the largest ``|logit|`` of the fp64 run).

    Raises:
        ValueError: ``length < 2`` (or a size ``MambaConfig`` rejects).
    """
    if isinstance(length, bool) or not isinstance(length, int) or length < 2:
        raise ValueError(f"length must be an int >= 2, got {length!r}")
    ids = _torch.randint(0, vocab_size, (1, length), generator=_torch.Generator().manual_seed(seed))
    errors = {}
    for name, dtype in (("fp32", _torch.float32), ("fp64", _torch.float64)):
        model = _tiny_lm(d_model, n_layer, vocab_size, d_state, seed, dtype)
        full = model(ids)[0]  # (l, V_padded)
        cache = model.allocate_inference_cache(1)
        steps = [model(ids[:, :1], cache=cache)[0]]  # (1, V_padded), the prefill
        for t in range(1, length):
            steps.append(model.step(ids[:, t:t + 1], cache)[0])
        stepped = _torch.cat(steps)  # (l, V_padded)
        errors[name] = (stepped.double() - full.double()).abs().amax(dim=-1).numpy()  # (l,)
        scale = float(full.abs().max())
    positions = _np.arange(length)
    tiny = 1e-20  # zeros drawn at this floor on the log axis
    fig, ax = plt.subplots(figsize=(7, 3.2))
    for name, color in (("fp32", "C0"), ("fp64", "C1")):
        ax.semilogy(positions, _np.maximum(errors[name], tiny), ".", ms=3, color=color,
                    label=f"{name}: max {errors[name].max():.1e}")
    ax.axhline(_np.finfo(_np.float32).eps * scale, color="C0", ls=":", lw=0.8, label="fp32 eps x max|logit|")
    ax.axhline(_np.finfo(_np.float64).eps * scale, color="C1", ls=":", lw=0.8, label="fp64 eps x max|logit|")
    ax.set(xlabel="position t", ylabel="max |step - forward| over the vocabulary",
           title="cached decoding against the full forward")
    ax.legend(fontsize=8, loc="center right")
    fig.tight_layout()
    return fig, {"positions": positions, "err_fp32": errors["fp32"], "err_fp64": errors["fp64"],
                 "logit_scale": scale}


def _tensor_bytes(tensors) -> int:
    return sum(t.numel() * t.element_size() for t in tensors)


@_torch.no_grad()
def plot_cache_memory(d_model: int = 64, d_state: int = 16, expand: int = 2, d_conv: int = 4,
                      max_len: int = 256, chunk: int = 16, n_head: int = 4, seed: int = 0):
    """Measured bytes of one layer's decoding cache as the sequence grows: Mamba against attention.

    Mamba: a one-layer :class:`~minimamba_core.MambaLM` reads random tokens ``chunk`` at a time
    with an :class:`~minimamba_core.InferenceCache`; after each chunk the bytes of its
    ``conv_state`` and ``ssm_state`` tensors are summed. Attention: a same-width layer's key and
    value projections (``d_model -> d_model`` each, ``n_head`` heads) are applied to hidden
    states of the same length and appended to a KV cache ``(b, n_head, l, d_model / n_head)``
    each, whose bytes are summed the same way. Both in float32.

    Returns:
        ``(fig, data)``; ``data`` holds ``lengths``, ``mamba_bytes``, ``kv_bytes`` (int arrays)
        and ``crossover``: the predicted length ``expand * (d_state + d_conv) / 2`` beyond which
        the KV cache is larger.

    Raises:
        ValueError: ``d_model`` not divisible by ``n_head``, or non-positive sizes.
    """
    for name, value in (("max_len", max_len), ("chunk", chunk), ("n_head", n_head)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive int, got {value!r}")
    if d_model % n_head:
        raise ValueError(f"d_model ({d_model}) must be divisible by n_head ({n_head})")
    vocab = 64
    model = _tiny_lm(d_model, 1, vocab, d_state, seed, expand=expand, d_conv=d_conv)
    cache = model.allocate_inference_cache(1)
    gen = _torch.Generator().manual_seed(seed)
    with _torch.random.fork_rng(devices=[]):
        _torch.manual_seed(seed)
        k_proj, v_proj = _torch.nn.Linear(d_model, d_model), _torch.nn.Linear(d_model, d_model)
    head_dim = d_model // n_head
    keys = _torch.zeros(1, n_head, 0, head_dim)  # (b, n_head, l, head_dim)
    values = _torch.zeros(1, n_head, 0, head_dim)
    lengths, mamba_bytes, kv_bytes = [0], [_tensor_bytes(cache.conv_states + cache.ssm_states)], [0]
    length = 0
    while length < max_len:
        n = min(chunk, max_len - length)
        ids = _torch.randint(0, vocab, (1, n), generator=gen)
        model(ids, cache=cache)  # the cache now summarizes every token so far
        hidden = model.backbone.embedding(ids)  # (1, n, d_model), the attention layer's input
        k = k_proj(hidden).view(1, n, n_head, head_dim).transpose(1, 2)  # (1, n_head, n, head_dim)
        v = v_proj(hidden).view(1, n, n_head, head_dim).transpose(1, 2)
        keys, values = _torch.cat([keys, k], dim=2), _torch.cat([values, v], dim=2)
        length += n
        lengths.append(length)
        mamba_bytes.append(_tensor_bytes(cache.conv_states + cache.ssm_states))
        kv_bytes.append(_tensor_bytes([keys, values]))
    lengths, mamba_bytes, kv_bytes = map(_np.array, (lengths, mamba_bytes, kv_bytes))
    crossover = expand * (d_state + d_conv) / 2
    fig, ax = plt.subplots(figsize=(7, 3.2))
    ax.plot(lengths, kv_bytes / 1024, "o-", ms=3, label=f"attention KV cache ({n_head} heads)")
    ax.plot(lengths, mamba_bytes / 1024, "s-", ms=3, label="Mamba conv_state + ssm_state")
    ax.axvline(crossover, color="gray", ls=":", label=f"equal at l = {crossover:g}")
    ax.set(xlabel="tokens seen l", ylabel="KiB per layer (float32, batch 1)",
           title=f"decoding cache of one layer, d_model = {d_model}, N = {d_state}, E = {expand}")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig, {"lengths": lengths, "mamba_bytes": mamba_bytes, "kv_bytes": kv_bytes,
                 "crossover": crossover}


@_torch.no_grad()
def plot_time_per_token(d_model: int = 64, n_layer: int = 2, lengths=(16, 32, 64, 128, 256),
                        repeats: int = 3, seed: int = 0):
    """Illustrative wall time to produce the next token at position ``l``, with and without a cache.

    Without a cache the model re-reads the whole prefix: one forward over ``l`` tokens. With
    the cache it runs one :meth:`~minimamba_core.MambaLM.step`. Best of ``repeats`` runs on the
    CPU (timings vary from machine to machine; the benchmarks make the claims).

    Returns:
        ``(fig, data)``; ``data`` holds ``lengths``, ``seconds_no_cache``, ``seconds_cache``.
    """
    if isinstance(repeats, bool) or not isinstance(repeats, int) or repeats < 1:
        raise ValueError(f"repeats must be a positive int, got {repeats!r}")
    lengths = [int(l) for l in lengths]
    if not lengths or min(lengths) < 1:
        raise ValueError(f"lengths must be positive ints, got {lengths!r}")
    vocab = 64
    model = _tiny_lm(d_model, n_layer, vocab, 16, seed)
    ids = _torch.randint(0, vocab, (1, max(lengths) + 1), generator=_torch.Generator().manual_seed(seed))
    no_cache, with_cache = [], []
    for l in lengths:
        best = float("inf")
        for _ in range(repeats):
            t0 = _time.perf_counter()
            model(ids[:, :l + 1], num_last_tokens=1)
            best = min(best, _time.perf_counter() - t0)
        no_cache.append(best)
        cache = model.allocate_inference_cache(1)
        model(ids[:, :l], cache=cache)
        best = float("inf")
        for _ in range(repeats):
            conv, ssm = list(cache.conv_states), list(cache.ssm_states)
            t0 = _time.perf_counter()
            model.step(ids[:, l:l + 1], cache)
            best = min(best, _time.perf_counter() - t0)
            cache.conv_states, cache.ssm_states, cache.seqlen_offset = conv, ssm, l  # rewind
        with_cache.append(best)
    lengths, no_cache, with_cache = map(_np.array, (lengths, no_cache, with_cache))
    fig, ax = plt.subplots(figsize=(7, 3.2))
    ax.plot(lengths, no_cache * 1e3, "o-", label="no cache: forward over the prefix")
    ax.plot(lengths, with_cache * 1e3, "s-", label="cache: one step")
    ax.set(xlabel="position l of the new token", ylabel="ms per token (best of %d)" % repeats,
           title="time for the next token (illustrative)", yscale="log")
    ax.set_xscale("log", base=2)
    ax.set_xticks(lengths, [str(l) for l in lengths])
    ax.minorticks_off()
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig, {"lengths": lengths, "seconds_no_cache": no_cache, "seconds_cache": with_cache}



_CONTROLS = ("temperature", "top_k", "top_p", "min_p", "repetition_penalty")


def _token_label(decode: Callable[[list], str], token_id: int) -> str:
    text = decode([int(token_id)])
    return {"\n": r"\n", " ": "␣", "": f"#{token_id}"}.get(text, text.replace("\n", r"\n"))


@_torch.no_grad()
def _measure_controls(model, prompt_ids, logits, controls: dict, draws: int, seed: int,
                      max_new_tokens: int):
    """Empirical next-token distribution of ``sample_next_token`` and one generated continuation."""
    unknown = sorted(set(controls) - set(_CONTROLS))
    if unknown:
        raise ValueError(f"unknown sampling control(s) {unknown}; known: {list(_CONTROLS)}")
    vocab = model.config.vocab_size
    device = logits.device
    rows = logits[None].expand(draws, -1)  # (draws, V_padded), one row per draw
    previous = prompt_ids.expand(draws, -1)  # (draws, l): what the repetition penalty sees
    gen = _torch.Generator(device=device).manual_seed(seed)
    ids = _sample_next_token(rows, vocab, previous_ids=previous, generator=gen, **controls)  # (draws,)
    empirical = (_torch.bincount(ids, minlength=vocab).double() / draws).cpu().numpy()  # (V,)
    gen = _torch.Generator(device=device).manual_seed(seed)
    out = _generate(model, prompt_ids, max_new_tokens, generator=gen, **controls)
    return empirical, out[0, prompt_ids.shape[1]:].tolist()


def _check_prompt(model, prompt_ids) -> None:
    if not isinstance(model, _MambaLM):
        raise TypeError(f"model must be a MambaLM, got {type(model).__name__}")
    if not isinstance(prompt_ids, _torch.Tensor) or prompt_ids.dim() != 2 or prompt_ids.shape[0] != 1:
        shape = tuple(prompt_ids.shape) if isinstance(prompt_ids, _torch.Tensor) else type(prompt_ids).__name__
        raise ValueError(f"prompt_ids must be a tensor of shape (1, l), got {shape}")


def _draw_controls(ax_bar, ax_text, name, probs, empirical, top_ids, labels, text, width=34, max_lines=9):
    import textwrap

    x = _np.arange(len(top_ids))
    ax_bar.bar(x, probs[top_ids], color="0.8", label="softmax(logits)")
    ax_bar.bar(x, empirical[top_ids], width=0.5, color="C0", label="sampled (frequency)")
    ax_bar.set_xticks(x, labels, fontsize=8)
    ax_bar.set_ylim(0, min(1.0, 1.15 * max(probs[top_ids].max(), empirical[top_ids].max())))
    kept = int((empirical > 0).sum())
    ax_bar.set_title(f"{name}\n{kept} token(s) ever drawn", fontsize=9)
    ax_text.axis("off")
    lines = []
    for line in text.split("\n"):  # a newline is drawn as a visible mark, then broken
        lines.extend(textwrap.wrap(line, width, replace_whitespace=False, drop_whitespace=False) or [""])
        lines[-1] += "\u21b5"
    lines[-1] = lines[-1][:-1]
    shown = "\n".join(lines[:max_lines]) + ("\n..." if len(lines) > max_lines else "")
    label = ax_text.text(0, 1, shown, family="monospace", fontsize=7, va="top", clip_on=True,
                         parse_math=False)  # generated text may hold '$': never read it as TeX
    label.set_in_layout(False)


def plot_generation_controls(model, prompt_ids, decode, settings: dict, max_new_tokens: int = 80,
                             draws: int = 20000, seed: int = 0, top: int = 10, columns: int = 4):
    """The sampling controls side by side: next-token distribution and a continuation for each.

    For the prompt, the model's next-token logits are sampled ``draws`` times by
    :func:`~minimamba_core.sample_next_token` under each setting (the repetition penalty sees the
    prompt), and the frequencies are drawn over the unfiltered softmax for the ``top`` likeliest
    tokens. Below each, :func:`~minimamba_core.generate` continues the prompt by
    ``max_new_tokens`` tokens with the same controls and seed.

    Args:
        model: a :class:`~minimamba_core.MambaLM` in eval mode.
        prompt_ids: ``(1, l)`` long token ids on the model's device.
        decode: ``list[int] -> str`` (e.g. ``tokenizer.decode``).
        settings: ``{title: {control: value}}``, controls among ``temperature, top_k, top_p,
            min_p, repetition_penalty``.
        draws: samples per setting for the frequencies. seed: seed of every sampler.

    Returns:
        ``(fig, data)``; ``data`` holds ``names``, ``probs (V,)`` (softmax of the real-vocabulary
        logits, float64), ``empirical (len(settings), V)``, ``top_ids (top,)``,
        ``continuations`` (lists of ids) and ``texts`` (decoded continuations).

    Raises:
        ValueError: an empty ``settings``, an unknown control, a prompt not of shape ``(1, l)``;
        a control outside its range (as :func:`~minimamba_core.generate`).
    """
    _check_prompt(model, prompt_ids)
    if not settings:
        raise ValueError("settings must hold at least one {title: {control: value}} entry")
    with _torch.no_grad():
        logits = model(prompt_ids, num_last_tokens=1)[0, -1].float()  # (V_padded,)
    vocab = model.config.vocab_size
    probs = _torch.softmax(logits[:vocab].double(), dim=-1).cpu().numpy()  # (V,)
    top_ids = _np.argsort(-probs, kind="stable")[:top]
    labels = [_token_label(decode, i) for i in top_ids]
    names = list(settings)
    rows = -(-len(names) // columns)
    cols = min(columns, len(names))
    fig, axes = plt.subplots(2 * rows, cols, figsize=(3.4 * cols, 3.4 * rows), squeeze=False,
                             gridspec_kw={"height_ratios": [1, 0.7] * rows})
    empirical, continuations, texts = [], [], []
    for j, name in enumerate(names):
        emp, cont = _measure_controls(model, prompt_ids, logits, dict(settings[name]), draws, seed,
                                      max_new_tokens)
        empirical.append(emp)
        continuations.append(cont)
        texts.append(decode(cont))
        r, c = divmod(j, columns)
        _draw_controls(axes[2 * r, c], axes[2 * r + 1, c], name, probs, emp, top_ids, labels, texts[-1])
    for j in range(len(names), rows * cols):
        r, c = divmod(j, columns)
        axes[2 * r, c].axis("off")
        axes[2 * r + 1, c].axis("off")
    axes[0, 0].legend(fontsize=7, loc="upper right")
    fig.suptitle(f"next token after {decode(prompt_ids[0].tolist())[-30:]!r}, then "
                 f"{max_new_tokens} generated tokens (seed {seed})", fontsize=10)
    fig.tight_layout()
    return fig, {"names": names, "probs": probs, "empirical": _np.stack(empirical), "top_ids": top_ids,
                 "continuations": continuations, "texts": texts}


def plot_sampling(model, prompt_ids, decode, temperature: float = 1.0, top_p: float = 1.0,
                  seed: int = 0, max_new_tokens: int = 200, draws: int = 20000, top: int = 15):
    """Temperature and top-p on one prompt with a fixed seed: the widget of notebook 10.

    Left, the frequencies with which :func:`~minimamba_core.sample_next_token` picks each of
    the ``top`` likeliest next tokens (``draws`` draws) over the unfiltered softmax; right,
    the continuation :func:`~minimamba_core.generate` writes with these controls and ``seed``.
    ``temperature == 0`` is greedy decoding.

    Returns:
        ``(fig, data)``; ``data`` as :func:`plot_generation_controls` for one setting, plus
        ``text`` (the continuation) and ``kept`` (how many tokens were ever drawn).
    """
    _check_prompt(model, prompt_ids)
    controls = {"temperature": temperature, "top_p": top_p}
    with _torch.no_grad():
        logits = model(prompt_ids, num_last_tokens=1)[0, -1].float()  # (V_padded,)
    vocab = model.config.vocab_size
    probs = _torch.softmax(logits[:vocab].double(), dim=-1).cpu().numpy()  # (V,)
    top_ids = _np.argsort(-probs, kind="stable")[:top]
    labels = [_token_label(decode, i) for i in top_ids]
    empirical, cont = _measure_controls(model, prompt_ids, logits, controls, draws, seed, max_new_tokens)
    text = decode(cont)
    fig, (ax_bar, ax_text) = plt.subplots(1, 2, figsize=(11, 3.6), gridspec_kw={"width_ratios": [1, 1.3]})
    _draw_controls(ax_bar, ax_text, f"temperature {temperature:g}, top-p {top_p:g}", probs, empirical,
                   top_ids, labels, text, width=72, max_lines=20)
    ax_bar.legend(fontsize=7, loc="upper right")
    ax_text.set_title(f"{max_new_tokens} tokens, seed {seed}", fontsize=9)
    fig.tight_layout()
    return fig, {"names": ["sampling"], "probs": probs, "empirical": empirical[None], "top_ids": top_ids,
                 "continuations": [cont], "texts": [text], "text": text, "kept": int((empirical > 0).sum())}


# ---- notebooks 08, 09, 11 (plots added below this line) --------------------------------------

# notebook 11: cost against length, and the committed benchmark results (benchmarks/results/*.json;
# the earlier runs' files in benchmarks/results/archive/).


def loglog_slope(lengths, values) -> float | None:
    """Least-squares slope of ``log(values)`` against ``log(lengths)`` (1: linear, 2: quadratic);
    ``None`` when fewer than two finite positive points remain."""
    import math

    pts = [(math.log(l), math.log(v)) for l, v in zip(lengths, values) if v is not None and v > 0]
    if len(pts) < 2:
        return None
    mx = sum(p[0] for p in pts) / len(pts)
    my = sum(p[1] for p in pts) / len(pts)
    sxx = sum((p[0] - mx) ** 2 for p in pts)
    return sum((p[0] - mx) * (p[1] - my) for p in pts) / sxx if sxx else None


def plot_loglog(lengths, series: dict, ylabel: str, title: str = "", xlabel: str = "sequence length l"):
    """One line per ``series[name]`` (a list aligned with ``lengths``; ``None`` = not measured)
    on log-log axes, with its fitted slope in the legend. Returns ``(fig, {"slopes": ...})``."""
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    slopes = {}
    for name, values in series.items():
        pts = [(l, v) for l, v in zip(lengths, values) if v is not None and v > 0]
        if not pts:
            continue
        slopes[name] = loglog_slope(*zip(*pts))
        label = name if slopes[name] is None else f"{name} (slope {slopes[name]:.2f})"
        ax.plot(*zip(*pts), marker="o", label=label)
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig, {"lengths": list(lengths), "series": series, "slopes": slopes}


def benchmark_series(results: dict, section: str, mode: str = "fwd", dtype: str = "float32",
                     metric: str = "ms") -> tuple[list, dict]:
    """From a results file's ``section`` (``"scan-cuda"`` ...): the lengths measured and, per
    method, ``metric`` (``"ms"`` or ``"peak_mb"``) at each length (``None`` where skipped, out of
    memory or failed)."""
    rows = [r for r in results[section]["rows"] if r["mode"] == mode and r["dtype"] == dtype]
    lengths = sorted({r["L"] for r in rows})
    series = {}
    for r in rows:
        series.setdefault(r["method"], {})[r["L"]] = r.get(metric)
    return lengths, {m: [v.get(l) for l in lengths] for m, v in series.items()}


def plot_benchmark(results: dict, section: str, mode: str = "fwd", dtype: str = "float32",
                   metric: str = "ms"):
    """:func:`plot_loglog` of one benchmark section; returns ``(fig, data)``."""
    lengths, series = benchmark_series(results, section, mode, dtype, metric)
    unit = {"ms": "time (ms)", "peak_mb": "peak extra memory (MB)"}[metric]
    machine = results[section].get("machine", {})
    where = machine.get("gpu") or f"CPU, {machine.get('torch_threads')} threads"
    return plot_loglog(lengths, series, unit, f"{section}: {mode}, {dtype} ({where})")


def benchmark_table(results: dict, section: str, length: int, dtype: str = "float32") -> str:
    """A Markdown table of every method at one length: forward and forward+backward time and
    peak memory, ``oom``/``skipped`` where so recorded."""
    cells = {}
    for r in results[section]["rows"]:
        if r["L"] != length or r["dtype"] != dtype:
            continue
        if "ms" in r:
            text = f"{r['ms']:.4g} ms, {r.get('peak_mb', float('nan')):.0f} MB"
        else:
            text = r.get("status", "")
        cells.setdefault(r["method"], {})[r["mode"]] = text
    lines = [f"| method (l = {length}, {dtype}) | forward | forward+backward |", "| --- | --- | --- |"]
    lines += [f"| {m} | {v.get('fwd', '')} | {v.get('fwd+bwd', '')} |" for m, v in cells.items()]
    return "\n".join(lines)

# notebooks 08 and 09: training curves, the bigram table, the synthetic tasks.
import numpy as _np89  # noqa: E402


def plot_bigram(counts, chars, top: int = 20):
    """The bigram table ``p(next | previous)`` of the ``top`` most frequent characters, as an image.

    Args:
        counts: ``(V, V)`` pair counts (rows: previous character), tensor or array.
        chars: the ``V`` characters, in id order.
        top: how many of the most frequent previous characters to show (rows and columns).

    Returns:
        ``(fig, data)``; ``data`` holds ``ids (top,)`` (the characters shown, most frequent
        first), ``probs (top, top)`` (rows renormalized over the shown columns) and ``labels``.

    Raises:
        ValueError: a non-square table, ``len(chars)`` that does not match, ``top`` out of range.
    """
    counts = _np89.asarray(counts, dtype=_np89.float64)
    if counts.ndim != 2 or counts.shape[0] != counts.shape[1] or counts.shape[0] != len(chars):
        raise ValueError(f"counts must be (V, V) with V = len(chars) = {len(chars)}, got {counts.shape}")
    if isinstance(top, bool) or not isinstance(top, int) or not 1 <= top <= len(chars):
        raise ValueError(f"top must be an int in [1, {len(chars)}], got {top!r}")
    ids = _np89.argsort(-counts.sum(1), kind="stable")[:top]  # (top,)
    sub = counts[_np89.ix_(ids, ids)] + 1e-12
    probs = sub / sub.sum(1, keepdims=True)  # (top, top)
    labels = [repr(chars[i])[1:-1] if chars[i] not in " \n" else {" ": "␣", "\n": "⏎"}[chars[i]] for i in ids]
    fig, ax = plt.subplots(figsize=(5.6, 4.8))
    im = ax.imshow(probs, cmap="viridis")
    ax.set_xticks(range(top), labels, fontsize=8)
    ax.set_yticks(range(top), labels, fontsize=8)
    ax.set(xlabel="next character", ylabel="previous character",
           title=f"bigram p(next | previous), {top} most frequent characters")
    fig.colorbar(im, ax=ax, fraction=0.046)
    fig.tight_layout()
    return fig, {"ids": ids, "probs": probs, "labels": labels}


def plot_loss_curves(steps, train_loss, eval_steps, val_loss, baselines: dict | None = None,
                     smooth: int = 20, title: str = "training"):
    """Training loss (raw and smoothed), validation loss, and horizontal baselines, in nats.

    Args:
        steps, train_loss: one value per optimizer step.
        eval_steps, val_loss: the periodic validation evaluations.
        baselines: ``{"bigram": 2.48, ...}`` drawn as dashed lines.
        smooth: moving-average window for the training loss.

    Returns:
        ``(fig, data)``; ``data`` holds ``smoothed`` (the moving average, as long as
        ``train_loss``) and ``final_val`` (the last validation loss).

    Raises:
        ValueError: lists of different lengths, or no validation point.
    """
    if len(steps) != len(train_loss) or len(eval_steps) != len(val_loss) or not len(val_loss):
        raise ValueError("steps/train_loss and eval_steps/val_loss must pair up; need >= 1 validation point")
    loss = _np89.asarray(train_loss, dtype=_np89.float64)
    w = max(1, min(int(smooth), len(loss)))
    csum = _np89.cumsum(_np89.insert(loss, 0, 0.0))
    smoothed = _np89.array([(csum[i + 1] - csum[max(0, i + 1 - w)]) / min(i + 1, w) for i in range(len(loss))])
    fig, ax = plt.subplots(figsize=(7, 3.6))
    ax.plot(steps, loss, color="C0", alpha=0.25, lw=0.8)
    ax.plot(steps, smoothed, color="C0", label="train (moving average)")
    ax.plot(eval_steps, val_loss, "o-", color="C1", label="validation")
    for i, (name, value) in enumerate((baselines or {}).items()):
        ax.axhline(value, ls="--", color=f"C{i + 2}", lw=1, label=f"{name} {value:.2f}")
    ax.set(xlabel="step", ylabel="cross-entropy (nats / token)", title=title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig, {"smoothed": smoothed, "final_val": float(val_loss[-1])}


def plot_task_example(inputs, targets, predictions: dict | None = None, vocab_size: int = 16,
                      special: tuple[int, ...] = (), noise: int | None = None, title: str = ""):
    """One task sequence as a strip of coloured cells (as the paper's Figure 2), answers below.

    Args:
        inputs: ``(l,)`` token ids of one row.
        targets: ``(l,)`` with ``-100`` where nothing is asked.
        predictions: ``{"S6": (l,) ids, "LTI": (l,) ids}``: each model's argmax, shown at the
            asked positions (a cross marks a wrong answer).
        vocab_size: for the colour scale.
        special: ids drawn in black (the marker or trigger).
        noise: the id drawn white (selective copying's noise token), if any.

    Returns:
        ``(fig, data)``; ``data`` holds ``asked`` (the asked positions) and per model
        ``correct`` (bool per asked position).
    """
    inputs = _np89.asarray(inputs)
    targets = _np89.asarray(targets)
    asked = _np89.nonzero(targets != -100)[0]
    rows = 1 + 1 + len(predictions or {})
    fig, ax = plt.subplots(figsize=(min(14, 0.16 * len(inputs) + 2), 0.45 * rows + 1.0))
    cmap = plt.get_cmap("tab20", vocab_size)

    def colour(t):
        if noise is not None and t == noise:
            return (1, 1, 1, 1)
        return (0, 0, 0, 1) if t in special else cmap(int(t))

    def cell(x, y, t, edge="0.7"):
        ax.add_patch(plt.Rectangle((x, y), 0.9, 0.9, facecolor=colour(t), edgecolor=edge, lw=0.5))

    for i, t in enumerate(inputs):
        cell(i, rows - 1, t)
    for i in asked:
        cell(i, rows - 2, targets[i])
    data = {"asked": asked}
    names = ["input", "target"]
    for r, (name, pred) in enumerate((predictions or {}).items()):
        pred = _np89.asarray(pred)
        ok = pred[asked] == targets[asked]
        data[name] = {"correct": ok}
        for i, good in zip(asked, ok):
            cell(i, rows - 3 - r, pred[i])
            if not good:
                ax.plot([i, i + 0.9], [rows - 3 - r, rows - 2.1 - r], color="r", lw=1.2)
        names.append(f"{name} ({int(ok.sum())}/{len(ok)})")
    ax.set_xlim(-0.5, len(inputs) + 0.5)
    ax.set_ylim(-0.2, rows + 0.1)
    ax.set_yticks([rows - 1 - i + 0.45 for i in range(rows)], names)
    ax.set_xlabel("position")
    ax.set_title(title)
    for side in ("top", "right", "left"):
        ax.spines[side].set_visible(False)
    fig.tight_layout()
    return fig, data


def plot_accuracy_curves(curves: dict, chance: float | None = None, title: str = "validation accuracy"):
    """Accuracy against training step for several runs: ``curves = {name: (steps, accuracies)}``.

    Returns ``(fig, data)``; ``data`` maps each name to its final accuracy.
    """
    fig, ax = plt.subplots(figsize=(6.5, 3.4))
    final = {}
    for name, (steps, acc) in curves.items():
        if len(steps) != len(acc) or not len(acc):
            raise ValueError(f"curve {name!r}: steps and accuracies must pair up and not be empty")
        ax.plot(steps, acc, "o-", ms=3, label=name)
        final[name] = float(acc[-1])
    if chance is not None:
        ax.axhline(chance, ls=":", color="k", lw=1, label=f"chance {chance:.2f}")
    ax.set(xlabel="step", ylabel="token accuracy", ylim=(0, 1.02), title=title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig, final


def plot_length_generalization(results: dict, train_length: int, threshold: float | None = None,
                               chance: float | None = None):
    """Accuracy against test length (log scale) per model: ``results = {name: {length: accuracy}}``.

    The training length is marked; ``threshold`` draws the pass line. Returns ``(fig, data)``
    with ``data[name] = (lengths sorted, accuracies)``.
    """
    fig, ax = plt.subplots(figsize=(6.5, 3.4))
    data = {}
    for name, by_length in results.items():
        lengths = sorted(int(k) for k in by_length)
        acc = [float(by_length[k] if k in by_length else by_length[str(k)]) for k in lengths]
        ax.plot(lengths, acc, "o-", label=name)
        data[name] = (lengths, acc)
    ax.axvline(train_length, color="0.5", lw=1, ls="--", label=f"trained at {train_length}")
    if threshold is not None:
        ax.axhline(threshold, color="r", lw=0.8, ls=":", label=f"{threshold:.0%}")
    if chance is not None:
        ax.axhline(chance, color="k", lw=0.8, ls=":", label=f"chance {chance:.2f}")
    ax.set_xscale("log", base=2)
    ax.set(xlabel="test sequence length", ylabel="accuracy", ylim=(0, 1.02),
           title="induction heads: accuracy vs test length")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig, data

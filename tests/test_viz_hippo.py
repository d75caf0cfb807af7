"""The plots of notebook 01, section 4 (``minimamba_core/viz/hippo.py``): HiPPO-LegS and the
initializations of ``A``.

HiPPO-LegS is pinned to independent references: the matrices to their entries written out for
``N = 3`` from the formula of Gu et al. 2020 (Theorem 2), the final state to the Legendre
coefficients of the input computed by exact integration, and the recurrence to a fine
fourth-order Runge-Kutta solution of the ODE. The horizons to ``1 / (delta |A_n|)``.
"""

import math

import matplotlib

matplotlib.use("agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from numpy.polynomial import legendre  # noqa: E402

from minimamba_core import viz  # noqa: E402


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def test_legs_matrices_by_hand():
    A, B = viz.legs_matrices(3)
    s3, s5, s15 = math.sqrt(3), math.sqrt(5), math.sqrt(15)
    assert np.array_equal(A, np.array([[1.0, 0, 0], [s3, 2, 0], [s5, s15, 3]]))
    assert B == pytest.approx([1.0, s3, s5], abs=1e-15)
    # a constant input has only a degree-0 coefficient: A^-1 B = e_0 for every N
    for N in (1, 4, 16):
        A, B = viz.legs_matrices(N)
        assert np.abs(np.linalg.solve(A, B) - np.eye(N)[0]).max() < 1e-12


def _legendre_coefficients(f, N):
    """Exact coefficients of the piecewise-constant ``f`` (``f_k`` on ``[k/L, (k+1)/L)``) in
    ``sqrt(2n+1) P_n(2s - 1)`` on ``[0, 1]``: integrals of the polynomials over every piece."""
    L = len(f)
    edges = np.arange(L + 1) / L
    out = []
    for n in range(N):
        F = legendre.legval(2 * edges - 1, legendre.legint(np.eye(N)[n])) / 2 * math.sqrt(2 * n + 1)
        out.append(float(np.diff(F) @ f))
    return np.array(out)


@pytest.mark.parametrize("signal", viz.HIPPO_SIGNALS)
@pytest.mark.parametrize("N", [1, 4, 16])
def test_legs_state_is_the_projection_of_the_past(signal, N):
    f = viz.hippo_signal(signal, 400)
    c = viz.legs_states(f, N)
    # measured: within 3e-4 (smooth) and 2e-3 (steps, N = 32) of the exact coefficients at L = 400
    assert np.abs(c[-1] - _legendre_coefficients(f, N)).max() < 1e-3
    # and at an earlier time the state describes the past up to then
    assert np.abs(c[199] - _legendre_coefficients(f[:200], N)).max() < 2e-3


def test_legs_states_follows_the_ode():
    # c' = -(1/t) A c + (1/t) B f with f held on each [k, k+1): RK4 with 400 substeps per unit
    N, f = 4, viz.hippo_signal("smooth", 40)
    A, B = viz.legs_matrices(N)
    c = f[0] * np.eye(N)[0]
    for k in range(1, 40):
        dt = 1.0 / 400
        for i in range(400):
            t = k + i * dt
            rhs = lambda t, c: (-A @ c + B * f[k]) / t  # noqa: E731
            k1 = rhs(t, c); k2 = rhs(t + dt / 2, c + dt / 2 * k1)  # noqa: E702
            k3 = rhs(t + dt / 2, c + dt / 2 * k2); k4 = rhs(t + dt, c + dt * k3)  # noqa: E702
            c = c + dt / 6 * (k1 + 2 * k2 + 2 * k3 + k4)
    assert np.abs(viz.legs_states(f, N)[-1] - c).max() < 1e-3


def test_reconstruction_improves_with_N():
    rms = [viz.plot_hippo_reconstruction(N=N, signal="smooth")[1]["rms"] for N in (4, 8, 16, 32)]
    assert all(a > b for a, b in zip(rms, rms[1:])), rms
    assert rms[2] < 1e-3  # measured 4.5e-4
    steps = [viz.plot_hippo_reconstruction(N=N, signal="steps")[1]["rms"] for N in (4, 16, 64)]
    assert steps[0] > steps[1] > steps[2]


def test_legendre_reconstruct_orthonormal_basis():
    s = np.array([0.0, 0.25, 1.0])
    assert viz.legendre_reconstruct([0, 1.0], s) == pytest.approx(math.sqrt(3) * (2 * s - 1), abs=1e-15)
    assert viz.legendre_reconstruct([2.0], s) == pytest.approx([2.0] * 3, abs=1e-15)


@pytest.mark.parametrize("init", viz.A_INITS)
@pytest.mark.parametrize("delta", [0.01, 0.1, 1.0])
def test_memory_horizons(init, delta):
    _, d = viz.plot_memory_horizons(init=init, delta=delta, d_state=8)
    assert (d["A"] < 0).all()
    assert d["horizons"] == pytest.approx(1 / (delta * np.abs(d["A"])), rel=1e-15)
    # the kernel falls by 1/e every horizon: log K_n(k) = -k / horizon_n
    k = np.arange(d["kernels"].shape[1])
    assert np.abs(np.log(d["kernels"]) + k[None] / d["horizons"][:, None]).max() < 1e-12
    expected_spread = {"s4d-real": 8.0, "constant": 1.0}.get(init)
    if expected_spread is not None:
        assert d["spread"] == pytest.approx(expected_spread, rel=1e-14)


def test_init_A_values():
    assert np.array_equal(viz.init_A("s4d-real", 4), [-1.0, -2.0, -3.0, -4.0])
    assert np.array_equal(viz.init_A("constant", 3), [-0.5] * 3)
    r = viz.init_A("random", 16)
    assert np.array_equal(r, viz.init_A("random", 16)) and ((r < -0.1) & (r > -16)).all()
    # S4D-Real is the spectrum of HiPPO-LegS: -A_LegS is lower triangular with diagonal -(1..N)
    assert np.array_equal(np.diag(-viz.legs_matrices(8)[0]), viz.init_A("s4d-real", 8))


@pytest.mark.parametrize("fn, kwargs, match", [
    (viz.legs_matrices, dict(N=0), "N"), (viz.legs_states, dict(f=[], N=2), "f"),
    (viz.hippo_signal, dict(signal="sine"), "signal"), (viz.init_A, dict(init="s4d-lin"), "init"),
    (viz.plot_memory_horizons, dict(delta=0.0), "delta"), (viz.plot_memory_horizons, dict(d_state=0), "d_state"),
])
def test_rejects_bad_input(fn, kwargs, match):
    with pytest.raises(ValueError, match=match):
        fn(**kwargs)

"""The plots of notebook 15 (``minimamba_core/viz/mamba3.py``): the data behind each figure.

The exact solution is held against a fine Runge-Kutta integration of the ODE; the rules'
error orders against what Taylor expansion predicts (local order 2 for the Euler-type rules and
ZOH, 3 for the trapezoid at lam = 1/2 only); the rotation against complex multiplication and
against the package's ``rotate_pairs``; the parity state against the running parity.
"""

import matplotlib

matplotlib.use("agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from minimamba_core import viz  # noqa: E402
from minimamba_core.mamba3 import rotate_pairs  # noqa: E402
from minimamba_core.viz import mamba3 as m3  # noqa: E402


def call(fn, *args, **kwargs):
    fig, data = fn(*args, **kwargs)
    assert isinstance(fig, matplotlib.figure.Figure)
    plt.close(fig)
    return data


def test_exact_solution_against_runge_kutta():
    """Classical RK4 with 4000 steps on [0, 3]: error ~ h^4 ~ 1e-13, far below the rules' errors."""
    f = lambda t, h: m3.ODE_A * h + np.cos(m3.ODE_W * t)  # noqa: E731
    n, T = 4000, 3.0
    h, dt = m3.ODE_H0, T / n
    for k in range(n):
        t = k * dt
        k1 = f(t, h)
        k2 = f(t + dt / 2, h + dt / 2 * k1)
        k3 = f(t + dt / 2, h + dt / 2 * k2)
        k4 = f(t + dt, h + dt * k3)
        h += dt / 6 * (k1 + 2 * k2 + 2 * k3 + k4)
    assert abs(h - m3.exact_solution(T)) < 1e-12


def test_local_error_orders():
    slopes = {r: m3.error_slope(m3.local_errors(r)) for r in m3.STEP_RULES}
    for r in ("euler", "exp-euler", "zoh"):
        assert 1.9 < slopes[r] < 2.1, (r, slopes[r])
    assert 2.9 < slopes["trapezoid"] < 3.1
    for lam in (0.0, 0.3, 1.0):  # only the symmetric mix cancels the second-order term
        assert 1.9 < m3.error_slope(m3.local_errors("trapezoid", lam)) < 2.1


def test_trapezoid_limits_are_the_euler_type_rules():
    """lam = 1 is Mamba-2's rule (exp-euler), exactly."""
    t, h = np.linspace(0, 2, 5), np.linspace(-1, 1, 5)
    np.testing.assert_array_equal(m3.step_rule(h, t, 0.1, "trapezoid", 1.0), m3.step_rule(h, t, 0.1, "exp-euler"))


@pytest.mark.parametrize("rule", m3.STEP_RULES)
def test_plot_discretization_error_data(rule):
    d = call(viz.plot_discretization_error, delta=0.25, rule=rule)
    assert len(d["t"]) == 25 and d["h"][0] == m3.ODE_H0
    np.testing.assert_allclose(d["h_exact"], m3.exact_solution(d["t"]), rtol=0, atol=0)
    assert d["global_error"] == np.abs(d["h"] - d["h_exact"]).max()
    assert set(d["errors"]) == set(m3.STEP_RULES) and d["local_error"] > 0


def test_global_error_halves_or_quarters():
    """Halving delta: global error / 2 for the Euler-type rules and ZOH, / 4 for the trapezoid."""
    for rule, factor in (("euler", 2), ("exp-euler", 2), ("zoh", 2), ("trapezoid", 4)):
        e1 = call(viz.plot_discretization_error, delta=0.05, rule=rule)["global_error"]
        e2 = call(viz.plot_discretization_error, delta=0.025, rule=rule)["global_error"]
        assert 0.85 * factor < e1 / e2 < 1.15 * factor, (rule, e1 / e2)


@pytest.mark.parametrize("theta, decay", [(0.6, 0.05), (np.pi, 0.0), (-1.0, 0.5), (0.0, 0.2)])
def test_rotation_is_complex_multiplication(theta, decay):
    d = call(viz.plot_rotation, theta=theta, decay=decay, steps=30)
    z = d["h"][:, 0] + 1j * d["h"][:, 1]
    want = np.exp(complex(-decay, theta)) ** np.arange(31)
    np.testing.assert_allclose(z, want, rtol=0, atol=1e-13)
    assert d["eigenvalue"] == np.exp(complex(-decay, theta)) and abs(d["radius"] - np.exp(-decay)) < 1e-15
    # the package's rotate_pairs turns the same way
    v = torch.tensor([0.3, -0.7], dtype=torch.float64)
    turned = rotate_pairs(v, torch.tensor([theta], dtype=torch.float64)).numpy()
    w = (0.3 - 0.7j) * np.exp(1j * theta)
    np.testing.assert_allclose(turned, [w.real, w.imag], rtol=0, atol=1e-15)


def test_parity():
    d = call(viz.plot_parity, length=1000, seed=3)
    np.testing.assert_allclose(d["by_rotation"], d["parity"], rtol=0, atol=1e-12)
    rising = np.diff(d["ones_real"])  # a positive decay on 1 1 1 ...: monotone, up to its limit 1 / (1 - a)
    assert np.all(rising[:100] > 0) and np.all(rising >= 0) and abs(d["ones_real"][-1] - 10.0) < 1e-12


def test_bad_arguments():
    with pytest.raises(ValueError, match="rule"):
        viz.plot_discretization_error(rule="rk4")
    with pytest.raises(ValueError, match="lam"):
        viz.plot_discretization_error(lam=1.5)
    with pytest.raises(ValueError, match="delta"):
        viz.plot_discretization_error(delta=0.0)
    with pytest.raises(ValueError, match="decay"):
        viz.plot_rotation(decay=-0.1)
    with pytest.raises(ValueError, match="steps"):
        viz.plot_rotation(steps=0)

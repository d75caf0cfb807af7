"""The plot of notebook 00 (``minimamba_core/viz/intro.py``): a scalar SSM reading an input.

The data behind the figure is pinned to the package's scan and to hand-computed values.
"""

import math

import matplotlib

matplotlib.use("agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

import minimamba_core as mm  # noqa: E402
from minimamba_core import viz  # noqa: E402


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


@pytest.mark.parametrize("delta, A, C", [(0.5, -1.0, 1.5), (0.05, -3.0, -0.7), (2.0, -0.2, 1.0)])
@pytest.mark.parametrize("signal", viz.SELECTION_SIGNALS)
def test_scalar_ssm_equals_the_package_scan(delta, A, C, signal):
    x = viz.selection_signal(signal, 48)
    h, y = viz.scalar_ssm(x, delta, A, C)
    f64 = torch.float64
    ones = torch.ones(1, 48, 1, dtype=f64)
    y_pkg = mm.selective_scan_sequential(torch.tensor(x).view(1, 48, 1), torch.full((1, 48, 1), delta, dtype=f64),
                                         torch.tensor([[A]], dtype=f64), ones, C * ones)[0, :, 0]
    assert np.abs(y - y_pkg.numpy()).max() < 1e-12
    assert np.abs(y - C * h).max() == 0.0


def test_scalar_ssm_by_hand():
    # A = -1, delta = ln 2: A_bar = 1/2, B_bar = ln 2 (the house's hand-computed case)
    h, _ = viz.scalar_ssm([1.0, 0.0, 0.0, 2.0], math.log(2), -1.0)
    assert h == pytest.approx([math.log(2) * v for v in (1.0, 0.5, 0.25, 2.125)], abs=1e-15)


def test_plot_state_evolution_data():
    _, d = viz.plot_state_evolution(delta=0.5, A=-2.0, C=1.5, signal="pulses")
    assert d["A_bar"] == pytest.approx(math.exp(-1.0), abs=1e-15) and d["B_bar"] == 0.5
    assert d["memory_steps"] == pytest.approx(1.0, abs=1e-15)
    # after the first pulse (x_4 = 1) and before the next (t = 13) the state decays by A_bar per step
    assert d["h"][4] == pytest.approx(0.5, abs=1e-15)
    assert d["h"][5:13] == pytest.approx(0.5 * math.exp(-1.0) ** np.arange(1, 9), abs=1e-15)
    assert np.abs(d["y"] - 1.5 * d["h"]).max() == 0.0


@pytest.mark.parametrize("kwargs, match", [
    (dict(delta=0.0), "delta"), (dict(A=0.0), "A"), (dict(A=True), "A"), (dict(signal="sine"), "signal"),
    (dict(length=0), "length"),
])
def test_plot_state_evolution_rejects_bad_input(kwargs, match):
    with pytest.raises(ValueError, match=match):
        viz.plot_state_evolution(**kwargs)

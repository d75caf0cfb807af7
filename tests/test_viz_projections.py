"""The plot of notebook 02, section 3 (``minimamba_core/viz/projections.py``): ``B`` writes,
``C`` reads. Pinned to the package's scan and to the closed form of a diagonal SSM."""

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


@pytest.mark.parametrize("write, read, skip, delta", [(2, 2, 13, 0.1), (1, 8, 0, 0.3), (5, 3, 47, 0.02)])
def test_write_read_equals_the_package_scan(write, read, skip, delta):
    _, d = viz.plot_write_read(write=write, read=read, skip=skip, delta=delta)
    L, N = d["B_t"].shape
    f64 = torch.float64
    y_pkg = mm.selective_scan_sequential(
        torch.tensor(d["x"]).view(1, L, 1), torch.full((1, L, 1), delta, dtype=f64),
        -torch.arange(1, N + 1, dtype=f64)[None], torch.tensor(d["B_t"])[None],
        torch.tensor(d["C"]).expand(1, L, N))[0, :, 0]
    assert np.abs(d["y"] - y_pkg.numpy()).max() < 1e-12
    assert (d["B_t"][skip] == 0).all() and np.delete(d["B_t"], skip, axis=0) == pytest.approx(
        np.tile(d["B"], (L - 1, 1)), abs=0)


def test_write_read_closed_form():
    # h_t[n] = sum_j exp(-delta n (t - j)) delta B_j[n] x_j
    _, d = viz.plot_write_read(write=3, read=6, skip=22, delta=0.2)
    L, N = d["B_t"].shape
    t = np.arange(L)
    n = np.arange(1, N + 1)
    decay = np.exp(-0.2 * n[:, None, None] * (t[None, :, None] - t[None, None, :]))  # (N, t, j)
    decay = decay * (t[None, :, None] >= t[None, None, :])
    h = np.einsum("ntj,jn,j->nt", decay, 0.2 * d["B_t"], d["x"])
    assert np.abs(h - d["h"]).max() < 1e-12 and np.abs(d["C"] @ h - d["y"]).max() < 1e-12


def test_skipped_token_leaves_no_trace():
    _, d = viz.plot_write_read(write=2, read=2, skip=13, delta=0.1)  # x_13 = -0.7 is a pulse
    A_bar = np.exp(-0.1 * np.arange(1, 9))
    assert np.abs(d["h"][:, 13] - A_bar * d["h"][:, 12]).max() < 1e-15
    _, full = viz.plot_write_read(write=2, read=2, skip=0, delta=0.1)  # x_0 = 0: nothing skipped
    assert np.abs(full["h"][:, 13] - A_bar * full["h"][:, 12] - 0.1 * full["B"] * -0.7).max() < 1e-15


def test_reading_a_slow_state_remembers_longer():
    # after the last pulse (t = 35), the output decays at the read states' rates: 10 steps of
    # states 1 and 2 (weights 1, e^-1/2) keep between e^-2 and e^-1 of it; of states 7 and 8, < e^-7
    slow = viz.plot_write_read(write=1, read=1, skip=0, delta=0.1)[1]["y"]
    fast = viz.plot_write_read(write=8, read=8, skip=0, delta=0.1)[1]["y"]
    assert abs(slow[45] / slow[35]) > 0.25 and abs(fast[45] / fast[35]) < 0.01


def test_state_bump():
    assert viz.state_bump(2, 4) == pytest.approx(np.exp(-np.array([1, 0, 1, 4]) / 2), abs=1e-15)


@pytest.mark.parametrize("kwargs, match", [
    (dict(write=0), "write"), (dict(read=9), "read"), (dict(skip=48), "skip"), (dict(delta=0.0), "delta"),
    (dict(signal="sine"), "signal"),
])
def test_plot_write_read_rejects_bad_input(kwargs, match):
    with pytest.raises(ValueError, match=match):
        viz.plot_write_read(**kwargs)

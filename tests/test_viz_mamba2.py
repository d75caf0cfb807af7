"""The plots of notebook 13 (``minimamba_core/viz/mamba2.py``): the data behind each figure.

The four steps' factors are held against ``M`` (numpy, ``viz/ssd.py``) and against the package's
chunked SSD (its final state and its output, fed the identity so that ``y = M``); the parameter
split against the counts it is given; the loss comparison against its inputs.
"""

import matplotlib

matplotlib.use("agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

import minimamba_core as mm  # noqa: E402
from minimamba_core import viz  # noqa: E402

f64 = torch.float64


def call(fn, *args, **kwargs):
    fig, data = fn(*args, **kwargs)
    assert isinstance(fig, matplotlib.figure.Figure)
    plt.close(fig)
    return data


@pytest.mark.parametrize("decay, spread, chunk", [(0.1, 0.5, 12), (0.0, 0.0, 8), (1.0, 2.0, 5), (0.3, 1.0, 48),
                                                  (0.2, 0.5, 1)])
def test_the_four_steps_factor_m(decay, spread, chunk):
    d = call(viz.plot_chunked_steps, decay=decay, spread=spread, chunk=chunk)
    M, edges = d["M"], d["boundaries"]
    assert edges == viz.chunk_boundaries(48, chunk) and d["steps"] == viz.CHUNK_STEPS
    np.testing.assert_array_equal(d["diag_part"] + d["off_part"], M)
    c = len(edges) - 1
    assert d["chunk_decay"].shape == (c, c) and np.all(np.triu(d["chunk_decay"]) == 0)
    scale = np.abs(M).max()
    for i in range(c):
        rows = slice(edges[i], edges[i + 1])
        np.testing.assert_array_equal(d["diag_part"][rows, rows], M[rows, rows])  # step 1: the diagonal blocks
        for j in range(i):
            cols = slice(edges[j], edges[j + 1])
            block = d["chunk_decay"][i, j] * d["left"][rows] @ d["right"][cols].T  # steps 2-4
            np.testing.assert_allclose(block, M[rows, cols], rtol=0, atol=1e-13 * scale)
            # the decay between chunks is the product of the whole chunks' decays in between
            between = np.prod([np.exp(d["A"] * d["dt"][edges[k]:edges[k + 1]].sum()) for k in range(j + 1, i)])
            np.testing.assert_allclose(d["chunk_decay"][i, j], between, rtol=1e-13)
    assert np.all(d["off_part"][d["same_chunk"]] == 0)


def test_factors_agree_with_the_packages_chunked_ssd():
    """``right`` summed over a chunk is that chunk's own final state; ``M`` is the package's output."""
    d = call(viz.plot_chunked_steps, decay=0.4, spread=1.0, chunk=12)
    t = lambda a: torch.as_tensor(a, dtype=f64)  # noqa: E731
    eye = torch.eye(48, dtype=f64)[None, :, None]  # (1, l, 1, l): y[t, s] = M[t, s]
    args = (t(d["dt"])[None, :, None], t([d["A"]]), t(d["B"])[None, :, None], t(d["C"])[None, :, None])
    y, final = mm.ssd_chunked(eye, *args, chunk_size=12, return_final_states=True)
    np.testing.assert_allclose(y[0, :, 0].numpy(), d["M"], rtol=0, atol=1e-12 * np.abs(d["M"]).max())
    # final state h[p = s, n] = decay from s to the end * dt_s B_s: the last chunk's right, the others decayed
    edges = d["boundaries"]
    expect = d["right"].copy()
    for j in range(len(edges) - 2):
        rest = np.exp(d["A"] * d["dt"][edges[j + 1]:].sum())  # across the chunks after j
        expect[edges[j]:edges[j + 1]] *= rest
    np.testing.assert_allclose(final[0, 0].numpy(), expect, rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("kwargs, match", [(dict(chunk=0), "chunk"), (dict(chunk=49), "chunk"),
                                           (dict(decay=-1.0), "decay"), (dict(d_state=0), "d_state")])
def test_plot_chunked_steps_rejects_bad_input(kwargs, match):
    with pytest.raises(ValueError, match=match):
        viz.plot_chunked_steps(**kwargs)


def test_parameter_split():
    counts = {"Mamba-1": {"in_proj": 10, "x_proj": 3, "out_proj": 5}, "Mamba-2": {"in_proj": 12, "norm": 1, "out_proj": 5}}
    d = call(viz.plot_parameter_split, counts)
    assert d["labels"] == ["Mamba-1", "Mamba-2"] and d["names"] == ["in_proj", "x_proj", "out_proj", "norm"]
    np.testing.assert_array_equal(d["counts"], [[10, 3, 5, 0], [12, 0, 5, 1]])
    np.testing.assert_array_equal(d["totals"], [18, 18])
    assert d["too_small"] == {"Mamba-1": [], "Mamba-2": []}
    d = call(viz.plot_parameter_split, {"a": {"big": 10_000, "tiny": 8}, "b": {"big": 9_000}})
    assert d["too_small"] == {"a": ["tiny"], "b": []}
    with pytest.raises(ValueError, match="at least one"):
        viz.plot_parameter_split({})
    with pytest.raises(ValueError, match=">= 0"):
        viz.plot_parameter_split({"a": {"w": -1}})


def test_loss_comparison():
    runs = {"a": dict(step=[0, 1, 2, 3], train_loss=[4.0, 3.0, 2.0, 1.0], eval_step=[1, 3], val_loss=[3.5, 1.5]),
            "b": dict(step=[0, 1], train_loss=[2.0, 2.0], eval_step=[1], val_loss=[2.0])}
    d = call(viz.plot_loss_comparison, runs, baselines={"bigram": 2.48}, smooth=2)
    assert d["final_val"] == {"a": 1.5, "b": 2.0}
    np.testing.assert_allclose(d["smoothed"]["a"], [4.0, 3.5, 2.5, 1.5])
    with pytest.raises(ValueError, match="pair up"):
        viz.plot_loss_comparison({"a": dict(step=[0], train_loss=[1.0, 2.0], eval_step=[0], val_loss=[1.0])})
    with pytest.raises(ValueError, match="at least one"):
        viz.plot_loss_comparison({})


def test_chunked_steps_labels_the_chunk_states_s_j():
    """Panel 2 names chunk j's own state S_j (not the last chunk's: no block lies below it); panel 4
    names the entering states h_into i; panel 3 says its numbers are the decays between chunks."""
    fig, _ = viz.plot_chunked_steps(decay=0.1, spread=0.5, chunk=12)
    axes = fig.axes
    assert [t.get_text() for t in axes[1].texts] == ["$S_0$", "$S_1$", "$S_2$"]
    assert [t.get_text().strip() for t in axes[3].texts] == [rf"$h_{{\mathrm{{into}}\,{i}}}$" for i in (1, 2, 3)]
    assert viz.mamba2.BETWEEN_LABEL in axes[2].get_title()
    plt.close(fig)


def test_parameter_split_axis_has_thousands_separators():
    fig, _ = viz.plot_parameter_split({"a": {"w": 60_000, "b": 60_000}})
    fig.canvas.draw()
    labels = [t.get_text() for t in fig.axes[0].get_xticklabels()]
    assert any("," in s for s in labels), labels
    plt.close(fig)

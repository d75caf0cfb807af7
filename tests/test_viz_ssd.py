"""The plot of notebook 12 (``minimamba_core/viz/ssd.py``): the data behind the SSD matrix figure.

The matrix is held against the package's SSD (read off ``mm.ssd_sequential`` by feeding the
identity as the input, so no formula is shared), the chunk boundaries against their definition,
the ranks against the factorization ``M[t, s] = (e^{c_t} C_t) . (e^{-c_s} dt_s B_s)``; and every
control of the notebook's widget must change the data, as the browser test will drag it.
"""

import ast
from pathlib import Path

import matplotlib

matplotlib.use("agg")

import ipywidgets  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import nbformat  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

import minimamba_core as mm  # noqa: E402
from minimamba_core import viz  # noqa: E402

NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "12_state_space_duality.ipynb"
f64 = torch.float64


def call(fn, **kwargs):
    fig, data = fn(**kwargs)
    assert isinstance(fig, matplotlib.figure.Figure)
    plt.close(fig)
    return data


def package_matrix(ex):
    """``M`` as the package computes it: the response of ``mm.ssd_sequential`` to the identity
    (``headdim = l``: channel ``s`` of the input is 1 at step ``s`` only, so ``y[t, s] = M[t, s]``)."""
    l, n = ex["B"].shape
    eye = torch.eye(l, dtype=f64)[None, :, None]  # (1, l, 1, l)
    t = lambda a: torch.as_tensor(a, dtype=f64)  # noqa: E731
    y = mm.ssd_sequential(eye, t(ex["dt"])[None, :, None], t([ex["A"]]),
                          t(ex["B"])[None, :, None], t(ex["C"])[None, :, None])  # (1, l, 1, l)
    return y[0, :, 0].numpy()


@pytest.mark.parametrize("decay, spread", [(0.0, 0.0), (0.1, 0.5), (1.0, 2.0), (0.3, 0.0)])
def test_matrix_is_the_packages_ssd(decay, spread):
    d = call(viz.plot_ssd_matrix, decay=decay, spread=spread, chunk=8)
    M = d["M"]
    assert M.shape == (48, 48) and M.dtype == np.float64
    np.testing.assert_allclose(M, package_matrix(d), rtol=0, atol=1e-12 * np.abs(M).max())
    assert np.all(np.triu(M, 1) == 0)  # causal
    np.testing.assert_allclose(np.diag(M), (d["C"] * d["B"]).sum(1) * d["dt"], rtol=1e-13)  # L[t, t] = 1
    np.testing.assert_allclose(M, d["L"] * d["scores"] * d["dt"][None, :], rtol=0, atol=0)
    np.testing.assert_allclose(d["scores"], d["C"] @ d["B"].T, rtol=1e-15)


def test_no_decay_is_causal_linear_attention_and_spread_sets_dt():
    d = call(viz.plot_ssd_matrix, decay=0.0, spread=0.0)
    np.testing.assert_array_equal(d["L"], np.tril(np.ones((48, 48))))
    np.testing.assert_allclose(d["M"], np.tril(d["C"] @ d["B"].T) * 0.5, rtol=1e-15)  # dt = dt_mean = 0.5
    # spread is the standard deviation of log dt; the draws are the same for every spread
    z1 = np.log(viz.ssd_matrix_example(spread=1.0, length=1000)["dt"] / 0.5) + 0.5
    z2 = np.log(viz.ssd_matrix_example(spread=2.0, length=1000)["dt"] / 0.5) + 2.0
    np.testing.assert_allclose(2 * z1, z2, rtol=1e-12, atol=1e-12)
    assert abs(z1.std() - 1.0) < 0.1
    # a constant step (spread 0) gives a Toeplitz decay mask: L[t, s] = exp(-decay dt (t - s))
    L = call(viz.plot_ssd_matrix, decay=0.4, spread=0.0)["L"]
    t, s = np.indices(L.shape)
    np.testing.assert_allclose(L, np.where(t >= s, np.exp(-0.4 * 0.5 * (t - s)), 0.0), rtol=1e-13)


@pytest.mark.parametrize("length, chunk, expected", [
    (48, 8, [0, 8, 16, 24, 32, 40, 48]), (48, 20, [0, 20, 40, 48]), (48, 48, [0, 48]), (5, 1, [0, 1, 2, 3, 4, 5]),
])
def test_chunk_boundaries(length, chunk, expected):
    assert viz.chunk_boundaries(length, chunk) == expected
    d = call(viz.plot_ssd_matrix, chunk=min(chunk, 48), length=max(length, chunk))
    assert d["boundaries"] == viz.chunk_boundaries(max(length, chunk), min(chunk, 48))


@pytest.mark.parametrize("chunk", [4, 8, 12, 20, 24])
@pytest.mark.parametrize("d_state", [1, 3, 6])
def test_blocks_below_the_diagonal_have_rank_at_most_n(chunk, d_state):
    d = call(viz.plot_ssd_matrix, decay=0.2, spread=1.0, chunk=chunk, d_state=d_state)
    edges = d["boundaries"]
    c = len(edges) - 1
    assert d["blocks"] == [(i, j) for i in range(c) for j in range(i)]
    assert len(d["singular_values"]) == len(d["ranks"]) == c * (c - 1) // 2
    for (i, j), sv, rank in zip(d["blocks"], d["singular_values"], d["ranks"]):
        rows, cols = edges[i + 1] - edges[i], edges[j + 1] - edges[j]
        block = torch.as_tensor(d["M"][edges[i]:edges[i + 1], edges[j]:edges[j + 1]])
        np.testing.assert_allclose(sv, torch.linalg.svdvals(block).numpy(), rtol=1e-10, atol=1e-14 * sv[0])
        assert len(sv) == min(rows, cols)
        # generic random B, C: the rank is exactly min(N, block size)
        assert rank == min(d_state, rows, cols), ((i, j), sv)
    assert d["max_rank"] == min(d_state, chunk) and d["d_state"] == d_state


def test_rank_bound_comes_from_the_factorization():
    ex = viz.ssd_matrix_example(decay=0.3, spread=1.0, length=24, d_state=2)
    c = np.cumsum(ex["dt"] * ex["A"])  # (l,) running log-decay (mild here: no overflow)
    U = np.exp(c)[:, None] * ex["C"]  # (l, N)
    V = (np.exp(-c) * ex["dt"])[:, None] * ex["B"]  # (l, N)
    np.testing.assert_allclose(np.tril(U @ V.T), ex["M"], rtol=1e-12, atol=1e-14)
    sv = viz.block_singular_values(ex["M"], 6)
    assert sv["ranks"] == [2] * 6


def test_single_chunk_and_zero_blocks():
    d = call(viz.plot_ssd_matrix, chunk=48)
    assert d["blocks"] == [] and d["max_rank"] == 0 and d["boundaries"] == [0, 48]
    # a block of zeros (the decay underflows) has rank 0
    M = np.tril(np.ones((6, 6)))
    M[3:, :3] = 0.0
    assert viz.block_singular_values(M, 3)["ranks"] == [0]


@pytest.mark.parametrize("kwargs, match", [
    (dict(decay=-0.1), "decay"), (dict(spread=-1.0), "spread"), (dict(chunk=0), "chunk"),
    (dict(chunk=49), "chunk"), (dict(d_state=0), "d_state"), (dict(decay=True), "decay"),
])
def test_plot_ssd_matrix_rejects_bad_input(kwargs, match):
    with pytest.raises(ValueError, match=match):
        viz.plot_ssd_matrix(**kwargs)


def _widget_controls(path):
    """``{control name: widget}`` of the notebook's ``mm.viz.widget(mm.viz.plot_ssd_matrix, ...)`` call."""
    namespace = {"mm": mm, "IntSlider": ipywidgets.IntSlider, "FloatSlider": ipywidgets.FloatSlider}
    for cell in nbformat.read(path, as_version=4).cells:
        if cell.cell_type == "code" and "mm.viz.widget(" in cell.source:
            call_ = next(node for node in ast.walk(ast.parse(cell.source))
                         if isinstance(node, ast.Call) and ast.unparse(node.func) == "mm.viz.widget")
            assert ast.unparse(call_.args[0]) == "mm.viz.plot_ssd_matrix"
            return {kw.arg: eval(compile(ast.Expression(kw.value), path.name, "eval"), namespace)  # noqa: S307
                    for kw in call_.keywords}
    raise AssertionError(f"no widget in {path.name}")


def test_every_control_of_the_notebook_widget_moves_the_data():
    controls = _widget_controls(NOTEBOOK)
    assert set(controls) == {"decay", "spread", "chunk"}
    start = {name: c.value for name, c in controls.items()}
    base = call(viz.plot_ssd_matrix, **start)
    for name, control in controls.items():
        for value in (control.min, control.max, control.value + control.step):
            moved = call(viz.plot_ssd_matrix, **{**start, name: value})  # every slider position draws
            if value == control.value + control.step:
                key = "boundaries" if name == "chunk" else "M"
                assert not np.array_equal(np.asarray(base[key]), np.asarray(moved[key])), name
            assert moved["max_rank"] <= moved["d_state"]


def test_loglog_legend_never_reads_minus_zero():
    # notebook 12's memory plot: the recurrence holds one state at every length, a flat line whose
    # fitted slope is a round-off away from 0 on either side
    lengths = [2 ** k for k in range(8, 18)]
    data = call(viz.plot_loglog, lengths=lengths, series={"flat": [8192] * 10, "linear": lengths},
                ylabel="numbers held")
    assert abs(data["slopes"]["flat"]) < 1e-12 and abs(data["slopes"]["linear"] - 1) < 1e-12
    assert data["labels"] == {"flat": "flat (slope 0.00)", "linear": "linear (slope 1.00)"}
    assert "-0.00" not in " ".join(data["labels"].values())

"""The selection plot of notebook 09 (``minimamba_core/viz/selection.py``): the data behind it
equals what the mixer and the sequential scan compute."""

import matplotlib

matplotlib.use("agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

import minimamba_core as mm  # noqa: E402
from minimamba_core import viz  # noqa: E402
from minimamba_core.training import tasks  # noqa: E402

V = 16


@pytest.fixture(scope="module", params=[(True, "channel"), (False, "channel"), (False, "shared")],
                ids=["s6", "lti_channel", "lti_shared"])
def example(request):
    selective, bc = request.param
    model = tasks.task_model(V, d_model=16, n_layer=2, d_state=4, selective=selective, seed=0, lti_bc=bc).double()
    x, y = tasks.selective_copying(3, 12, 3, V, generator=torch.Generator().manual_seed(0))  # (3, 15)
    return model, x, y, viz.selection_trace(model, x)


def _mixer_input(model, x, layer):
    """The normed residual the mixer of ``layer`` sees, by running the blocks one by one."""
    residual = model.backbone.embedding(x)  # (b, l, d_model)
    for block in model.backbone.layers[:layer]:
        residual = block(residual)  # (b, l, d_model)
    return model.backbone.layers[layer].norm(residual)  # (b, l, d_model)


def test_trace_shapes_and_predictions(example):
    model, x, _, trace = example
    b, l = x.shape
    d_inner = model.config.d_inner
    assert len(trace["delta"]) == len(trace["h_norm"]) == len(trace["write"]) == model.config.n_layer
    for name in ("delta", "h_norm", "write"):
        assert all(t.shape == (b, l, d_inner) for t in trace[name]), name
    with torch.no_grad():
        logits = model(x)
    torch.testing.assert_close(trace["logits"], logits)
    assert torch.equal(trace["pred"], logits.argmax(-1))
    assert (trace["delta"][0] > 0).all() and (trace["h_norm"][1] >= 0).all()


@pytest.mark.parametrize("layer", [0, 1])
def test_delta_and_state_equal_the_mixer_and_the_sequential_scan(example, layer):
    model, x, _, trace = example
    mixer = model.backbone.layers[layer].mixer
    with torch.no_grad():
        hidden = _mixer_input(model, x, layer)
        u, z = mixer.in_proj(hidden).chunk(2, dim=-1)  # (b, l, d_inner)
        u, _ = mm.mixer.causal_conv(u, mixer.conv1d)
        delta, B, C = mixer.ssm_inputs(u)
        A, D, bias = mixer.scan_params()
        torch.testing.assert_close(trace["delta"][layer], F.softplus(delta + bias), rtol=1e-12, atol=1e-12)
        if B.dim() == 4:  # LTI with per-channel B, C (b, l, d_inner, N): its own recurrence
            log_A_bar, B_bar, C_ch, _ = mixer.discretized(torch.float64)  # (d_inner, N) each
            for t in (0, 4, x.shape[1] - 1):
                _, h = tasks.lti_scan_sequential(u[:, :t + 1], torch.exp(log_A_bar), B_bar, C_ch)  # (b, d_inner, N)
                torch.testing.assert_close(trace["h_norm"][layer][:, t], h.norm(dim=-1), rtol=1e-10, atol=1e-12)
            return
        for t in (0, 4, x.shape[1] - 1):  # h_t: the sequential scan's last state after t + 1 steps
            _, h = mm.selective_scan_sequential(u[:, :t + 1], delta[:, :t + 1], A, B[:, :t + 1], C[:, :t + 1],
                                                D=D, z=z[:, :t + 1], delta_bias=bias, delta_softplus=True,
                                                return_last_state=True)  # (b, d_inner, N)
            torch.testing.assert_close(trace["h_norm"][layer][:, t], h.norm(dim=-1), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("bc", ["channel", "shared"])
def test_lti_steps_are_constant(bc):
    model = tasks.task_model(V, d_model=16, n_layer=1, d_state=4, selective=False, seed=0, lti_bc=bc)
    x, _ = tasks.selective_copying(2, 12, 3, V, generator=torch.Generator().manual_seed(1))
    d = viz.selection_trace(model, x)["delta"][0]  # (2, 15, d_inner): the same step everywhere
    torch.testing.assert_close(d, d[:1, :1].expand_as(d))


def test_token_groups():
    x = torch.tensor([[0, 3, 0, 5, 15, 15]])
    g = viz.token_groups("selective_copying", x, V)
    assert g["data"].tolist() == [[False, True, False, True, False, False]]
    assert g["noise"].sum() == 2 and g["marker"].sum() == 2
    x = torch.tensor([[2, 15, 7, 3, 15]])
    g = viz.token_groups("induction_heads", x, V)
    assert g["key"].tolist() == [[False, False, True, False, False]]
    assert g["trigger"].sum() == 2 and g["other"].tolist() == [[True, False, False, True, False]]
    with pytest.raises(ValueError, match="task must be one of"):
        viz.token_groups("copying", x, V)


def test_delta_ratio_by_hand():
    delta = torch.ones(1, 5, 2, dtype=torch.float64)
    delta[0, 2] = 3.0  # the step two after the marked token is 3x the baseline
    tokens = torch.tensor([[True, False, False, False, False]])
    base = ~tokens
    ratios = viz.delta_ratio(delta, tokens, torch.tensor([[False, True, False, True, True]]), lags=3)
    assert ratios == pytest.approx([1.0, 1.0, 3.0])
    delta[0, 0, 1] = 5.0  # channel 1 only
    assert viz.delta_ratio(delta, tokens, base, lags=1, channels=[1])[0] == pytest.approx(5.0 / 1.5)
    with pytest.raises(ValueError, match="must have shape"):
        viz.delta_ratio(delta, tokens[:, :4], base)


def test_plot_returns_its_data(example):
    _, x, y, trace = example
    groups = viz.token_groups("selective_copying", x, V)
    fig, data = viz.plot_selection_trace(trace, groups, y, layer=1, channel=2, row=1)
    torch.testing.assert_close(torch.as_tensor(data["delta"]), trace["delta"][1][1, :, 2])
    torch.testing.assert_close(torch.as_tensor(data["h_norm"]), trace["h_norm"][1][1, :, 2])
    assert data["asked"].tolist() == list(range(12, 15))
    assert data["target"].tolist() == y[1, 12:].tolist()
    assert data["correct"].tolist() == (trace["pred"][1, 12:] == y[1, 12:]).tolist()
    assert data["mean_delta"]["data"] == pytest.approx(float(trace["delta"][1][1, :, 2][groups["data"][1]].mean()))
    plt.close(fig)
    fig, data = viz.plot_selection_trace(trace, groups, None, layer=0, channel=-1)
    torch.testing.assert_close(torch.as_tensor(data["delta"]), trace["delta"][0][0].mean(-1))
    assert len(data["asked"]) == 0
    plt.close(fig)
    for bad in (dict(layer=2), dict(channel=-2), dict(row=3)):
        with pytest.raises(ValueError, match="must be an int"):
            viz.plot_selection_trace(trace, groups, **bad)


# -- 08: the Tiny Shakespeare text ------------------------------------------------------------------

CHARS = "\n !',.3:?ABCDOPRabcdeiorstu"  # a toy vocabulary: id i is CHARS[i]


def _ids(*rows):
    return torch.tensor([[CHARS.index(c) for c in row] for row in rows])


def test_char_groups_by_hand():
    x = _ids("Or, 'tis a\n", "bad. Do it3")  # (2, 11)
    g = viz.char_groups(x, CHARS)
    assert list(g) == list(viz.CHAR_GROUPS)
    marks = {name: ["".join("x" if v else "." for v in row) for row in m.tolist()] for name, m in g.items()}
    # "Or, 'tis a\n" / "bad. Do it3", written out character by character
    assert marks["newline"] == ["..........x", "..........."]
    assert marks["space"] == ["...x....x..", "....x..x..."]
    assert marks["punctuation"] == ["..x.x......", "...x......x"]
    assert marks["capital"] == ["x..........", ".....x....."]
    assert marks["vowel"] == ["......x..x.", ".x....x.x.."]
    assert marks["consonant"] == [".x...x.x...", "x.x......x."]
    assert marks["word start"] == ["x........x.", "x....x..x.."]  # 't after an apostrophe continues
    assert marks["inside word"] == [".x...xxx...", ".xx...x..x."]
    letters = g["capital"] | g["vowel"] | g["consonant"]
    assert torch.equal(letters, g["word start"] | g["inside word"]) and not (g["word start"] & g["inside word"]).any()
    assert not (g["capital"] & g["vowel"]).any() and not (g["vowel"] & g["consonant"]).any()
    everything = g["newline"] | g["space"] | g["punctuation"] | letters
    assert everything.all()
    with pytest.raises(ValueError, match="shape"):
        viz.char_groups(x[0], CHARS)


def test_plot_delta_by_group():
    x = _ids("Or, 'tis a\n", "bad. Do it3")
    g = viz.char_groups(x, CHARS)
    delta = torch.arange(1.0, 23.0, dtype=torch.float64).view(2, 11)  # 1 .. 22
    fig, data = viz.plot_delta_by_group({"a": delta, "flat": torch.ones(2, 11)}, g)
    plt.close(fig)
    # spaces sit at 3, 8 (row 0) and 4, 7 (row 1): steps 4, 9, 16, 19; the overall mean is 11.5
    assert data["relative"]["a"]["space"] == pytest.approx((4 + 9 + 16 + 19) / 4 / 11.5, rel=1e-12)
    assert data["counts"] == {name: int(m.sum()) for name, m in g.items()} and data["counts"]["space"] == 4
    assert all(v == 1.0 for v in data["relative"]["flat"].values())
    with pytest.raises(ValueError, match="shape"):
        viz.plot_delta_by_group({"a": delta[:, :5]}, g)


def test_plot_text_delta_layout_and_colours():
    text = "ab\ncdef\ng"
    delta = np.array([1e-3, 1e-2, 1e-1, 1e-3, 2e-3, 4e-3, 8e-3, 1e-3, 1e-1])
    fig, data = viz.plot_text_delta(text, delta, width=3)
    try:
        # a newline ends its line; "cdef" wraps after 3 characters
        assert data["cells"] == [(0, 0), (0, 1), (0, 2), (1, 0), (1, 1), (1, 2), (2, 0), (2, 1), (3, 0)]
        np.testing.assert_allclose(data["level"], (np.log(delta) - np.log(1e-3)) / np.log(100), atol=1e-12)
        drawn = [t.get_text() for t in fig.axes[0].texts]
        assert drawn == ["a", "b", "⏎", "c", "d", "e", "f", "⏎", "g"]
        faces = [p.get_facecolor() for p in fig.axes[0].patches]
        assert len(faces) == len(text) and faces[0] == faces[3] != faces[2] == faces[8]  # same step, same colour
    finally:
        plt.close(fig)
    with pytest.raises(ValueError, match="shape"):
        viz.plot_text_delta(text, delta[:-1])
    with pytest.raises(ValueError, match="positive"):
        viz.plot_text_delta(text, -delta)


def test_per_channel_state_by_hand():
    """LTI with per-channel B: one channel's B scaled by 2 doubles that channel's |h_t| only
    (h is linear in B_bar), which a B shared by the channels could not do."""
    model = tasks.task_model(V, d_model=16, n_layer=1, d_state=4, selective=False, seed=0, lti_bc="channel").double()
    x, _ = tasks.selective_copying(2, 10, 2, V, generator=torch.Generator().manual_seed(3))
    before = viz.selection_trace(model, x)["h_norm"][0]  # (2, 12, d_inner)
    with torch.no_grad():
        model.backbone.layers[0].mixer.B_lti[5] *= 2.0  # channel 5 only
    after = viz.selection_trace(model, x)["h_norm"][0]
    torch.testing.assert_close(after[..., 5], 2 * before[..., 5], rtol=1e-12, atol=1e-12)
    others = [c for c in range(before.shape[-1]) if c != 5]
    torch.testing.assert_close(after[..., others], before[..., others], rtol=0, atol=0)

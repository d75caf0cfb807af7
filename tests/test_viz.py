"""The plot functions of notebooks 00-05 (``minimamba_core/viz/``: ``ssm``, ``scan``, ``block``).

Every function is called with several slider values and the tests assert on the ``data`` it
returns (never on pixels): against closed forms, the package's scans, or by-hand values. A last
test drives each widget of notebooks 00-05 the way the browser test does, one step of one
control at a time, and checks that the data behind the figure changes.
"""

import ast
import math
from pathlib import Path

import matplotlib

matplotlib.use("agg")

import ipywidgets  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import nbformat  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

import minimamba_core as mm  # noqa: E402
from minimamba_core import viz  # noqa: E402

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
f64 = torch.float64


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


# -- 01: discretization --------------------------------------------------------------------------

@pytest.mark.parametrize("delta", [0.05, 0.5, 2.0])
@pytest.mark.parametrize("A", [-0.3, -1.0, -3.0])
def test_discretize_scalar_closed_forms(delta, A):
    # ZOH against the Van Loan block exponential exp(delta [[A, B], [0, 0]]) = [[A_bar, B_bar], [0, 1]]
    B = 0.7
    E = torch.linalg.matrix_exp(delta * torch.tensor([[A, B], [0.0, 0.0]], dtype=f64))
    A_bar, B_bar = viz.discretize_scalar(delta, A, B, "zoh")
    # torch.linalg.matrix_exp itself is off by up to ~1e-12 on some of these 2x2 cases (measured)
    assert abs(A_bar - E[0, 0].item()) < 1e-10 and abs(B_bar - E[0, 1].item()) < 1e-10
    assert viz.discretize_scalar(delta, A, B, "euler") == pytest.approx((1 + delta * A, delta * B), abs=1e-15)
    bil = ((1 + delta * A / 2) / (1 - delta * A / 2), delta * B / (1 - delta * A / 2))
    assert viz.discretize_scalar(delta, A, B, "bilinear") == pytest.approx(bil, abs=1e-15)


@pytest.mark.parametrize("kwargs, match", [
    (dict(delta=0.0, A=-1.0), "delta"), (dict(delta=0.5, A=0.0), "A"), (dict(delta=0.5, A=1.0), "A"),
    (dict(delta=0.5, A=-1.0, method="rk4"), "method"),
])
def test_discretize_scalar_rejects_bad_input(kwargs, match):
    with pytest.raises(ValueError, match=match):
        viz.discretize_scalar(**kwargs)


@pytest.mark.parametrize("method", viz.DISCRETIZATIONS)
@pytest.mark.parametrize("delta, A", [(0.05, -1.0), (1.5, -1.0), (3.0, -3.0), (0.3, -0.1)])
def test_plot_discretization_data(method, delta, A):
    _, d = viz.plot_discretization(delta=delta, A=A, method=method, length=30)
    A_bar, B_bar = viz.discretize_scalar(delta, A, 1.0, method)
    k = np.arange(30)
    np.testing.assert_allclose(d["kernel"], B_bar * A_bar ** k, rtol=1e-12, atol=0)  # K_k = C A_bar^k B_bar
    np.testing.assert_allclose(d["step"], np.cumsum(d["kernel"]), rtol=1e-12, atol=0)
    np.testing.assert_allclose(d["t"], k * delta, rtol=1e-15)
    assert d["stable"] == (abs(A_bar) < 1)
    # Closed-form continuous step response: integral_0^t e^{As} ds = (e^{At} - 1) / A at t = (k+1) delta
    np.testing.assert_allclose(d["step_exact"], (np.exp(A * (k + 1) * delta) - 1) / A, rtol=1e-12)
    if method == "zoh":  # exact for a held input, memory 1 / (delta |A|) steps
        np.testing.assert_allclose(d["step"], d["step_exact"], rtol=1e-10, atol=1e-12)
        assert d["memory_steps"] == pytest.approx(1 / (delta * abs(A)), rel=1e-12)
    if method == "bilinear":
        assert d["stable"]  # A-stable: |A_bar| < 1 for every A < 0
    if method == "euler":
        assert d["stable"] == (delta * abs(A) < 2)


def test_plot_discretization_controls_change_the_data():
    base = viz.plot_discretization(delta=0.5, A=-1.0, method="zoh")[1]
    for kw in (dict(delta=0.55), dict(A=-1.1), dict(method="euler"), dict(method="bilinear")):
        other = viz.plot_discretization(**{**dict(delta=0.5, A=-1.0, method="zoh"), **kw})[1]
        assert not np.allclose(base["kernel"], other["kernel"]), kw


def test_plot_discretization_unstable_has_infinite_memory():
    _, d = viz.plot_discretization(delta=3.0, A=-3.0, method="euler")  # A_bar = 1 - 9 = -8
    assert d["A_bar"] == -8.0 and not d["stable"] and math.isinf(d["memory_steps"])


# -- 02: selection -------------------------------------------------------------------------------

@pytest.mark.parametrize("rule", viz.B_BAR_RULES)
def test_diagonal_ssm_states_against_scalar_recurrences(rule):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(20, generator=g, dtype=f64).numpy()
    delta = torch.exp(torch.randn(20, generator=g, dtype=f64) - 1).numpy()
    A = -np.array([1.0, 2.0, 5.0])
    h = viz.diagonal_ssm_states(x, delta, A, rule)
    for n, a in enumerate(A):  # one scalar recurrence per state, discretized independently
        s = 0.0
        for t in range(20):
            A_bar, B_bar = viz.discretize_scalar(float(delta[t]), float(a), 1.0, "zoh")
            if rule == "euler":
                B_bar = float(delta[t])
            s = A_bar * s + B_bar * x[t]
            assert abs(h[n, t] - s) < 1e-12


def test_diagonal_ssm_states_euler_equals_package_scan():
    g = torch.Generator().manual_seed(1)
    L, N = 25, 4
    x = torch.randn(1, L, 1, generator=g, dtype=f64)
    delta = torch.exp(torch.randn(1, L, 1, generator=g, dtype=f64) - 1)
    A = -torch.arange(1, N + 1, dtype=f64)
    h = viz.diagonal_ssm_states(x.view(L).numpy(), delta.view(L).numpy(), A.numpy(), "euler")  # (N, L)
    ones = torch.ones(1, L, N, dtype=f64)
    y, last = mm.selective_scan_sequential(x, delta, A[None], ones, ones, return_last_state=True)
    np.testing.assert_allclose(h.sum(0), y.view(L).numpy(), atol=1e-12)  # C = 1: y = sum_n h_n
    np.testing.assert_allclose(h[:, -1], last.view(N).numpy(), atol=1e-12)


@pytest.mark.parametrize("signal", viz.SELECTION_SIGNALS)
@pytest.mark.parametrize("pick", [0, 22])
def test_plot_selection_reset_and_ignore(signal, pick):
    _, d = viz.plot_selection(signal=signal, pick=pick, delta_low=0.01, delta_high=5.0, rule="zoh")
    x, h4, h6, A = d["x"], d["h_s4"], d["h_s6"], d["A"]
    assert h4.shape == h6.shape == (8, 48)
    # Same deltas before the picked token: identical states.
    np.testing.assert_array_equal(h4[:, :pick], h6[:, :pick])
    # A large delta resets state n to the token: h = e^{5 A_n} h_prev + (1 - e^{5 A_n}) / |A_n| x.
    prev = h6[:, pick - 1] if pick > 0 else np.zeros(8)
    np.testing.assert_allclose(h6[:, pick], np.exp(5 * A) * prev + np.expm1(5 * A) / A * x[pick], atol=1e-12)
    # ... so it is x / |A_n| up to a remainder e^{5 A_n} (|h_prev| + |x| / |A_n|)
    assert np.all(np.abs(h6[:, pick] - x[pick] / -A) <= np.exp(5 * A) * (np.abs(prev) + np.abs(x[pick]) / -A) + 1e-12)
    # A small delta nearly ignores every token: B_bar <= 0.01, so |h| <= 0.01 * sum |x| for S4.
    assert np.abs(h4).max() <= 0.01 * np.abs(x).sum() + 1e-12


def test_plot_selection_euler_rule_and_equal_deltas():
    _, d = viz.plot_selection(pick=22, delta_low=0.05, delta_high=3.0, rule="euler")
    prev = d["h_s6"][:, 21]
    np.testing.assert_allclose(d["h_s6"][:, 22], np.exp(3.0 * d["A"]) * prev + 3.0 * d["x"][22], atol=1e-12)
    _, same = viz.plot_selection(pick=10, delta_low=0.2, delta_high=0.2)
    np.testing.assert_array_equal(same["h_s4"], same["h_s6"])


def test_plot_selection_controls_change_the_data():
    base = dict(signal="pulses", pick=22, delta_low=0.05, delta_high=3.0, rule="zoh")
    d0 = viz.plot_selection(**base)[1]
    for kw in (dict(signal="steps"), dict(pick=23), dict(delta_low=0.06), dict(delta_high=3.1), dict(rule="euler")):
        d1 = viz.plot_selection(**{**base, **kw})[1]
        assert not np.array_equal(d0["h_s6"], d1["h_s6"]), kw


def test_plot_selection_rejects_bad_input():
    with pytest.raises(ValueError, match="pick"):
        viz.plot_selection(pick=48)
    with pytest.raises(ValueError, match="signal"):
        viz.plot_selection(signal="chirp")
    with pytest.raises(ValueError, match="rule"):
        viz.plot_selection(rule="rk4")
    with pytest.raises(ValueError, match="delta_low"):
        viz.plot_selection(delta_low=0.0)


# -- 03: the sequential scan ---------------------------------------------------------------------

@pytest.mark.parametrize("channel, state", [(0, 0), (1, 3), (3, 5)])
def test_plot_scan_trace_matches_package_and_recurrence(channel, state):
    _, d = viz.plot_scan_trace(channel=channel, state=state)
    ex = viz.scan_trace_example()
    np.testing.assert_allclose(d["y"], d["y_package"], atol=1e-12)
    # The plotted state obeys h_t = exp(delta_t A) h_{t-1} + delta_t B_t x_t (Euler B, paper Alg. 2).
    delta = F.softplus(ex["delta"] + ex["delta_bias"])[0, :, channel].numpy()
    np.testing.assert_allclose(d["delta"], delta, rtol=1e-15)
    a = -(state + 1.0)  # A = -(1..N)
    assert d["A"] == a
    B, x, h = ex["B"][0, :, state].numpy(), ex["x"][0, :, channel].numpy(), d["h"]
    np.testing.assert_allclose(d["u"], delta * B * x, atol=1e-15)
    np.testing.assert_allclose(h[1:], np.exp(delta[1:] * a) * h[:-1] + delta[1:] * B[1:] * x[1:], atol=1e-12)
    assert h[0] == pytest.approx(delta[0] * B[0] * x[0], abs=1e-15)


def test_scan_trace_example_typical_deltas():
    ex = viz.scan_trace_example()
    # softplus(delta_bias) is the typical step 0.05 * 3**d (the bias is softplus^-1 of it)
    np.testing.assert_allclose(F.softplus(ex["delta_bias"]).numpy(), 0.05 * 3.0 ** np.arange(4), rtol=1e-12)


def test_plot_scan_trace_controls_change_the_data():
    d0 = viz.plot_scan_trace(0, 0)[1]
    assert not np.array_equal(d0["h"], viz.plot_scan_trace(1, 0)[1]["h"])
    assert not np.array_equal(d0["h"], viz.plot_scan_trace(0, 1)[1]["h"])
    with pytest.raises(ValueError, match="channel"):
        viz.plot_scan_trace(channel=4)
    with pytest.raises(ValueError, match="state"):
        viz.plot_scan_trace(state=-1)


# -- 04: parallel scans --------------------------------------------------------------------------

def _combine(p, q):  # (a1, u1) o (a2, u2) = (a1 a2, a2 u1 + u2)
    return p[0] * q[0], q[0] * p[1] + q[1]


@pytest.mark.parametrize("algorithm, length", [
    ("hillis-steele", 1), ("hillis-steele", 8), ("hillis-steele", 13), ("hillis-steele", 16),
    ("blelloch", 1), ("blelloch", 8), ("blelloch", 16), ("blelloch", 64),
    ("chunked", 1), ("chunked", 5), ("chunked", 8), ("chunked", 16), ("chunked", 37),
])
def test_scan_schedules_compute_the_scan(algorithm, length):
    levels = viz.scan_schedule(algorithm, length, chunk=4)
    ranges = viz.run_schedule(levels, [(i, i) for i in range(length)], viz.combine_ranges, None)
    assert ranges[-1] == [(0, i) for i in range(length)]  # every position holds its prefix
    g = torch.Generator().manual_seed(length)
    a = (torch.rand(length, generator=g, dtype=f64) * 0.5 + 0.5).tolist()
    u = torch.randn(length, generator=g, dtype=f64).tolist()
    values = viz.run_schedule(levels, list(zip(a, u)), _combine, (1.0, 0.0))[-1]
    h, expected = 0.0, []
    for t in range(length):  # the sequential recurrence h_t = a_t h_{t-1} + u_t
        h = a[t] * h + u[t]
        expected.append(h)
    np.testing.assert_allclose([v[1] for v in values], expected, atol=1e-12)


# Depth and work counted by hand (L = 8 and 16):
#  Hillis-Steele: ceil(log2 L) levels; combines sum_s (L - s) for s = 1, 2, 4..: 7+6+4 = 17; 15+14+12+8 = 49.
#  Blelloch: log2 L up + 1 clear + log2 L down + 1 inclusive; combines (L-1) + (L-1) + L: 22; 46.
#  Chunked (T = 4): 1 summary level + (L/T - 1) levels for the chunk ends + (T - 1) in-chunk levels;
#  combines (T-1) per chunk + (L/T - 1) + in-chunk steps not already final: 6+1+5 = 12; 12+3+11 = 26.
@pytest.mark.parametrize("algorithm, length, depth, work", [
    ("hillis-steele", 8, 3, 17), ("hillis-steele", 16, 4, 49), ("blelloch", 8, 8, 22),
    ("blelloch", 16, 10, 46), ("chunked", 8, 5, 12), ("chunked", 16, 7, 26),
])
def test_plot_scan_tree_depth_and_work(algorithm, length, depth, work):
    _, d = viz.plot_scan_tree(algorithm, length, level=99)
    assert (d["depth"], d["work_total"]) == (depth, work)
    assert d["level"] == d["n_levels"] == depth and d["work"] == work  # the level is clamped


@pytest.mark.parametrize("algorithm", viz.SCAN_ALGORITHMS)
@pytest.mark.parametrize("length", [8, 16])
def test_plot_scan_tree_every_level_changes_the_picture(algorithm, length):
    # Every level writes something and changes what some position holds: each slider step is visible.
    levels = viz.scan_schedule(algorithm, length, chunk=4)
    ranges = viz.run_schedule(levels, [(i, i) for i in range(length)], viz.combine_ranges, None)
    for level in range(1, len(levels)):
        assert levels[level][1] and ranges[level] != ranges[level - 1], (algorithm, length, level)
    # The plot shows that schedule: its data at a middle level and at the last one.
    for level in (len(levels) // 2, len(levels) - 1):
        d = viz.plot_scan_tree(algorithm, length, level=level)[1]
        assert d["level"] == level and d["ranges"] == ranges
        assert d["written"] == sorted(dst for dst, _ in levels[level][1])


@pytest.mark.parametrize("algorithm", viz.SCAN_ALGORITHMS)
@pytest.mark.parametrize("length", [8, 16])
def test_scan_depth_is_the_last_level_drawn(algorithm, length):
    depth = viz.scan_depth(algorithm, length)
    assert depth == viz.plot_scan_tree(algorithm, length, level=0)[1]["n_levels"]
    if algorithm == "blelloch":  # log2 L up, clear the root, log2 L down, the inclusive step
        assert depth == 2 * (length.bit_length() - 1) + 2


def test_level_slider_follows_the_chosen_scan():
    # The slider of notebook 04 ends at the chosen scan's last level, whatever the dropdowns say.
    algorithm = ipywidgets.Dropdown(options=list(viz.SCAN_ALGORITHMS), value="blelloch")
    length = ipywidgets.Dropdown(options=[8, 16], value=8)
    slider = viz.level_slider(algorithm, length, value=1)
    assert (slider.min, slider.max, slider.value) == (0, viz.scan_depth("blelloch", 8), 1)
    for name in viz.SCAN_ALGORITHMS:
        for l in (8, 16):
            algorithm.value, length.value = name, l
            assert slider.max == viz.scan_depth(name, l), (name, l)
            slider.value = slider.max  # the last level: a picture with every prefix complete
            assert viz.plot_scan_tree(name, l, level=slider.value)[1]["ranges"][-1] == [(0, i) for i in range(l)]
    algorithm.value, length.value = "blelloch", 16
    slider.value = slider.max
    algorithm.value = "hillis-steele"  # fewer levels: the value comes back to the new last level
    assert slider.value == slider.max == viz.scan_depth("hillis-steele", 16)
    assert viz.level_slider(algorithm, length, value=99).value == slider.max


def test_hillis_steele_first_level_and_bad_input():
    d = viz.plot_scan_tree("hillis-steele", 8, level=1)[1]
    assert d["written"] == list(range(1, 8)) and d["ranges"][1] == [(0, 0)] + [(i - 1, i) for i in range(1, 8)]
    with pytest.raises(ValueError, match="power of two"):
        viz.plot_scan_tree("blelloch", 12, level=1)
    with pytest.raises(ValueError, match="algorithm"):
        viz.plot_scan_tree("kogge-stone", 8, level=1)
    with pytest.raises(ValueError, match="level"):
        viz.plot_scan_tree("blelloch", 8, level=-1)


# -- 05: the mixer -------------------------------------------------------------------------------

@pytest.mark.parametrize("model, layer", [("untrained", 0), ("trained", 2)])
def test_mixer_selection_reproduces_the_mixer(model, layer):
    mixer, hidden, tokens = viz.mixer_scrub_example(model, layer)
    assert "".join(tokens) == viz.SCRUB_TEXT and hidden.shape == (1, len(viz.SCRUB_TEXT), 256)
    assert hidden.dtype == torch.float64
    sel = viz.mixer_selection(mixer, hidden)
    # The plotted quantities, fed to the package's scan, must give the mixer's own output.
    y = mm.selective_scan_sequential(sel["x"], sel["delta"], sel["A"], sel["B"], sel["C"], D=mixer.D, z=sel["z"])
    with torch.no_grad():
        expected = mixer(hidden)
        out = mixer.out_proj(y)
    torch.testing.assert_close(out, expected, atol=1e-12, rtol=0)
    assert bool((sel["delta"] > 0).all())


def test_mixer_scrub_example_is_the_mixer_input_inside_the_model():
    # selection_trace catches each mixer's input with a hook during the model's own forward pass
    lm, ids = viz.block.scrub_lm("trained")
    assert ids.shape == (1, len(viz.SCRUB_TEXT))
    trace = viz.selection_trace(lm, ids)
    for layer in (0, 3):
        sel = viz.mixer_selection(*viz.mixer_scrub_example("trained", layer)[:2])
        torch.testing.assert_close(sel["delta"], trace["delta"][layer], atol=1e-12, rtol=0)


def test_scrub_models_are_the_shipped_one_and_a_fresh_one():
    trained, _ = viz.block.scrub_lm("trained")
    untrained, _ = viz.block.scrub_lm("untrained")
    shipped = mm.load_pretrained(viz.block.SHAKESPEARE_MODEL)
    assert trained.config == untrained.config == shipped.config
    for (name, p), q, r in zip(trained.named_parameters(), shipped.parameters(), untrained.parameters()):
        torch.testing.assert_close(p, q.double(), atol=0, rtol=0, msg=name)
    # untrained: the official initialization, dt_proj.bias = softplus^-1 of steps in [0.001, 0.1]
    dt = torch.nn.functional.softplus(untrained.backbone.layers[0].mixer.dt_proj.bias.detach())
    assert 0.001 <= float(dt.min()) and float(dt.max()) <= 0.1


def test_mixer_scrub_example_leaves_the_global_rng_alone():
    viz.block.scrub_lm.cache_clear()
    state = torch.get_rng_state()
    viz.mixer_scrub_example("untrained", 1)
    assert torch.equal(state, torch.get_rng_state())


@pytest.mark.parametrize("model, layer, position, channel",
                         [("untrained", 0, 0, 0), ("untrained", 3, 5, 17), ("trained", 3, 7, 86),
                          ("trained", 1, len(viz.SCRUB_TEXT) - 1, 511)])
def test_plot_mixer_scrub_data(model, layer, position, channel):
    fig, d = viz.plot_mixer_scrub(position=position, channel=channel, model=model, layer=layer)
    plt.close(fig)
    mixer, hidden, _ = viz.mixer_scrub_example(model, layer)
    sel = viz.mixer_selection(mixer, hidden)
    np.testing.assert_allclose(d["delta"], sel["delta"][0, :, channel].numpy(), rtol=1e-15)
    np.testing.assert_array_equal(d["B_at"], sel["B"][0, position].numpy())
    np.testing.assert_array_equal(d["C_at"], sel["C"][0, position].numpy())
    assert d["delta_at"] == d["delta"][position]
    assert d["spread"] == d["delta"].max() / d["delta"].min()
    np.testing.assert_allclose(d["A_bar_at"], np.exp(d["delta_at"] * sel["A"][channel].numpy()), rtol=1e-15)


def test_plot_mixer_scrub_controls():
    def data(**kw):
        fig, d = viz.plot_mixer_scrub(**kw)
        plt.close(fig)
        return d

    d0 = data(position=0, channel=0, model="trained", layer=0)
    d_pos = data(position=1, channel=0, model="trained", layer=0)
    d_ch = data(position=0, channel=1, model="trained", layer=0)
    assert not np.array_equal(d0["B_at"], d_pos["B_at"])  # a new token: new B_t
    np.testing.assert_array_equal(d0["B_at"], d_ch["B_at"])  # B_t is shared by all channels
    assert not np.array_equal(d0["delta"], d_ch["delta"])  # delta is per channel
    assert not np.array_equal(d0["delta"], data(position=0, channel=0, model="trained", layer=1)["delta"])
    assert not np.array_equal(d0["delta"], data(position=0, channel=0, model="untrained", layer=0)["delta"])
    for bad, match in ((dict(position=len(viz.SCRUB_TEXT)), "position"), (dict(channel=512), "channel"),
                       (dict(layer=4), "layer"), (dict(model="pretrained"), "model")):
        with pytest.raises(ValueError, match=match):
            viz.plot_mixer_scrub(**bad)


# -- every widget of notebooks 00-05, one control step at a time ---------------------------------

def _widget_calls(path):
    """``(function name, {control name: widget})`` for each ``mm.viz.widget(...)`` cell of a notebook."""
    namespace = {"mm": mm, **{name: getattr(ipywidgets, name) for name in ("IntSlider", "FloatSlider", "Dropdown")}}
    calls = []
    for cell in nbformat.read(path, as_version=4).cells:
        if cell.cell_type != "code" or "mm.viz.widget(" not in cell.source:
            continue
        tree = ast.parse(cell.source)
        call = next(node for node in ast.walk(tree)
                    if isinstance(node, ast.Call) and ast.unparse(node.func) == "mm.viz.widget")
        for stmt in tree.body:  # the cell's own set-up (controls built before the call), not the call
            if call not in ast.walk(stmt):
                exec(compile(ast.Module([stmt], []), path.name, "exec"), namespace)  # noqa: S102
        fn_name = ast.unparse(call.args[0]).removeprefix("mm.viz.")
        controls = {kw.arg: eval(compile(ast.Expression(kw.value), path.name, "eval"), namespace)  # noqa: S307
                    for kw in call.keywords}
        calls.append((fn_name, controls))
    return calls


def _next_value(control):
    """The value one keyboard step away (what the browser test does first)."""
    if isinstance(control, ipywidgets.Dropdown):
        values = [v if not isinstance(v, tuple) else v[1] for v in control.options]
        return values[(values.index(control.value) + 1) % len(values)]
    step = control.step
    return control.value + step if control.value + step <= control.max else control.value - step


def _same(a, b):
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        return np.shape(a) == np.shape(b) and np.array_equal(a, b)
    return a == b


OUR_NOTEBOOKS = sorted(p for p in NOTEBOOKS.glob("0[0-5]_*.ipynb"))
WIDGETS = [(p.name, fn, controls) for p in OUR_NOTEBOOKS for fn, controls in _widget_calls(p)]


def test_notebooks_00_05_have_their_widgets():
    assert sorted({fn for _, fn, _ in WIDGETS}) == sorted(
        ["plot_discretization", "plot_hippo_reconstruction", "plot_memory_horizons", "plot_mixer_scrub",
         "plot_scan_trace", "plot_scan_tree", "plot_selection", "plot_state_evolution", "plot_write_read"])


@pytest.mark.parametrize("notebook, fn_name, controls", WIDGETS, ids=[f"{n}:{f}" for n, f, _ in WIDGETS])
def test_every_control_moves_the_figure(notebook, fn_name, controls):
    fn = getattr(viz, fn_name)
    start = {name: c.value for name, c in controls.items()}
    _, base = fn(**start)
    for name, control in controls.items():
        assert isinstance(control, (ipywidgets.IntSlider, ipywidgets.FloatSlider, ipywidgets.Dropdown))
        _, moved = fn(**{**start, name: _next_value(control)})
        assert not _same(base, moved), f"{notebook}: moving {name} does not change {fn_name}'s data"

"""The compile switch (``minimamba_core/fast_scan/compile.py``): ``torch.compile`` of the chunk
functions and of the scan's elementwise edges, its fallbacks to eager (no ``torch.compile``, a
compile that fails at the first call), what it keeps across switching, and that every function
it compiles traces without graph breaks. Real compiles are kept few and small (``slow``)."""

import subprocess
import sys
from pathlib import Path

import pytest
import torch
from fast_scan_helpers import (assert_matches, fast, full_inputs, outputs_and_grads, reference, scan_and_grads,
                               scan_inputs)

import minimamba_core as mm
from minimamba_core import fast_scan
from minimamba_core.fast_scan import chunk_ops as cs
from minimamba_core.fast_scan.compile import chunk_fn


def _broken_compile(fn, **kwargs):
    """Stands in for ``torch.compile`` where compiling fails at the first call."""
    def run(*args):
        raise RuntimeError("no C++ compiler (simulated)")
    return run


@pytest.fixture
def compile_off():
    yield
    fast_scan.set_scan_compile(False)


def test_switch_without_torch_compile_warns_and_stays_eager(monkeypatch, compile_off):
    monkeypatch.delattr(torch, "compile")
    with pytest.warns(RuntimeWarning, match="torch.compile is not available"):
        assert mm.set_scan_compile(True) is False
    assert not fast_scan.scan_compile_enabled()


def test_switch_falls_back_to_eager_when_compiling_fails(monkeypatch, compile_off):
    monkeypatch.setattr(torch, "compile", _broken_compile)
    assert mm.set_scan_compile(True) is True
    inp = scan_inputs(1, 40, 3, 4)
    with pytest.warns(RuntimeWarning, match="falls back to eager"):
        got = outputs_and_grads(fast("chained"), inp)
    assert fast_scan.scan_compile_failures() == ["chunk_backward", "chunk_forward"]
    assert_matches(got, reference(inp), torch.float64)


def test_environment_variable_switches_compile_on():
    code = "import minimamba_core as mm, minimamba_core.fast_scan as f; print(f.scan_compile_enabled())"
    root = Path(__file__).resolve().parents[1]  # this checkout's package, not an installed one
    env = {"MINIMAMBA_COMPILE": "1", "PATH": "", "PYTHONPATH": str(root)}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "True"


@pytest.mark.slow
def test_compiled_scan_matches_float64_loop(compile_off):
    # A real torch.compile, kept small (2 unrolled steps) so that compiling takes seconds.
    if not fast_scan.set_scan_compile(True):
        pytest.skip("torch.compile unavailable")
    inp = scan_inputs(1, 7, 3, 4)
    with fast_scan.using(chunk_compiled_cpu={"chained": 2}):
        got = outputs_and_grads(fast("chained"), inp)
    if fast_scan.scan_compile_failures():
        pytest.skip(f"compiler unavailable here: {fast_scan.scan_compile_failures()}")
    assert_matches(got, reference(inp), torch.float64)


@pytest.mark.parametrize("name", ["chunk_forward_functional", "chunk_backward_functional",
                                  "chunk_summary_forward", "chunk_summary_backward",
                                  "group_summary", "group_states_functional"])
def test_compiled_chunk_functions_trace_without_graph_breaks(name):
    # A graph break makes dynamo run the whole function eager, silently: torch 2.11 could not
    # trace `lams[t] = lam`, and the "compiled" backward ran eager on the GPU (issue 7's report).
    g = torch.Generator().manual_seed(0)
    m, T, d, n = 2, 4, 3, 5
    r = lambda *s: torch.randn(*s, generator=g)  # noqa: E731
    h, lam, delta, x, A = r(m, d, n), r(m, d, n), torch.rand(m, T, d, generator=g), r(m, T, d), -torch.rand(d, n)
    B, C, gy, e = r(m, T, n), r(m, T, n), r(m, T, d), r(m, T, d, n)
    args = {"chunk_forward_functional": (h, delta, x, A, B, C),
            "chunk_backward_functional": (h, lam, delta, x, A, B, C, gy),
            "chunk_summary_forward": (delta, x, A, B), "chunk_summary_backward": (delta, A, C, gy),
            "group_summary": (delta, e, A), "group_states_functional": (h, delta, e, A)}[name]
    explained = torch._dynamo.explain(getattr(cs, name))(*args)
    assert explained.graph_break_count == 0, explained.break_reasons
    assert explained.graph_count == 1


def test_switching_off_and_on_keeps_the_compiled_functions(monkeypatch, compile_off):
    # Recompiling at every switch cost the benchmarks minutes per row; a failed one is made anew.
    if not fast_scan.set_scan_compile(True):
        pytest.skip("torch.compile unavailable")
    first = chunk_fn("chunk_forward")
    fast_scan.set_scan_compile(False)
    assert chunk_fn("chunk_forward") is cs.chunk_forward  # eager when off
    fast_scan.set_scan_compile(True)
    assert chunk_fn("chunk_forward") is first
    # a compile that fails at its first call (as without a C++ compiler) ...
    m, T, d, n = 2, 4, 3, 5
    inp = {k: v.detach() for k, v in scan_inputs(m, T, d, n).items()}
    with monkeypatch.context() as patch:
        patch.setattr(torch, "compile", _broken_compile)
        with pytest.warns(RuntimeWarning, match="falls back to eager"):
            chunk_fn("chunk_forward")(inp["h0"], inp["delta"], inp["x"], inp["A"], inp["B"], inp["C"])
    assert fast_scan.scan_compile_failures() == ["chunk_forward"]
    assert chunk_fn("chunk_forward") is cs.chunk_forward  # ... stays eager while the switch is on
    fast_scan.set_scan_compile(False)
    fast_scan.set_scan_compile(True)
    made_anew = chunk_fn("chunk_forward")  # switching on again tries it again
    assert made_anew is not first and made_anew is not cs.chunk_forward
    assert fast_scan.scan_compile_failures() == [] and "chunk_forward" in fast_scan.compiled_functions()


def test_edges_fall_back_to_eager_when_compiling_fails(monkeypatch, compile_off):
    # With the switch on, the bias + softplus before the scan and the D skip + gate after it are
    # compiled as well ("delta", "finish"); a failure there falls back like the chunk functions.
    monkeypatch.setattr(torch, "compile", _broken_compile)
    assert mm.set_scan_compile(True) is True
    inp = full_inputs(torch.float64)
    with pytest.warns(RuntimeWarning, match="falls back to eager"):
        y, grads = scan_and_grads(mm.selective_scan_parallel, inp)
    assert {"delta", "finish"} <= set(fast_scan.scan_compile_failures())
    y_ref, grads_ref = scan_and_grads(mm.selective_scan_sequential, inp)
    torch.testing.assert_close(y, y_ref, atol=1e-10, rtol=1e-10)
    for k in grads_ref:
        torch.testing.assert_close(grads[k], grads_ref[k], atol=1e-9, rtol=1e-9)


@pytest.mark.slow
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_compiled_scan_with_compiled_edges_matches_float64_loop(dtype, compile_off):
    # The whole selective scan compiled (edges included) against the float64 loop on the same
    # inputs: float32 arithmetic inside, so the tolerance is float32's; bfloat16 outputs are
    # rounded to bfloat16 (8 bits of mantissa: relative 2**-8).
    if not fast_scan.set_scan_compile(True):
        pytest.skip("torch.compile unavailable")
    inp = full_inputs(dtype)
    with fast_scan.using(chunk_compiled_cpu={"summarized": 4}):
        y, grads = scan_and_grads(mm.selective_scan_parallel, inp)
    if fast_scan.scan_compile_failures():
        pytest.skip(f"compiler unavailable here: {fast_scan.scan_compile_failures()}")
    assert {"delta", "finish"} <= set(fast_scan.compiled_functions())
    assert all(v.dtype in (dtype, torch.float32) for v in inp.values())  # no float64 inside
    assert y.dtype == dtype
    y_ref, grads_ref = scan_and_grads(mm.selective_scan_sequential, {k: v.double() for k, v in inp.items()})
    tol = dict(atol=1e-4, rtol=1e-4) if dtype == torch.float32 else dict(atol=2e-2, rtol=2 ** -7)
    torch.testing.assert_close(y.double(), y_ref, **tol)
    for k in ("x", "delta", "A", "B", "C", "D", "z", "delta_bias"):
        ref = grads_ref[k]
        err = (grads[k].double() - ref).norm() / ref.norm()
        assert err < (1e-5 if dtype == torch.float32 else 2e-2), (k, err.item())


@pytest.fixture(scope="module")
def edge_functions():
    """The scan's elementwise edges as the switch hands them to ``torch.compile``, by compile name
    (``"delta"``: bias + softplus before the scan, ``"finish"``: D skip + gate after it)."""
    given = {}
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(torch, "compile", lambda fn, **kwargs: given.setdefault(fn.__name__.strip("_"), fn))
        fast_scan.forget_compiled()
        fast_scan.set_scan_compile(True)
        try:
            mm.selective_scan_parallel(**full_inputs(torch.float32), delta_softplus=True)
        finally:
            fast_scan.set_scan_compile(False)
            fast_scan.forget_compiled()
    return given


@pytest.mark.parametrize("name", ["delta", "finish"])
def test_compiled_edges_trace_without_graph_breaks(name, edge_functions):
    g = torch.Generator().manual_seed(0)
    delta, bias = torch.randn(2, 5, 3, generator=g), torch.randn(3, generator=g)
    args = {"delta": (delta, bias, True, torch.float32),
            "finish": (delta, delta * 2, bias, delta * 3, torch.bfloat16)}[name]
    explained = torch._dynamo.explain(edge_functions[name])(*args)
    assert explained.graph_break_count == 0, explained.break_reasons
    assert explained.graph_count == 1


def test_compiled_functions_follow_a_swapped_function(monkeypatch, compile_off):
    # A compiled function is kept under its name; swapping the Python function behind the name
    # (benchmarks/bench_backward.py swaps chunk_ops' functions; a test may monkeypatch one) must
    # not keep running the old one, nor the swapped one after it is restored. torch.compile is
    # replaced by the identity to keep this quick.
    monkeypatch.setattr(torch, "compile", lambda fn, **kwargs: fn)
    mm.set_scan_compile(True)
    inp = {k: v.detach() for k, v in full_inputs(torch.float64).items()}
    ref = mm.selective_scan_sequential(**inp, delta_softplus=True)
    original = cs.chunk_forward_functional
    monkeypatch.setattr(cs, "chunk_forward_functional", lambda h, delta, x, *rest: (torch.zeros_like(x), h))
    no_outputs = mm.selective_scan_parallel(**inp, delta_softplus=True)
    assert not torch.allclose(no_outputs, ref)  # the swapped chunk function (no C.h term) ran
    monkeypatch.setattr(cs, "chunk_forward_functional", original)
    torch.testing.assert_close(mm.selective_scan_parallel(**inp, delta_softplus=True), ref,
                               atol=1e-10, rtol=1e-10)
    # the same for any name, the edges' included
    double, triple, x = (lambda t: 2 * t), (lambda t: 3 * t), torch.ones(3)
    assert torch.equal(fast_scan.maybe_compiled("swap_test", double)(x), 2 * x)
    assert torch.equal(fast_scan.maybe_compiled("swap_test", triple)(x), 3 * x)
    assert torch.equal(fast_scan.maybe_compiled("swap_test", double)(x), 2 * x)
    fast_scan.forget_compiled()


def test_unpadded_eager_equals_padded_compiled_path(monkeypatch, compile_off):
    monkeypatch.setattr(torch, "compile", lambda fn, **kw: fn)  # the compiled path's padding, uncompiled
    for l in (1, 33, 31 * 32, 33 * 32):
        inp = scan_inputs(2, l, 3, 4)
        fast_scan.set_scan_compile(False)
        eager = outputs_and_grads(fast("summarized"), inp)
        fast_scan.set_scan_compile(True)
        assert_matches(outputs_and_grads(fast("summarized"), inp), [t.detach() for t in eager], torch.float64)

"""The operations on one chunk (``minimamba_core/fast_scan/chunk_ops.py``) against each other: the
functional twins that ``torch.compile`` runs equal the in-place eager functions, and the
loop-free summaries equal the loops they replace. (That they trace without graph breaks:
``test_fast_scan_compile.py``.)"""

import torch
from fast_scan_helpers import scan_inputs

from minimamba_core.fast_scan import chunk_ops as cs


def test_functional_twins_equal_the_in_place_chunk_functions():
    # What torch.compile runs (the *_functional twins) computes what the eager functions do.
    m, T, d, n = 3, 6, 4, 5
    inp = {k: v.detach() for k, v in scan_inputs(m, T, d, n).items()}
    g = torch.Generator().manual_seed(2)
    lam_in, gy = torch.randn(m, d, n, generator=g, dtype=torch.float64), torch.randn(m, T, d, generator=g,
                                                                                       dtype=torch.float64)
    args = (inp["h0"], inp["delta"], inp["x"], inp["A"], inp["B"], inp["C"])
    for a, b in zip(cs.chunk_forward(*args), cs.chunk_forward_functional(*args)):
        torch.testing.assert_close(a, b, atol=1e-12, rtol=1e-12)
    args = (inp["h0"], lam_in, inp["delta"], inp["x"], inp["A"], inp["B"], inp["C"], gy)
    for a, b in zip(cs.chunk_backward(*args), cs.chunk_backward_functional(*args)):
        torch.testing.assert_close(a, b, atol=1e-12, rtol=1e-12)
    e = torch.randn(m, T, d, n, generator=g, dtype=torch.float64)
    args = (inp["h0"], inp["delta"], e, inp["A"])
    for a, b in zip(cs.group_states(*args), cs.group_states_functional(*args)):
        torch.testing.assert_close(a, b, atol=1e-12, rtol=1e-12)


def test_summaries_equal_the_loops_they_replace():
    m, T, d, n = 2, 9, 3, 4
    inp = {k: v.detach() for k, v in scan_inputs(m, T, d, n).items()}
    zero = torch.zeros(m, d, n, dtype=torch.float64)
    _, h_end = cs.chunk_forward(zero, inp["delta"], inp["x"], inp["A"], inp["B"], inp["C"])
    torch.testing.assert_close(cs.chunk_summary_forward(inp["delta"], inp["x"], inp["A"], inp["B"]),
                               h_end, atol=1e-12, rtol=1e-12)
    gy = torch.randn(m, T, d, dtype=torch.float64)
    *_, dh_in = cs.chunk_backward(zero, zero, inp["delta"], inp["x"], inp["A"], inp["B"], inp["C"], gy)
    torch.testing.assert_close(cs.chunk_summary_backward(inp["delta"], inp["A"], inp["C"], gy), dh_in,
                               atol=1e-12, rtol=1e-12)

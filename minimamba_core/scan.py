"""The selective scan (S6), twice: a readable sequential reference and a parallel scan.

For every batch row, channel ``d`` and state index ``n`` the scan runs the discretized SSM
(paper eq. 2a-2b with the selection of Algorithm 2, Gu & Dao 2023)::

    delta_t = softplus(delta_t + delta_bias)          if delta_softplus
    A_bar_t = exp(delta_t * A)                         zero-order hold (eq. 4)
    B_bar_t = delta_t * B_t                            simplified Euler rule for B
    h_t     = A_bar_t * h_{t-1} + B_bar_t * x_t        (eq. 2a)
    y_t     = C_t . h_t + D * x_t                      (eq. 2b, plus the D skip)
    y_t     = y_t * silu(z_t)                          if z is given (the gate)

Layout: ``x, delta, z (b, l, d_inner)``, ``A (d_inner, d_state)``, ``B, C (b, l, d_state)``,
``D, delta_bias (d_inner,)``, ``h0 (b, d_inner, d_state)``.

Differences from the official code, all harmless:

* The official ``selective_scan_ref`` (state-spaces/mamba, commit 0cce0fa,
  ``mamba_ssm/ops/selective_scan_interface.py``) calls the input ``u`` and uses the layout
  ``(b, d, l)``; we keep time in dimension 1, like the model's activations.
* ``B_bar = delta * B`` (Euler) instead of the exact ZOH ``(delta A)^-1 (exp(delta A) - I) delta B``,
  exactly as the official kernel; notebook ``02_selection`` measures the difference.
* Arithmetic is float32 (float64 when any input is float64); the output has ``x``'s dtype.

The parallel twin computes the same recurrence by chunks (the ``fast_scan`` package;
notebooks ``04_parallel_scan`` and ``11_performance``): the sequence is cut into chunks of ``T``
steps; what a chunk does to a state is summarized without a loop (the decay from step ``s`` to
``t`` is ``exp((cs_t - cs_s) A)`` with ``cs`` the running sum of ``delta``); the summaries --
elements of the associative operator ``(a1, u1) o (a2, u2) = (a1 a2, a2 u1 + u2)`` -- are
scanned the same way, recursively, to give the state entering each chunk; then every chunk
runs its steps. Its backward is written out (the adjoint recurrence) and recomputes the states
chunk by chunk instead of keeping ``(b, l, d_inner, d_state)`` for autograd.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from . import fast_scan  # the engine, through its one door
from .checks import check_scan_inputs, scan_output_dtype

METHODS = ("parallel", "sequential")


def _prepare(x, delta, A, B, C, D, z, delta_bias, delta_softplus, h0, check_finite, edge=None):
    """Validate, cast to the compute dtype and apply the delta bias and softplus (``_delta``,
    or ``edge`` when given: its compiled version). ``z`` keeps its dtype (``_finish`` casts it)."""
    check_scan_inputs(x, delta, A, B, C, D, z, delta_bias, h0, check_finite)
    given = [t for t in (x, delta, A, B, C, D, z, delta_bias, h0) if t is not None]
    dtype = torch.float64 if any(t.dtype == torch.float64 for t in given) else torch.float32
    cast = lambda t: None if t is None else t.to(dtype)  # noqa: E731
    x, A, B, C, D, h0 = map(cast, (x, A, B, C, D, h0))
    delta = (edge or _delta)(delta, delta_bias, delta_softplus, dtype)
    return x, delta, A, B, C, D, z, h0


def _delta(delta, delta_bias, delta_softplus, dtype):
    """``softplus(delta + delta_bias)`` in ``dtype`` (each step optional), ``(b, l, d)``."""
    delta = delta.to(dtype)
    if delta_bias is not None:
        delta = delta + delta_bias.to(dtype)  # (b, l, d)
    if delta_softplus:
        delta = F.softplus(delta)  # (b, l, d), > 0
    return delta


def _finish(y, x, D, z, out_dtype):
    """Add the D skip connection and the SiLU gate, cast to the output dtype."""
    if D is not None:
        y = y + x * D  # (b, l, d)
    if z is not None:
        y = y * F.silu(z.to(y.dtype))  # (b, l, d)
    return y.to(out_dtype)


def selective_scan_sequential(
    x: torch.Tensor,
    delta: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: torch.Tensor | None = None,
    z: torch.Tensor | None = None,
    delta_bias: torch.Tensor | None = None,
    delta_softplus: bool = False,
    h0: torch.Tensor | None = None,
    return_last_state: bool = False,
    check_finite: bool = False,
):
    """The selective scan as a plain loop over time: the reference (paper Algorithm 2).

    Args:
        x: input ``(b, l, d_inner)``, any float dtype.
        delta: step sizes before bias/softplus ``(b, l, d_inner)``.
        A: continuous state matrix (diagonal per channel) ``(d_inner, d_state)``, usually negative.
        B, C: input-dependent projections ``(b, l, d_state)``.
        D: skip weight ``(d_inner,)``, optional.
        z: gate input ``(b, l, d_inner)``, optional; the output is multiplied by ``silu(z)``.
        delta_bias: added to ``delta`` before the softplus ``(d_inner,)``, optional.
        delta_softplus: apply ``softplus`` to ``delta`` (after the bias).
        h0: initial state ``(b, d_inner, d_state)``; zeros when ``None``.
        return_last_state: also return ``h_l``.
        check_finite: raise ``ValueError`` when any input holds NaN or inf.

    Returns:
        ``y (b, l, d_inner)`` in ``x``'s dtype, or ``(y, last_state)`` with
        ``last_state (b, d_inner, d_state)`` in float32 (float64 when inputs are float64).

    Raises:
        TypeError: a non-tensor or integer input.
        ValueError: a shape that does not match the layout above, mixed devices,
            non-finite input with ``check_finite``.

    Matches ``selective_scan_ref`` of state-spaces/mamba (commit 0cce0fa) up to layout.
    """
    out_dtype = scan_output_dtype(x)
    x, delta, A, B, C, D, z, h0 = _prepare(x, delta, A, B, C, D, z, delta_bias, delta_softplus,
                                           h0, check_finite)
    b, l, d = x.shape
    h = h0 if h0 is not None else x.new_zeros(b, d, A.shape[1])  # (b, d, n)
    ys = []
    # unbind once: indexing delta[:, t] inside the loop would make every step's backward
    # allocate a full (b, l, d) gradient, a cost quadratic in l.
    for x_t, delta_t, B_t, C_t in zip(x.unbind(1), delta.unbind(1), B.unbind(1), C.unbind(1)):
        A_bar = torch.exp(delta_t[:, :, None] * A)  # (b, d, n)
        B_bar_x = (delta_t * x_t)[:, :, None] * B_t[:, None, :]  # (b, d, n)
        h = A_bar * h + B_bar_x  # (b, d, n)   eq. 2a
        ys.append(torch.einsum("bdn,bn->bd", h, C_t))  # (b, d)   eq. 2b
    y = torch.stack(ys, dim=1) if ys else x.new_zeros(b, 0, d)  # (b, l, d)
    y = _finish(y, x, D, z, out_dtype)
    return (y, h) if return_last_state else y


def selective_scan_parallel(
    x: torch.Tensor,
    delta: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: torch.Tensor | None = None,
    z: torch.Tensor | None = None,
    delta_bias: torch.Tensor | None = None,
    delta_softplus: bool = False,
    h0: torch.Tensor | None = None,
    return_last_state: bool = False,
    check_finite: bool = False,
):
    """The selective scan, parallel in time; the same function as :func:`selective_scan_sequential`.

    Same arguments, shapes, dtypes, returns and errors as :func:`selective_scan_sequential`:
    ``x, delta, z (batch, seqlen, d_inner)``, ``A (d_inner, d_state)``, ``B, C (batch, seqlen,
    d_state)``, ``D, delta_bias (d_inner,)``, ``h0 (batch, d_inner, d_state)``; returns ``y (batch,
    seqlen, d_inner)``, and the last state ``(batch, d_inner, d_state)`` with
    ``return_last_state``.
    Runs the chunked scan of the ``fast_scan`` package (notebook ``11_performance``): chunks of
    ``T`` steps, each chunk's effect summarized without a loop, the summaries scanned, then all
    chunks side by side (``fast_scan.using(schedule="chained")`` runs them one after another
    instead, which is faster on a CPU with many channels). Its backward is written out and
    recomputes the states of one chunk at a time, so only ``1/T`` of the states
    ``(b, l, d_inner, d_state)`` is kept. ``mm.set_scan_compile(True)`` compiles it.
    """
    out_dtype = scan_output_dtype(x)
    # With the compile switch on, the elementwise steps before and after the scan are compiled
    # too: each fuses into one kernel instead of one pass over (b, l, d) per operation.
    edge = fast_scan.maybe_compiled("delta", _delta) if x.dim() == 3 and x.shape[1] > 0 else None
    x, delta, A, B, C, D, z, h0 = _prepare(x, delta, A, B, C, D, z, delta_bias, delta_softplus,
                                           h0, check_finite, edge)
    b, l, d = x.shape
    if l == 0:
        y = _finish(x.new_zeros(b, 0, d), x, D, z, out_dtype)
        h = h0 if h0 is not None else x.new_zeros(b, d, A.shape[1])
        return (y, h) if return_last_state else y
    y, h = fast_scan.chunked_scan(x, delta, A, B, C, h0)  # (b, l, d), (b, d, n)
    y = fast_scan.maybe_compiled("finish", _finish)(y, x, D, z, out_dtype)
    return (y, h) if return_last_state else y


def selective_scan(*args, method: str = "parallel", **kwargs):
    """Front door: ``method="parallel"`` (default) or ``"sequential"``; other arguments as
    :func:`selective_scan_sequential`.

    Raises:
        ValueError: an unknown ``method``.
    """
    if method == "parallel":
        return selective_scan_parallel(*args, **kwargs)
    if method == "sequential":
        return selective_scan_sequential(*args, **kwargs)
    raise ValueError(f"method must be one of {METHODS}, got {method!r}")

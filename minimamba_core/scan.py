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

The parallel twin computes the same recurrence as a blocked scan (notebook ``04_parallel_scan``):
the sequence is cut into chunks of ``_CHUNK`` steps, every chunk is scanned from a zero state at
once, and the chunks' summaries ``(prod a, h_end)`` -- elements of the associative operator
``(a1, u1) o (a2, u2) = (a1 a2, a2 u1 + u2)`` -- are scanned the same way, recursively, to give
the state entering each chunk. The number of sequential Python steps is about
``_CHUNK * log_CHUNK(l)`` (48 for ``l = 4096``) for any length ``l``, not only powers of two.
Autograd differentiates it directly.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

_CHUNK = 16  # time steps per chunk in the parallel scan
METHODS = ("parallel", "sequential")


def _check_float(name: str, t: torch.Tensor | None) -> None:
    if t is None:
        return
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if not t.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got dtype {t.dtype}")


def _validate(x, delta, A, B, C, D, z, delta_bias, h0, check_finite):
    tensors = dict(x=x, delta=delta, A=A, B=B, C=C, D=D, z=z, delta_bias=delta_bias, h0=h0)
    for name, t in tensors.items():
        _check_float(name, t)
    if x.dim() != 3:
        raise ValueError(f"x must have shape (b, l, d_inner), got a {x.dim()}-d tensor of shape {tuple(x.shape)}")
    b, l, d = x.shape
    if A.dim() != 2 or A.shape[0] != d:
        raise ValueError(f"A must have shape (d_inner={d}, d_state), got {tuple(A.shape)}")
    n = A.shape[1]
    expected = dict(delta=(b, l, d), z=(b, l, d), B=(b, l, n), C=(b, l, n), D=(d,),
                    delta_bias=(d,), h0=(b, d, n))
    for name, shape in expected.items():
        t = tensors[name]
        if t is not None and tuple(t.shape) != shape:
            raise ValueError(f"{name} must have shape {shape} to match x {tuple(x.shape)} and "
                             f"A {tuple(A.shape)}, got {tuple(t.shape)}")
    for name, t in tensors.items():
        if t is not None and t.device != x.device:
            raise ValueError(f"{name} is on {t.device} but x is on {x.device}; move all inputs to one device")
    if check_finite:
        for name, t in tensors.items():
            if t is not None and not bool(torch.isfinite(t).all()):
                raise ValueError(f"{name} contains NaN or inf (check_finite=True)")


def _prepare(x, delta, A, B, C, D, z, delta_bias, delta_softplus, h0, check_finite):
    """Validate, cast to the compute dtype and apply the delta bias and softplus."""
    _validate(x, delta, A, B, C, D, z, delta_bias, h0, check_finite)
    given = [t for t in (x, delta, A, B, C, D, z, delta_bias, h0) if t is not None]
    dtype = torch.float64 if any(t.dtype == torch.float64 for t in given) else torch.float32
    cast = lambda t: None if t is None else t.to(dtype)  # noqa: E731
    x, delta, A, B, C, D, z, delta_bias, h0 = map(cast, (x, delta, A, B, C, D, z, delta_bias, h0))
    if delta_bias is not None:
        delta = delta + delta_bias  # (b, l, d)
    if delta_softplus:
        delta = F.softplus(delta)  # (b, l, d), > 0
    return x, delta, A, B, C, D, z, h0


def _finish(y, x, D, z, out_dtype):
    """Add the D skip connection and the SiLU gate, cast to the output dtype."""
    if D is not None:
        y = y + x * D  # (b, l, d)
    if z is not None:
        y = y * F.silu(z)  # (b, l, d)
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
    out_dtype = x.dtype
    x, delta, A, B, C, D, z, h0 = _prepare(x, delta, A, B, C, D, z, delta_bias, delta_softplus,
                                           h0, check_finite)
    b, l, d = x.shape
    h = h0 if h0 is not None else x.new_zeros(b, d, A.shape[1])  # (b, d, n)
    ys = []
    for t in range(l):
        A_bar = torch.exp(delta[:, t, :, None] * A)  # (b, d, n)
        B_bar_x = (delta[:, t] * x[:, t])[:, :, None] * B[:, t, None, :]  # (b, d, n)
        h = A_bar * h + B_bar_x  # (b, d, n)   eq. 2a
        ys.append(torch.einsum("bdn,bn->bd", h, C[:, t]))  # (b, d)   eq. 2b
    y = torch.stack(ys, dim=1) if ys else x.new_zeros(b, 0, d)  # (b, l, d)
    y = _finish(y, x, D, z, out_dtype)
    return (y, h) if return_last_state else y


def _scan_within_chunks(a: torch.Tensor, u: torch.Tensor):
    """``h_t = a_t h_{t-1} + u_t`` (with ``h_{-1} = 0``) along dim 1 of ``a, u: (m, T, ...)``.

    A loop over the ``T`` steps of a chunk, run for all ``m`` chunks at once.
    Returns ``(prod_{s<=t} a_s, h_t)``, both ``(m, T, ...)``.
    """
    a_cum, h = a[:, 0], u[:, 0]  # (m, ...)
    a_cums, hs = [a_cum], [h]
    for t in range(1, a.shape[1]):
        h = a[:, t] * h + u[:, t]  # (m, ...)
        a_cum = a_cum * a[:, t]
        hs.append(h)
        a_cums.append(a_cum)
    return torch.stack(a_cums, dim=1), torch.stack(hs, dim=1)  # (m, T, ...)


def _chunked_scan(a: torch.Tensor, u: torch.Tensor, chunk: int | None = None):
    """``h_t = a_t h_{t-1} + u_t`` along dim 1 for any length, ``a, u: (b, l, ...)``.

    Returns ``(cumulative product of a, h)``, both ``(b, l, ...)``.
    """
    chunk = chunk or _CHUNK
    b, l = a.shape[:2]
    rest = a.shape[2:]
    if l <= chunk:
        return _scan_within_chunks(a, u)
    n_chunks = -(-l // chunk)
    pad = n_chunks * chunk - l
    if pad:  # identity elements (a=1, u=0) at the end leave the scan unchanged
        a = torch.cat([a, a.new_ones(b, pad, *rest)], dim=1)  # (b, n_chunks*chunk, ...)
        u = torch.cat([u, u.new_zeros(b, pad, *rest)], dim=1)
    a = a.reshape(b * n_chunks, chunk, *rest)
    u = u.reshape(b * n_chunks, chunk, *rest)
    a_loc, h_loc = _scan_within_chunks(a, u)  # each chunk scanned from a zero state
    a_loc = a_loc.reshape(b, n_chunks, chunk, *rest)
    h_loc = h_loc.reshape(b, n_chunks, chunk, *rest)
    # The chunks' summaries form a scan of their own: the state entering chunk c.
    a_end, h_end = _chunked_scan(a_loc[:, :, -1], h_loc[:, :, -1], chunk)  # (b, n_chunks, ...)
    h_in = torch.cat([torch.zeros_like(h_end[:, :1]), h_end[:, :-1]], dim=1)  # (b, n_chunks, ...)
    a_in = torch.cat([torch.ones_like(a_end[:, :1]), a_end[:, :-1]], dim=1)
    h = h_loc + a_loc * h_in[:, :, None]  # (b, n_chunks, chunk, ...)
    a_cum = a_loc * a_in[:, :, None]
    h = h.reshape(b, n_chunks * chunk, *rest)[:, :l]
    a_cum = a_cum.reshape(b, n_chunks * chunk, *rest)[:, :l]
    return a_cum, h


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

    Same arguments, shapes, dtypes, returns and errors as :func:`selective_scan_sequential`.
    Materializes the states ``(b, l, d_inner, d_state)`` in the compute dtype; the number of
    sequential Python steps grows as ``O(log l)``. Every input receives gradients by autograd.
    """
    out_dtype = x.dtype
    x, delta, A, B, C, D, z, h0 = _prepare(x, delta, A, B, C, D, z, delta_bias, delta_softplus,
                                           h0, check_finite)
    b, l, d = x.shape
    if l == 0:
        y = _finish(x.new_zeros(b, 0, d), x, D, z, out_dtype)
        h = h0 if h0 is not None else x.new_zeros(b, d, A.shape[1])
        return (y, h) if return_last_state else y
    A_bar = torch.exp(delta[..., None] * A)  # (b, l, d, n)
    B_bar_x = (delta * x)[..., None] * B[:, :, None, :]  # (b, l, d, n)
    if h0 is not None:  # fold h0 into the first step: h_0 = A_bar_0 h0 + B_bar_0 x_0
        B_bar_x = torch.cat([B_bar_x[:, :1] + A_bar[:, :1] * h0[:, None], B_bar_x[:, 1:]], dim=1)
    _, h = _chunked_scan(A_bar, B_bar_x)  # (b, l, d, n)
    y = torch.einsum("bldn,bln->bld", h, C)  # (b, l, d)
    y = _finish(y, x, D, z, out_dtype)
    return (y, h[:, -1]) if return_last_state else y


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

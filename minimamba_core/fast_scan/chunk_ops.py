"""The selective scan on one chunk of ``T`` time steps: forward states, backward adjoints, summaries.

These are the building blocks of the chunked scan (``chunked.py``). Each works on a batch of
``m`` chunks at once (``m = b`` when chunks are taken one after another, ``m = b * n_chunks``
when all chunks run side by side) in the layout ``delta, x (m, T, d)``, ``B, C (m, T, n)``,
``A (d, n)``, states ``(m, d, n)``. ``delta`` is the step size *after* bias and softplus.

Forward, within a chunk (paper eq. 2a-2b, discretization as in ``scan.py``)::

    A_bar_t = exp(delta_t A),  u_t = delta_t x_t B_t,  h_t = A_bar_t h_{t-1} + u_t,  y_t = C_t . h_t

Backward: with ``gy_t = dL/dy_t`` and ``lam_t = dL/dh_t`` the adjoint runs backwards in time::

    lam_t  = C_t gy_t + A_bar_{t+1} lam_{t+1}           (lam after the chunk enters as lam_in)
    dx_t   = delta_t sum_n lam_t B_t          dB_t = sum_d lam_t delta_t x_t
    dC_t   = sum_d gy_t h_t                   dA   = sum_{m,t} g_t delta_t
    ddelta = sum_n (g_t A + lam_t x_t B_t)    with g_t = lam_t A_bar_t h_{t-1}
    dL/dh_in = A_bar_0 lam_0                  (the adjoint handed to the previous chunk)

Summaries let the chunks run side by side. Since ``A`` does not depend on time, the decay from
step ``s`` to step ``t`` is ``exp((cs_t - cs_s) A)`` with ``cs`` the cumulative sum of ``delta``
over the chunk: one cumulative sum over ``(m, T, d)``, not over ``(m, T, d, n)``. The exponent is
``<= 0`` (``delta >= 0``, ``A <= 0`` in every Mamba), so nothing overflows.

The loops over the ``T`` steps update one ``(m, d, n)`` slice in place: on a CPU this keeps every
tensor small enough to stay in cache, and under ``torch.compile`` the loop is unrolled and fused.
"""

from __future__ import annotations

import torch


def discretize(delta: torch.Tensor, x: torch.Tensor, A: torch.Tensor, B: torch.Tensor):
    """``A_bar = exp(delta A)`` and ``u = delta x B``, both ``(m, T, d, n)`` (paper eq. 4, Euler B)."""
    A_bar = torch.exp(delta[..., None] * A)  # (m, T, d, n)
    u = (delta * x)[..., None] * B[:, :, None, :]  # (m, T, d, n)
    return A_bar, u


def forward_states(h: torch.Tensor, A_bar: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """``h_t = A_bar_t h_{t-1} + u_t`` from ``h (m, d, n)``; returns all ``h_t (m, T, d, n)``.

    Overwrites ``u`` with the states (the caller owns it) and returns it.
    """
    for t in range(u.shape[1]):
        h = u[:, t].addcmul_(A_bar[:, t], h)  # (m, d, n)   eq. 2a
    return u


def chunk_forward(h_in, delta, x, A, B, C):
    """One chunk forward: ``y (m, T, d)`` and the state after the chunk ``(m, d, n)``."""
    A_bar, u = discretize(delta, x, A, B)
    h = forward_states(h_in, A_bar, u)  # (m, T, d, n)
    y = torch.matmul(h, C[..., None])[..., 0]  # (m, T, d)   eq. 2b: y_t = C_t . h_t
    return y, h[:, -1]


def chunk_backward(h_in, lam_in, delta, x, A, B, C, gy):
    """One chunk backward from the state entering it, ``h_in (m, d, n)``, and the adjoint
    arriving from after it, ``lam_in (m, d, n)``.

    Returns ``ddelta, dx (m, T, d)``, ``dB, dC (m, T, n)``, ``dA (d, n)`` summed over the chunk,
    and ``dL/dh_in (m, d, n)``.
    """
    A_bar, u = discretize(delta, x, A, B)
    h = forward_states(h_in, A_bar, u)  # (m, T, d, n), recomputed rather than stored
    dC = torch.matmul(gy[:, :, None, :], h)[:, :, 0]  # (m, T, n)   sum_d gy_t h_t
    lam = gy[..., None] * C[:, :, None, :]  # (m, T, d, n)   C_t gy_t
    lam[:, -1] += lam_in
    for t in range(lam.shape[1] - 2, -1, -1):
        lam[:, t].addcmul_(A_bar[:, t + 1], lam[:, t + 1])  # (m, d, n)   the adjoint recurrence
    q = torch.matmul(lam, B[..., None])[..., 0]  # (m, T, d)   sum_n lam_t B_t
    dx = delta * q  # (m, T, d)
    dB = torch.matmul((delta * x)[:, :, None, :], lam)[:, :, 0]  # (m, T, n)   sum_d lam_t delta_t x_t
    g = lam.mul_(A_bar)  # (m, T, d, n)   lam_t A_bar_t, reusing lam's memory
    dh_in = g[:, 0].clone()  # (m, d, n)   A_bar_0 lam_0
    g[:, 1:] *= h[:, :-1]  # lam_t A_bar_t h_{t-1}
    g[:, 0] *= h_in
    ddelta = x * q + torch.einsum("mtdn,dn->mtd", g, A)  # (m, T, d)
    dA = torch.einsum("mtdn,mtd->dn", g, delta)  # (d, n)
    return ddelta, dx, dB, dC, dA, dh_in


def chunk_summary_forward(delta, x, A, B):
    """The state a chunk reaches from zero, ``sum_s exp((cs_end - cs_s) A) delta_s x_s B_s``,
    ``(m, d, n)``, without a loop; ``cs`` is the cumulative sum of ``delta`` over the chunk.
    The state after the chunk is then ``exp(cs_end A) h_in + this``."""
    cs = torch.cumsum(delta, dim=1)  # (m, T, d)
    decay = torch.exp((cs[:, -1:] - cs)[..., None] * A)  # (m, T, d, n), exponent <= 0
    return (decay * (delta * x)[..., None] * B[:, :, None, :]).sum(1)  # (m, d, n)


def chunk_summary_backward(delta, A, C, gy):
    """The adjoint a chunk hands back when zero adjoint arrives after it,
    ``sum_t exp(cs_t A) C_t gy_t`` with ``cs`` the inclusive cumulative sum of ``delta``,
    ``(m, d, n)``; ``dL/dh_in = exp(cs_end A) lam_in + this``."""
    cs = torch.cumsum(delta, dim=1)  # (m, T, d)
    decay = torch.exp(cs[..., None] * A)  # (m, T, d, n)
    return (decay * gy[..., None] * C[:, :, None, :]).sum(1)  # (m, d, n)


def group_summary(ds, e, A):
    """For the scan of summaries ``h_k = exp(ds_k A) h_{k-1} + e_k`` over groups of ``T``
    steps, ``ds (m, T, d)``, ``e (m, T, d, n)``: each group's total ``ds`` ``(m, d)`` and the
    state it reaches from zero ``(m, d, n)``."""
    cs = torch.cumsum(ds, dim=1)  # (m, T, d)
    decay = torch.exp((cs[:, -1:] - cs)[..., None] * A)  # (m, T, d, n)
    return cs[:, -1], (decay * e).sum(1)


def group_states(h, ds, e, A):
    """States entering each step of ``h_k = exp(ds_k A) h_{k-1} + e_k`` from ``h (m, d, n)``:
    ``(m, T, d, n)``, and the state after the group ``(m, d, n)``. A loop of ``T`` steps, each
    one fused ``addcmul`` (the decays ``exp(ds_k A)`` are taken for all steps at once)."""
    decay = torch.exp(ds[..., None] * A)  # (m, T, d, n)
    states = torch.empty_like(e)  # (m, T, d, n)
    for k in range(ds.shape[1]):
        states[:, k] = h
        h = torch.addcmul(e[:, k], decay[:, k], h)  # (m, d, n)
    return states, h


# ---- the same functions written without in-place updates, for torch.compile -----------------
# Inductor turns an in-place update of a slice into a copy of the whole buffer per step; written
# functionally, the unrolled loop fuses into a few kernels that keep ``h`` in registers.


def group_states_functional(h, ds, e, A):
    """:func:`group_states` without in-place updates (same arguments and returns)."""
    states = []
    for k in range(ds.shape[1]):
        states.append(h)
        h = torch.exp(ds[:, k, :, None] * A) * h + e[:, k]  # (m, d, n)
    return torch.stack(states, dim=1), h


def chunk_forward_functional(h, delta, x, A, B, C):
    """:func:`chunk_forward` without in-place updates (same arguments and returns)."""
    ys = []
    for t in range(delta.shape[1]):
        A_bar = torch.exp(delta[:, t, :, None] * A)  # (m, d, n)
        h = A_bar * h + (delta[:, t] * x[:, t])[:, :, None] * B[:, t, None, :]  # (m, d, n)
        ys.append((h * C[:, t, None, :]).sum(-1))  # (m, d)
    return torch.stack(ys, dim=1), h  # (m, T, d), (m, d, n)


def chunk_backward_functional(h_in, lam_in, delta, x, A, B, C, gy):
    """:func:`chunk_backward` without in-place updates (same arguments and returns).

    Every reduction is taken inside the reverse loop, one step at a time, rather than on the
    states and adjoints stacked into ``(m, T, d, n)`` tensors: compiled, each step's products
    can stay in registers (on an H200 at l = 8192: 26.6 against 49.8 ms forward+backward, 2194
    against 3272 MB; ``benchmarks/bench_backward.py``). Eager, it keeps as much memory as before.
    The lists are appended to and reversed: ``list[t] = ...`` breaks some dynamo versions' graph.
    """
    T = delta.shape[1]
    dx_in = delta * x  # (m, T, d)   delta_t x_t
    A_bar = [torch.exp(delta[:, t, :, None] * A) for t in range(T)]  # T x (m, d, n)
    hs, h = [h_in], h_in
    for t in range(T):  # the forward states, recomputed: hs[t] = h_{t-1}
        h = A_bar[t] * h + dx_in[:, t, :, None] * B[:, t, None, :]
        hs.append(h)
    lam, dA = lam_in, None
    ddelta, q, dB, dC = [], [], [], []  # appended from t = T-1 down to t = 0
    for t in range(T - 1, -1, -1):
        lam = gy[:, t, :, None] * C[:, t, None, :] + (lam if t == T - 1 else A_bar[t + 1] * lam)
        q_t = (lam * B[:, t, None, :]).sum(-1)  # (m, d)   sum_n lam_t B_t
        g = lam * A_bar[t] * hs[t]  # (m, d, n)   lam_t A_bar_t h_{t-1}
        ddelta.append(x[:, t] * q_t + (g * A).sum(-1))
        q.append(q_t)
        dB.append((lam * dx_in[:, t, :, None]).sum(1))  # (m, n)   sum_d lam_t delta_t x_t
        dC.append((hs[t + 1] * gy[:, t, :, None]).sum(1))  # (m, n)   sum_d gy_t h_t
        g_delta = g * delta[:, t, :, None]
        dA = g_delta if dA is None else dA + g_delta  # (m, d, n), summed over m at the end
    in_time_order = lambda v: torch.stack(v[::-1], dim=1)  # noqa: E731
    return (in_time_order(ddelta), delta * in_time_order(q), in_time_order(dB), in_time_order(dC),
            dA.sum(0), A_bar[0] * lam)

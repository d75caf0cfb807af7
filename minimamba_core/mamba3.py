"""The Mamba-3 scan (SISO): trapezoidal discretization and data-dependent rotations, twice.

Mamba-3 (Lahoti, Li, Chen, Wang, Bick, Kolter, Dao & Gu 2026, "Mamba-3: Improved Sequence
Modeling using State Space Principles", arXiv 2603.15569) changes Mamba-2's recurrence
(``ssd.py``) in two places. For head ``h`` (of ``nheads``), channel ``p`` (of ``headdim``) and
state index ``n`` (of ``d_state``)::

    lam_t   = sigmoid(trap_t)                              (the trapezoid's mix, per head)
    alpha_t = exp(dt_t A_t)                                (A_t < 0 is data-dependent)
    beta_t  = (1 - lam_t) dt_t alpha_t                     (weight of the previous input)
    gamma_t = lam_t dt_t                                   (weight of the current input)
    theta_t = theta_{t-1} + pi tanh(angles_t) dt_t         (cumulative rotation angles, mod 2 pi)
    k_t     = R(theta_t) (B_t + B_bias),  q_t = R(theta_t) (C_t + C_bias)
    h_t     = alpha_t h_{t-1} + beta_t k_{t-1} x_{t-1}^T + gamma_t k_t x_t^T
    y_t     = h_t q_t + D x_t                              (then y_t * silu(z_t) if z is given)

* **Trapezoidal ("exponential-trapezoidal") rule**: Euler/ZOH (Mamba-1/2) weigh only the current
  input, ``dt_t B_t x_t``; the trapezoid averages the two ends of the step, so the update needs
  the previous token's ``k`` and ``x`` (``lam = 1`` gives back Mamba-2's Euler update).
* **Complex dynamics as rotations**: ``R(theta)`` turns the pairs ``(k[2i], k[2i+1])`` by
  ``theta[i]`` for the first ``S = angles.shape[-1]`` pairs and leaves the rest alone. Rotating
  ``k_s`` and ``q_t`` by their absolute angles makes ``q_t . k_s`` depend on ``theta_t - theta_s``:
  the state turns, as under a complex eigenvalue ``exp(dt A + i dt omega)``, which real decays
  ``exp(dt A) > 0`` cannot do.

The two forms, one contract:

* :func:`mamba3_sequential`, the recurrence above, token by token: the reference, exact in
  float64; with one token and the cache's states it is the decoding step;
* :func:`mamba3_chunked`, quadratic inside chunks of ``chunk_size`` tokens and the recurrence
  between chunks. Unrolled, input ``s`` reaches ``h_t`` (``t > s``) with weight
  ``(gamma_s + (1 - lam_{s+1}) dt_{s+1}) exp(dt_{s+1} A_{s+1} + ... + dt_t A_t)`` and ``h_s`` with
  ``gamma_s`` alone, so it is SSD with input weights ``scale_s`` minus a diagonal correction.

Layout (the official ``mamba3_siso_combined``, with ``(b, l, h)`` in place of its ``(b, h, l)``):
``x, z (b, l, h, p)``; ``dt, A, trap (b, l, h)``; ``B, C (b, l, g, n)`` with ``h % g == 0``;
``angles (b, l, h, S)`` with ``2 S <= n``; ``B_bias, C_bias (h, n)``; ``D (h,)``. States, as the
official ``Input_States``: ``(angle (b, h, S), ssm (b, h, p, n), k (b, h, n), v (b, h, p))``; the
``k`` state is the previous token's rotated ``k`` (biased ``B``), ``v`` its ``x``.
Source: ``mamba_ssm/modules/mamba3.py`` and the pure-PyTorch references ``mamba3_siso_step_ref``,
``mamba3_siso_fwd_ref`` of ``tests/ops/triton/test_mamba3_siso.py``, state-spaces/mamba commit
e9594ce (2026-07-23). Official names: ``Q = C``, ``K = B``, ``V = x``, ``ADT = A dt``, ``DT = dt``.

Differences from the official code, all harmless: no GPU kernels; arithmetic in float32 (float64
when any input is float64), the output in ``x``'s dtype, the states in the arithmetic dtype (the
official keeps the angle and SSM states in float32); ``A`` and ``dt`` are passed apart and
multiplied here. Notebook ``15_mamba3`` builds it.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .ssd import segsum

States = tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]


def rotate_pairs(v: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    """Turn the pairs ``(v[..., 2i], v[..., 2i+1])`` by ``theta[..., i]``; pairs past ``S`` stay.

    ``v (..., n)``, ``theta (..., S)`` with ``2 S <= n`` -> ``(..., n)``. The real form of
    multiplying the complex numbers ``v[2i] + i v[2i+1]`` by ``exp(i theta[i])`` (the official
    ``rotate_pairwise`` layout of the SISO path).
    """
    S = theta.shape[-1]
    pairs = v[..., : 2 * S].unflatten(-1, (S, 2))  # (..., S, 2)
    v0, v1 = pairs[..., 0], pairs[..., 1]
    cos, sin = torch.cos(theta), torch.sin(theta)
    turned = torch.stack([v0 * cos - v1 * sin, v0 * sin + v1 * cos], dim=-1).flatten(-2)  # (..., 2S)
    return torch.cat([turned, v[..., 2 * S:]], dim=-1)


def _prepare(x, dt, A, B, C, trap, angles, B_bias, C_bias, D, z, initial_states):
    """Validate, promote to the arithmetic dtype, expand groups to heads; return the pieces."""
    for name, t in (("x", x), ("dt", dt), ("A", A), ("B", B), ("C", C), ("trap", trap), ("angles", angles),
                    ("B_bias", B_bias), ("C_bias", C_bias)):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if x.dim() != 4:
        raise ValueError(f"x must be (b, l, h, p), got shape {tuple(x.shape)}")
    b, l, h, p = x.shape
    if l == 0:
        raise ValueError("the sequence must hold at least one token (l >= 1)")
    if B.dim() != 4 or C.shape != B.shape or B.shape[:2] != (b, l):
        raise ValueError(f"B and C must both be (b, l, g, n) = ({b}, {l}, g, n), got {tuple(B.shape)} "
                         f"and {tuple(C.shape)}")
    g, n = B.shape[2], B.shape[3]
    if h % g:
        raise ValueError(f"nheads ({h}) must be a multiple of the number of B/C groups ({g})")
    for name, t in (("dt", dt), ("A", A), ("trap", trap)):
        if t.shape != (b, l, h):
            raise ValueError(f"{name} must be (b, l, h) = {(b, l, h)}, got {tuple(t.shape)}")
    if angles.dim() != 4 or angles.shape[:3] != (b, l, h) or not 1 <= angles.shape[3] <= n // 2:
        raise ValueError(f"angles must be (b, l, h, S) = ({b}, {l}, {h}, S) with 1 <= S <= n/2 = {n // 2}, "
                         f"got {tuple(angles.shape)}")
    for name, t in (("B_bias", B_bias), ("C_bias", C_bias)):
        if t.shape != (h, n):
            raise ValueError(f"{name} must be (h, n) = {(h, n)}, got {tuple(t.shape)}")
    if D is not None and D.shape != (h,):
        raise ValueError(f"D must be (h,) = ({h},), got {tuple(D.shape)}")
    if z is not None and z.shape != x.shape:
        raise ValueError(f"z must have x's shape {tuple(x.shape)}, got {tuple(z.shape)}")
    S = angles.shape[3]
    ft = torch.float64 if any(t is not None and t.dtype == torch.float64 for t in (x, dt, A, B, C, angles)) \
        else torch.float32
    if initial_states is None:
        zeros = x.new_zeros
        initial_states = (zeros(b, h, S, dtype=ft), zeros(b, h, p, n, dtype=ft), zeros(b, h, n, dtype=ft),
                          zeros(b, h, p, dtype=ft))
    else:
        if not isinstance(initial_states, (tuple, list)) or len(initial_states) != 4:
            raise ValueError("initial_states must be a tuple (angle, ssm, k, v)")
        want = ((b, h, S), (b, h, p, n), (b, h, n), (b, h, p))
        for name, t, shape in zip(("angle", "ssm", "k", "v"), initial_states, want):
            if tuple(t.shape) != shape:
                raise ValueError(f"initial {name} state must be {shape}, got {tuple(t.shape)}")
    theta0, h0, k0, v0 = (s.to(ft) for s in initial_states)
    heads = h // g  # head i reads group i // heads (official: repeat "(h_bc g)")
    B = B.to(ft).repeat_interleave(heads, dim=2) + B_bias.to(ft)  # (b, l, h, n)
    C = C.to(ft).repeat_interleave(heads, dim=2) + C_bias.to(ft)  # (b, l, h, n)
    lam = torch.sigmoid(trap.to(ft))  # (b, l, h)
    dt, a = dt.to(ft), (A.to(ft) * dt.to(ft))  # (b, l, h) each
    omega = math.pi * torch.tanh(angles.to(ft)) * dt[..., None]  # (b, l, h, S): angle increments
    return x.to(ft), dt, a, B, C, lam, omega, D, z, (theta0, h0, k0, v0)


def _finish(y, x_in, v, D, z):
    """Add the skip ``D x``, gate with ``silu(z)``, cast to ``x``'s dtype."""
    if D is not None:
        y = y + D.to(y.dtype)[:, None] * v  # (b, l, h, p)
    if z is not None:
        y = y * F.silu(z.to(y.dtype))
    return y.to(x_in.dtype)


def _check_out(return_final_states):
    if not isinstance(return_final_states, bool):
        raise TypeError("return_final_states must be a bool")


def mamba3_sequential(x: torch.Tensor, dt: torch.Tensor, A: torch.Tensor, B: torch.Tensor, C: torch.Tensor,
                      trap: torch.Tensor, angles: torch.Tensor, B_bias: torch.Tensor, C_bias: torch.Tensor,
                      D: torch.Tensor | None = None, z: torch.Tensor | None = None,
                      initial_states: States | None = None, return_final_states: bool = False):
    """The Mamba-3 SISO recurrence token by token (the module docstring's equations): the reference.

    Shapes as in the module docstring: ``x (b, l, h, p)``, ``dt, A, trap (b, l, h)``,
    ``B, C (b, l, g, n)``, ``angles (b, l, h, S)``, ``B_bias, C_bias (h, n)``, ``D (h,)``,
    ``z (b, l, h, p)``; ``initial_states = (angle (b, h, S), ssm (b, h, p, n), k (b, h, n),
    v (b, h, p))`` or ``None`` for zeros. Returns ``y (b, l, h, p)`` in ``x``'s dtype, and with
    ``return_final_states`` also the four final states (same layout, arithmetic dtype; the angle
    reduced to ``[0, 2 pi)``). Raises ``ValueError`` on mismatched shapes or an empty sequence,
    ``TypeError`` on non-tensors. Official counterpart: ``mamba3_siso_step_ref`` (commit e9594ce).
    """
    _check_out(return_final_states)
    x_in = x
    x, dt, a, B, C, lam, omega, D, z, (theta, h, k_prev, v_prev) = _prepare(
        x, dt, A, B, C, trap, angles, B_bias, C_bias, D, z, initial_states)
    ys = []
    for t in range(x.shape[1]):
        theta = torch.remainder(theta + omega[:, t], 2 * math.pi)  # (b, h, S)
        k = rotate_pairs(B[:, t], theta)  # (b, h, n)
        q = rotate_pairs(C[:, t], theta)  # (b, h, n)
        alpha = torch.exp(a[:, t])[..., None, None]  # (b, h, 1, 1)
        beta = ((1 - lam[:, t]) * dt[:, t])[..., None, None] * alpha  # (b, h, 1, 1)
        gamma = (lam[:, t] * dt[:, t])[..., None, None]  # (b, h, 1, 1)
        h = (alpha * h + beta * v_prev[..., :, None] * k_prev[..., None, :]
             + gamma * x[:, t, :, :, None] * k[..., None, :])  # (b, h, p, n)
        ys.append(torch.einsum("bhpn,bhn->bhp", h, q))  # (b, h, p)
        k_prev, v_prev = k, x[:, t]
    y = _finish(torch.stack(ys, dim=1), x_in, x, D, z)  # (b, l, h, p)
    return (y, (theta, h, k_prev, v_prev)) if return_final_states else y


def mamba3_chunked(x: torch.Tensor, dt: torch.Tensor, A: torch.Tensor, B: torch.Tensor, C: torch.Tensor,
                   trap: torch.Tensor, angles: torch.Tensor, B_bias: torch.Tensor, C_bias: torch.Tensor,
                   D: torch.Tensor | None = None, z: torch.Tensor | None = None,
                   initial_states: States | None = None, return_final_states: bool = False,
                   chunk_size: int = 64):
    """The same function as :func:`mamba3_sequential`, chunked: matrices inside chunks, a scan between.

    Same arguments, shapes, returns and errors, plus ``chunk_size`` (Q, a positive int; raises
    ``ValueError`` otherwise); any ``l`` (the last chunk is padded with ``dt A = 0`` and zero
    inputs, which leave the state unchanged). Steps, per chunk of Q tokens:
    (1) ``Y_diag[t] = sum_{s<=t} exp(a_{s+1} + ... + a_t) (q_t . k_s) scale_s x_s`` with
    ``scale_s = gamma_s + (1 - lam_{s+1}) dt_{s+1}`` (the next token's trapezoid share; 0 after the
    last token); (2) each chunk's own end state; (3) the recurrence over chunk ends, started from
    ``h_{-1} + (1 - lam_0) dt_0 k_{-1} x_{-1}^T``; (4) ``Y_off[t] = exp(a_0 + ... + a_t) q_t h_prev``;
    then ``y = Y_diag + Y_off - (1 - lam_{t+1}) dt_{t+1} (q_t . k_t) x_t`` removes the share of
    input ``t`` that only reaches later states. Official counterpart: ``mamba3_siso_fwd_ref``
    (one chunk, quadratic), ``mamba3_siso_combined`` (Triton), commit e9594ce.
    """
    _check_out(return_final_states)
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
        raise ValueError(f"chunk_size must be a positive int, got {chunk_size!r}")
    x_in = x
    x, dt, a, B, C, lam, omega, D, z, (theta0, h0, k0, v0) = _prepare(
        x, dt, A, B, C, trap, angles, B_bias, C_bias, D, z, initial_states)
    b, l, nh, p = x.shape
    theta = theta0[:, None] + torch.cumsum(omega, dim=1)  # (b, l, h, S): absolute angles
    k = rotate_pairs(B, theta)  # (b, l, h, n)
    q = rotate_pairs(C, theta)  # (b, l, h, n)
    nxt = F.pad(((1 - lam) * dt)[:, 1:], (0, 0, 0, 1))  # (b, l, h): (1 - lam_{t+1}) dt_{t+1}, 0 at the end
    scale = lam * dt + nxt  # (b, l, h)
    h_start = h0 + ((1 - lam[:, 0]) * dt[:, 0])[..., None, None] * v0[..., :, None] * k0[..., None, :]
    Q = chunk_size
    pad = (-l) % Q
    chunks = lambda t: F.pad(t, (0, 0) * (t.dim() - 2) + (0, pad)).unflatten(1, (-1, Q))  # noqa: E731
    xc, qc, kc, ac, sc = chunks(x), chunks(q), chunks(k), chunks(a), chunks(scale)  # (b, c, Q, ...)
    ac = ac.permute(0, 3, 1, 2)  # (b, h, c, Q)
    a_cs = torch.cumsum(ac, dim=-1)  # (b, h, c, Q)
    # (1) inside each chunk: masked "attention" with the decay matrix
    L = torch.exp(segsum(ac))  # (b, h, c, Q, Q)
    scores = torch.einsum("bclhn,bcshn->bhcls", qc, kc)  # (b, h, c, Q, Q)
    y_diag = torch.einsum("bhcls,bcsh,bcshp->bclhp", L * scores, sc, xc)  # (b, c, Q, h, p)
    # (2) each chunk's end state from its own inputs
    to_end = torch.exp(a_cs[..., -1:] - a_cs)  # (b, h, c, Q)
    states = torch.einsum("bhcs,bcsh,bcshp,bcshn->bchpn", to_end, sc, xc, kc)  # (b, c, h, p, n)
    # (3) the recurrence between chunk ends, as one decay matrix over chunks
    states = torch.cat([h_start[:, None], states], dim=1)  # (b, c+1, h, p, n)
    between = torch.exp(segsum(F.pad(a_cs[..., -1], (1, 0))))  # (b, h, c+1, c+1)
    ends = torch.einsum("bhzc,bchpn->bzhpn", between, states)  # (b, c+1, h, p, n)
    # (4) the state entering each chunk, read by its queries
    y_off = torch.einsum("bclhn,bchpn,bhcl->bclhp", qc, ends[:, :-1], torch.exp(a_cs))  # (b, c, Q, h, p)
    y = (y_diag + y_off).flatten(1, 2)[:, :l]  # (b, l, h, p)
    y = y - (nxt * (q * k).sum(-1))[..., None] * x  # the diagonal share that belongs to later steps
    y = _finish(y, x_in, x, D, z)
    if not return_final_states:
        return y
    final = (torch.remainder(theta[:, -1], 2 * math.pi), ends[:, -1], k[:, -1], x[:, -1])
    return y, final

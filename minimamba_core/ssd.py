"""State space duality (SSD): the Mamba-2 scan, three times, one function.

Mamba-2 (Dao & Gu 2024, "Transformers are SSMs", arXiv 2405.21060) restricts Mamba-1's ``A`` to
one scalar per head. For head ``h`` (of ``nheads``), channel ``p`` (of ``headdim``) and state
index ``n`` (of ``d_state``), with ``B, C`` shared by the heads of one group::

    dt_t    = clamp(softplus(dt_t + dt_bias), *dt_limit)    (each step optional)
    h_t     = exp(dt_t A) h_{t-1} + dt_t B_t x_t             (A a scalar per head: paper Section 5)
    y_t     = C_t . h_t + D x_t                              (then y_t * silu(z_t) if z is given)

Mamba-2 calls the step size ``dt``: it is Mamba-1's ``delta`` (``scan.py``). Unrolled, the
output is a matrix times the input, ``y = M x`` with the lower-triangular, N-semiseparable

    M[t, s] = (C_t . B_s) exp(dt_{s+1} A + ... + dt_t A) dt_s       for s <= t      (paper, Section 3)

that is ``M = (L o (C B^T)) diag(dt)`` with the 1-semiseparable decay mask ``L`` (every block
below the diagonal of ``M`` has rank <= N = d_state): masked attention whose "attention
matrix" is a decay (paper Sections 4 and 5, "state space duality"). The three forms:

* :func:`ssd_sequential`, the recurrence step by step: the reference, exact in float64;
* :func:`ssd_quadratic`, ``Y = (L o C B^T) X`` materialized, ``O(l^2)`` (the attention view);
* :func:`ssd_chunked`, the four-step chunked algorithm of the paper (Section 6):
  quadratic inside chunks of ``chunk_size`` steps, the recurrence between them, ``O(l)``.

Layout and options are those of ``mamba_chunk_scan_combined`` (``mamba_ssm/ops/triton/
ssd_combined.py``, state-spaces/mamba commit 60dadf2): ``x, z (b, l, h, p)``, ``dt (b, l, h)``,
``A (h,)``, ``B, C (b, l, g, n)``, ``D (h,)`` or ``(h, p)``, ``dt_bias (h,)``,
``initial_states (b, h, p, n)``. Head ``i`` reads group ``i // (h // g)``: the heads of one
group are neighbours (``repeat_interleave``, not ``repeat``; transformers PR #37533 fixed a
torch path that tiled them).

Differences from the official code, all harmless: no Triton kernels; arithmetic in float32
(float64 when any input is float64), the output in ``x``'s dtype, the final state in the
arithmetic dtype; any ``l``: the chunked form pads the last chunk with ``dt = 0``, which leaves
the state unchanged, so the padding is exact (the minimal listings assert ``l % chunk == 0``).
Non-finite inputs: the matrix forms multiply the zeros of the causal mask by every input of a
chunk (and of the chunks after), and ``0 * nan`` is ``nan``; a NaN or inf at step ``t`` therefore
spreads to earlier outputs of the quadratic and chunked forms, while the recurrence keeps it at
``t`` and after. (The official Triton kernel skips the masked blocks.) Finite inputs are exact.
Built in notebooks ``12_state_space_duality`` (the three forms) and ``13_mamba2`` (the four steps).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from .checks import check_ssd_inputs, scan_output_dtype

METHODS = ("chunked", "quadratic", "sequential")
NO_LIMIT = (0.0, math.inf)
#: The chunked form's largest decay matrix, in bytes: step 1 runs over slices of the heads of each
#: group so that one slice's ``(b, heads, c, Q, Q)`` tensor stays below this, and with gradients on
#: it keeps none of them for the backward (``torch.utils.checkpoint``: recomputed there, slice by
#: slice). At the 130m-sized shape on a GPU (``b = 4``, ``l = 8192``, 24 heads, ``Q = 256``) the whole
#: tensor is 805 MB in float32 (benchmarks/README.md, "Mamba-2"). ``math.inf``: one slice, kept.
DECAY_BLOCK_BYTES = 2 ** 28


def segsum(a: torch.Tensor) -> torch.Tensor:
    """Segment sums ``S[..., t, s] = a[..., s+1] + ... + a[..., t]`` for ``s <= t``, ``-inf`` above.

    ``a (..., T) -> (..., T, T)``; ``exp(segsum(dt * A))`` is the decay mask ``L``. Each entry is
    a sum of its own terms (a masked cumulative sum), never the difference of two running
    sums ``cs_t - cs_s``: with a strong decay those run to thousands and their difference
    would keep only the digits that did not cancel. Same as ``segsum`` of the paper's
    ``ssd_minimal.py`` (state-spaces/mamba commit 60dadf2).
    """
    T = a.shape[-1]
    a = a[..., :, None].expand(*a.shape, T)  # (..., T, T): entry [r, s] = a[r]
    below = torch.tril(torch.ones(T, T, dtype=torch.bool, device=a.device), diagonal=-1)  # r > s
    S = torch.cumsum(a.masked_fill(~below, 0.0), dim=-2)  # (..., T, T): [t, s] = sum_{s < r <= t} a[r]
    keep = torch.tril(torch.ones(T, T, dtype=torch.bool, device=a.device))  # s <= t
    return S.masked_fill(~keep, -math.inf)


def decay_matrix(a: torch.Tensor) -> torch.Tensor:
    """The decay mask ``L = exp(segsum(a))``: ``(..., T) -> (..., T, T)``, zeros above the diagonal.

    The same numbers as ``torch.exp(segsum(a))`` (tests/test_ssd.py), computed for speed: no step
    copies (``torch.where`` writes each result once), so the ``(b, h, c, Q, Q)`` tensor is written
    four times instead of seven, and the running sums go down the rows (dimension -2), which a
    CPU vectorizes across the columns (a running sum along the last dimension is one sequential
    loop per row: measured twice as slow, benchmarks/README.md).
    """
    T = a.shape[-1]
    below = torch.ones(T, T, dtype=torch.bool, device=a.device).tril(-1)  # [r, s]: r > s
    S = torch.where(below, a[..., :, None], 0.0).cumsum(-2)  # (..., T, T): [t, s] = sum_{s < r <= t} a[r]
    reach = torch.ones(T, T, dtype=torch.bool, device=a.device).tril()  # [t, s]: s <= t
    return torch.where(reach, torch.exp(S), 0.0)  # (..., T, T); s > t: no path back


def _prepare(x, dt, A, B, C, D, z, dt_bias, dt_softplus, dt_limit, initial_states, chunk_size=1,
             expand_groups=True):
    """Validate; cast to the arithmetic dtype; apply the bias, softplus and clamp to ``dt``;
    with ``expand_groups``, give every head its group's ``B`` and ``C`` ``(b, l, h, n)``."""
    check_ssd_inputs(x, dt, A, B, C, D, z, dt_bias, dt_limit, initial_states, chunk_size)
    given = [t for t in (x, dt, A, B, C, D, z, dt_bias, initial_states) if t is not None]
    dtype = torch.float64 if any(t.dtype == torch.float64 for t in given) else torch.float32
    x, dt, A, B, C, D, h0 = (None if t is None else t.to(dtype) for t in (x, dt, A, B, C, D, initial_states))
    if dt_bias is not None:
        dt = dt + dt_bias.to(dtype)  # (b, l, h)
    if dt_softplus:
        dt = F.softplus(dt)  # (b, l, h), > 0
    if tuple(dt_limit) != NO_LIMIT:
        dt = dt.clamp(min=dt_limit[0], max=dt_limit[1])  # (b, l, h)
    if not expand_groups:
        return x, dt, A, B, C, D, h0
    heads_per_group = x.shape[2] // B.shape[2]
    B = B.repeat_interleave(heads_per_group, dim=2)  # (b, l, h, n): head i reads group i // (h/g)
    C = C.repeat_interleave(heads_per_group, dim=2)  # (b, l, h, n)
    return x, dt, A, B, C, D, h0


def _finish(y, x, D, z, out_dtype):
    """Add the ``D`` skip (per head or per channel) and the ``silu(z)`` gate; cast to ``out_dtype``."""
    if D is not None:
        y = y + x * (D[:, None] if D.dim() == 1 else D)  # (b, l, h, p)
    if z is not None:
        y = y * F.silu(z.to(y.dtype))  # (b, l, h, p)
    return y.to(out_dtype)


def ssd_sequential(x: torch.Tensor, dt: torch.Tensor, A: torch.Tensor, B: torch.Tensor, C: torch.Tensor,
                   D: torch.Tensor | None = None, z: torch.Tensor | None = None,
                   dt_bias: torch.Tensor | None = None, dt_softplus: bool = False,
                   dt_limit: tuple[float, float] = NO_LIMIT, initial_states: torch.Tensor | None = None,
                   return_final_states: bool = False):
    """The SSD recurrence as a loop over time: the reference the other two forms are checked against.

    Args:
        x: input ``(b, l, nheads, headdim)``, any float dtype.
        dt: step sizes ``(b, l, nheads)`` (Mamba-1's ``delta``), before bias/softplus/clamp.
        A: one decay rate per head ``(nheads,)``, usually negative (``-exp(A_log)``).
        B, C: input and output projections ``(b, l, ngroups, d_state)``; ``ngroups`` divides ``nheads``.
        D: skip weight ``(nheads,)`` or ``(nheads, headdim)``, optional.
        z: gate input ``(b, l, nheads, headdim)``, optional; the output is multiplied by ``silu(z)``.
        dt_bias: added to ``dt`` before the softplus ``(nheads,)``, optional.
        dt_softplus: apply ``softplus`` to ``dt`` (after the bias).
        dt_limit: ``(lo, hi)``: ``dt`` is clamped into it (after the softplus) unless it is ``(0, inf)``.
        initial_states: the state before the first step ``(b, nheads, headdim, d_state)``; zeros when ``None``.
        return_final_states: also return the state after the last step.

    Returns:
        ``y (b, l, nheads, headdim)`` in ``x``'s dtype, or ``(y, final_states)`` with
        ``final_states (b, nheads, headdim, d_state)`` in float32 (float64 when an input is).

    Raises:
        TypeError: a missing, non-tensor or integer input.
        ValueError: shapes other than the layout above, groups not dividing heads, mixed
        devices, ``dt_limit`` not ``0 <= lo <= hi``.

    Matches the step of ``Mamba2.step`` (``mamba_ssm/modules/mamba2.py``, commit 60dadf2) applied
    ``l`` times.
    """
    out_dtype = scan_output_dtype(x)
    x, dt, A, B, C, D, h0 = _prepare(x, dt, A, B, C, D, z, dt_bias, dt_softplus, dt_limit, initial_states)
    b, l, nheads, p = x.shape
    state = h0 if h0 is not None else x.new_zeros(b, nheads, p, B.shape[-1])  # (b, h, p, n)
    ys = []
    for x_t, dt_t, B_t, C_t in zip(x.unbind(1), dt.unbind(1), B.unbind(1), C.unbind(1)):
        A_bar = torch.exp(dt_t * A)  # (b, h): one decay per head
        B_bar_x = torch.einsum("bh,bhn,bhp->bhpn", dt_t, B_t, x_t)  # (b, h, p, n)
        state = A_bar[:, :, None, None] * state + B_bar_x  # (b, h, p, n)
        ys.append(torch.einsum("bhpn,bhn->bhp", state, C_t))  # (b, h, p)
    y = torch.stack(ys, dim=1) if ys else x.new_zeros(b, 0, nheads, p)  # (b, l, h, p)
    y = _finish(y, x, D, z, out_dtype)
    return (y, state) if return_final_states else y


def ssd_quadratic(x: torch.Tensor, dt: torch.Tensor, A: torch.Tensor, B: torch.Tensor, C: torch.Tensor,
                  D: torch.Tensor | None = None, z: torch.Tensor | None = None,
                  dt_bias: torch.Tensor | None = None, dt_softplus: bool = False,
                  dt_limit: tuple[float, float] = NO_LIMIT, initial_states: torch.Tensor | None = None,
                  return_final_states: bool = False):
    """SSD as one masked matrix per head: ``Y = (L o C B^T) (dt X)``, the attention-like form.

    ``L[t, s] = exp(dt_{s+1} A + ... + dt_t A)`` for ``s <= t``, 0 above (paper Sections 3
    and 5). The initial state enters as ``y_t += exp(dt_0 A + ... + dt_t A) C_t . h_0``; the
    final state is ``h_l = sum_s L[l-1, s] dt_s x_s B_s^T + exp(sum_t dt_t A) h_0``. Time and memory
    ``O(l^2)`` per head. Arguments, returns and errors as :func:`ssd_sequential`.
    """
    out_dtype = scan_output_dtype(x)
    x, dt, A, B, C, D, h0 = _prepare(x, dt, A, B, C, D, z, dt_bias, dt_softplus, dt_limit, initial_states)
    a = (dt * A).transpose(1, 2)  # (b, h, l): log-decay of each step
    L = torch.exp(segsum(a))  # (b, h, l, l), 0 above the diagonal
    scores = torch.einsum("bthn,bshn->bhts", C, B)  # (b, h, l, l): C_t . B_s
    y = torch.einsum("bhts,bsh,bshp->bthp", L * scores, dt, x)  # (b, l, h, p)
    # decay from the start (before step 0) to step t, and from each step s to the end
    from_start = torch.exp(segsum(F.pad(a, (1, 0)))[..., 1:, 0])  # (b, h, l)
    to_end = L[..., -1, :] if a.shape[-1] else a  # (b, h, l)
    final = torch.einsum("bhs,bsh,bshp,bshn->bhpn", to_end, dt, x, B)  # (b, h, p, n)
    if h0 is not None:
        y = y + torch.einsum("bhpn,bthn,bht->bthp", h0, C, from_start)  # (b, l, h, p)
        total = from_start[..., -1] if a.shape[-1] else torch.ones_like(A).expand(a.shape[0], -1)  # (b, h)
        final = final + total[:, :, None, None] * h0  # (b, h, p, n)
    y = _finish(y, x, D, z, out_dtype)
    return (y, final) if return_final_states else y


def ssd_chunked(x: torch.Tensor, dt: torch.Tensor, A: torch.Tensor, B: torch.Tensor, C: torch.Tensor,
                chunk_size: int = 256, D: torch.Tensor | None = None, z: torch.Tensor | None = None,
                dt_bias: torch.Tensor | None = None, dt_softplus: bool = False,
                dt_limit: tuple[float, float] = NO_LIMIT, initial_states: torch.Tensor | None = None,
                return_final_states: bool = False):
    """SSD by chunks of ``chunk_size`` steps (paper Section 6): the four steps.

    With ``Q = chunk_size`` and ``c`` chunks (the last one padded with ``dt = 0``, exact):

    1. inside each chunk, the quadratic form ``Y_diag = (L o C B^T) (dt X)``;
    2. each chunk's own final state, ``sum_s decay(s -> end) dt_s x_s B_s^T``;
    3. the recurrence over the ``c`` chunk states (a ``(c+1) x (c+1)`` decay matrix, the
       initial state in front), which gives the state entering every chunk and the final one;
    4. each entering state read out inside its chunk, ``Y_off = exp(decay to t) C_t . state``.

    Time ``O(l Q)``, memory ``O(l Q)`` per head. Every decay is a segment sum (:func:`segsum`),
    stable under strong decay. Arguments, returns and errors as :func:`ssd_sequential`, plus
    ``chunk_size``, any positive int (``ValueError`` otherwise). Matches
    ``mamba_chunk_scan_combined`` (``mamba_ssm/ops/triton/ssd_combined.py``, commit 60dadf2).
    """
    out_dtype = scan_output_dtype(x)
    x, dt, A, B, C, D, h0 = _prepare(x, dt, A, B, C, D, z, dt_bias, dt_softplus, dt_limit,
                                     initial_states, chunk_size, expand_groups=False)
    b, l, nheads, p = x.shape
    g, n = B.shape[2], B.shape[3]
    r = nheads // g  # heads per group: head i = (group i // r, member i % r)
    Q = min(chunk_size, max(l, 1))  # a sequence shorter than a chunk is one chunk of its own length
    pad = (Q - l % Q) % Q  # 0 when l is a multiple of Q
    chunks = lambda t: F.pad(t, (0, 0) * (t.dim() - 2) + (0, pad)).unflatten(1, (-1, Q))  # noqa: E731
    Bc, Cc = chunks(B), chunks(C)  # (b, c, Q, g, n): B and C stay per group, never copied per head
    dtc = chunks(dt)  # (b, c, Q, h)
    Xdt = chunks(x * dt[..., None]).unflatten(3, (g, r))  # (b, c, Q, g, r, p): dt_s x_s
    a = (dtc * A).permute(0, 3, 1, 2)  # (b, h, c, Q): log-decay of each step
    # 1. inside the chunks: C_t . B_s once per group, the decay per head
    scores = torch.einsum("bclgn,bcsgn->bgcls", Cc, Bc)  # (b, g, c, Q, Q)
    Y_diag = _diagonal_blocks(scores, a.unflatten(1, (g, r)), Xdt)  # (b, c, Q, g, r, p)
    # 2. each chunk's final state, from its own inputs: the decay from step s to the chunk's end is
    # exp(a[s+1] + ... + a[Q-1]), a running sum from the end (its own terms, as in segsum)
    tail = a.flip(-1).cumsum(-1).flip(-1)  # (b, h, c, Q): a[s] + ... + a[Q-1]
    to_end = torch.exp(F.pad(tail[..., 1:], (0, 1))).unflatten(1, (g, r)).permute(0, 3, 4, 1, 2)  # (b, c, Q, g, r)
    states = torch.einsum("bcsgrp,bcsgn->bcgrpn", Xdt * to_end[..., None], Bc)  # (b, c, g, r, p, n)
    states = states.flatten(2, 3)  # (b, c, h, p, n)
    # 3. the recurrence between chunks: state entering chunk j = sum_i decay(i -> j) states_i
    if h0 is None:
        h0 = x.new_zeros(b, nheads, p, n)
    states = torch.cat([h0[:, None], states], dim=1)  # (b, c+1, h, p, n)
    chunk_decay = torch.exp(segsum(F.pad(a.sum(-1), (1, 0))))  # (b, h, c+1, c+1)
    entering = torch.einsum("bhji,bihpn->bjhpn", chunk_decay, states)  # (b, c+1, h, p, n)
    entering, final = entering[:, :-1], entering[:, -1]  # (b, c, h, p, n), (b, h, p, n)
    # 4. the entering state's contribution at every step of its chunk
    from_start = torch.exp(torch.cumsum(a, dim=-1))  # (b, h, c, Q): a partial sum, no cancellation
    from_start = from_start.permute(0, 2, 3, 1).unflatten(3, (g, r))  # (b, c, Q, g, r)
    Y_off = torch.einsum("bclgn,bcgrpn->bclgrp", Cc, entering.unflatten(2, (g, r)))  # (b, c, Q, g, r, p)
    y = (Y_diag + Y_off * from_start[..., None]).flatten(3, 4).flatten(1, 2)[:, :l]  # (b, l, h, p)
    y = _finish(y, x, D, z, out_dtype)
    return (y, final) if return_final_states else y


def _diagonal_block(scores: torch.Tensor, a: torch.Tensor, Xdt: torch.Tensor) -> torch.Tensor:
    """Step 1 for some heads: ``Y = (L o C B^T) (dt X)`` inside every chunk.

    ``scores (b, g, c, Q, Q)`` = ``C_t . B_s``; ``a (b, g, r, c, Q)`` the log-decays of ``r`` heads
    per group; ``Xdt (b, c, Q, g, r, p)``. Returns ``(b, c, Q, g, r, p)``.
    """
    L = decay_matrix(a)  # (b, g, r, c, Q, Q): exp(segsum(a))
    return torch.einsum("bgrcls,bcsgrp->bclgrp", L * scores[:, :, None], Xdt)


def _diagonal_blocks(scores: torch.Tensor, a: torch.Tensor, Xdt: torch.Tensor) -> torch.Tensor:
    """:func:`_diagonal_block` over slices of the heads of each group, each slice's decay matrix at
    most :data:`DECAY_BLOCK_BYTES`; with several slices and gradients on, each slice is recomputed in
    the backward instead of kept (the same numbers: the heads are independent here)."""
    b, g, r, c, Q = a.shape
    per_head = b * g * c * Q * Q * a.element_size()  # one head of each group
    step = max(1, min(r, int(DECAY_BLOCK_BYTES // per_head))) if DECAY_BLOCK_BYTES < math.inf else r
    if step >= r:
        return _diagonal_block(scores, a, Xdt)
    recompute = torch.is_grad_enabled() and any(t.requires_grad for t in (scores, a, Xdt))
    parts = []
    for i in range(0, r, step):
        args = (scores, a[:, :, i:i + step], Xdt[:, :, :, :, i:i + step])
        parts.append(checkpoint(_diagonal_block, *args, use_reentrant=False) if recompute
                     else _diagonal_block(*args))
    return torch.cat(parts, dim=4)  # (b, c, Q, g, r, p)


def ssd(x: torch.Tensor, dt: torch.Tensor, A: torch.Tensor, B: torch.Tensor, C: torch.Tensor,
        chunk_size: int = 256, *, method: str = "chunked", **kwargs):
    """SSD, Mamba-2's scan: ``method="chunked"`` (default), ``"quadratic"`` or ``"sequential"``.

    The layout of ``mamba_chunk_scan_combined`` (``mamba_ssm/ops/triton/ssd_combined.py``,
    state-spaces/mamba commit 60dadf2; paper arXiv 2405.21060, Section 6):

    * ``x (b, l, nheads, headdim)``, ``dt (b, l, nheads)`` (Mamba-1's ``delta``), ``A (nheads,)``,
      ``B, C (b, l, ngroups, d_state)`` with ``ngroups`` dividing ``nheads``; any float dtype;
    * keyword options ``D (nheads,)`` or ``(nheads, headdim)``, ``z (b, l, nheads, headdim)``,
      ``dt_bias (nheads,)``, ``dt_softplus``, ``dt_limit (lo, hi)``,
      ``initial_states (b, nheads, headdim, d_state)``, ``return_final_states``;
    * ``chunk_size``: checked for every method (a positive int), used by the chunked one.

    Returns ``y`` like ``x`` in ``x``'s dtype, or ``(y, final_states)`` with the final state
    ``(b, nheads, headdim, d_state)`` in float32 (float64 when an input is). The three methods
    compute the same function (tests/test_ssd.py); see :func:`ssd_sequential` for each argument.

    Raises:
        TypeError: a missing, non-tensor or integer input.
        ValueError: an unknown ``method``; shapes other than the layout above, groups not
        dividing heads, mixed devices, ``dt_limit`` not ``0 <= lo <= hi``, a ``chunk_size``
        that is not a positive int.
    """
    if method == "chunked":
        return ssd_chunked(x, dt, A, B, C, chunk_size, **kwargs)
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    check_ssd_inputs(x, dt, A, B, C, None, None, None, NO_LIMIT, None, chunk_size)
    return (ssd_quadratic if method == "quadratic" else ssd_sequential)(x, dt, A, B, C, **kwargs)

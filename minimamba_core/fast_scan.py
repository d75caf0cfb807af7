"""The fast selective scan: chunks, a hand-written backward that recomputes, an opt-in compiler.

``chunked_scan`` computes ``y_t = C_t . h_t`` and the last state of the recurrence
``h_t = exp(delta_t A) h_{t-1} + delta_t x_t B_t`` (``scan.py`` adds ``D`` and the gate) as an
``torch.autograd.Function`` whose backward is written out (the adjoint equations in
``chunk_scan.py``). The sequence is cut into chunks of ``T`` steps; only the state entering each
chunk, ``(b, l/T, d_inner, d_state)``, is kept for the backward, which recomputes the states of
one chunk at a time. Autograd through the blocked scan kept ``(b, l, d_inner, d_state)`` several
times over; this keeps ``1/T`` of it.

Two schedules compute the same numbers:

* ``"sequential"`` (opt-in, ``SCHEDULE = "sequential"``; faster on CPUs with many channels): chunks one
  after another, the state carried between them. A CPU's few cores are already busy with that
  many independent channels; small chunks stay in cache and the loop costs one fused
  ``addcmul_`` per step. This is a loop over time, chosen because it is faster there.
* ``"parallel"`` (the default on every device): all chunks side by side. Each chunk's effect on a state
  is summarized without a loop (``chunk_summary_forward``), the summaries are scanned the same way
  recursively to give the state entering every chunk, then every chunk runs its ``T`` steps at
  once. ``d_inner`` is processed in blocks so that no temporary exceeds ``_BLOCK_ELEMENTS``
  on a GPU, or ``_CPU_BLOCK_ELEMENTS`` on a CPU. There the gain is the memory allocator's:
  glibc hands a temporary above its mmap threshold (at most 32 MiB) fresh pages from the OS at
  every call, each page a fault; blocks of 8 MiB temporaries reuse freed memory instead. The
  threshold starts at 128 KiB and rises only once a block that large has been freed, and the
  heap is trimmed back to the OS whenever more than twice the threshold is free at its top, so
  in a fresh process the blocks fault too. The first scan on a CPU therefore allocates and frees
  one 28 MiB block (``_prime_allocator``: no page is touched), which raises both thresholds for
  the process as any larger computation would (on a 2-core machine, forward at l = 256 in a
  fresh process: 25.0 ms and 11,229 page faults per call unprimed, 9.5 ms and 63 primed;
  ``benchmarks/bench_allocator.py``, ``benchmarks/LOG.md``).

``set_scan_compile(True)`` (or the environment variable ``MINIMAMBA_COMPILE=1``) runs the chunk
functions through ``torch.compile``; where that is unavailable or fails, it warns once and stays
eager. Built in notebook ``11_performance``; timed in ``benchmarks/``.
"""

from __future__ import annotations

import torch
from torch.autograd.function import once_differentiable

from .scan_compile import chunk_fn as _fn
from .scan_compile import scan_compile_enabled, scan_compile_failures, set_scan_compile  # noqa: F401

_CHUNK = {"sequential": 64, "parallel": 32}  # time steps per chunk, per schedule (eager)
_CHUNK_COMPILED = {"sequential": 32, "parallel": 32}  # compiled: the loop is unrolled, keep it short
# Compiled on a GPU: chunks of 16 halve the backward's unrolled reverse loop (its per-step
# reductions over d_inner run one after another) for twice the saved chunk-entry states; at
# issue 7's shape on H200s, faster than 32 in every pairing measured, though each pairing spans
# two processes or machines (benchmarks/LOG.md, device run 6)
_CHUNK_COMPILED_GPU = {"sequential": 32, "parallel": 16}
_BLOCK_ELEMENTS = 2 ** 27  # largest (m, T, d_block, n) temporary of the parallel schedule (512 MiB fp32)
# On a CPU: 8 MiB fp32 blocks (below glibc's largest mmap threshold, 32 MiB, so no page faults
# per call once the threshold has risen) of at least 16 channels (Python's overhead per block);
# chosen by trial on a 2-core machine
_CPU_BLOCK_ELEMENTS, _CPU_MIN_CHANNELS = 2 ** 21, 16
# glibc raises its mmap threshold to the size of a freed mmapped block, up to 32 MiB, and its
# trim threshold to twice that: one float32 block of 28 MiB, allocated and freed once (below
# 32 MiB even with the 2 MiB alignment PyTorch uses under THP_MEM_ALLOC_ENABLE=1)
_PRIME_ELEMENTS = 28 * 2 ** 20 // 4
_ALLOCATOR = {"primed": False}  # benchmarks set it to True to measure an unprimed allocator
SCHEDULES = ("sequential", "parallel")
SCHEDULE: str | None = None  # force one schedule everywhere (benchmarks); None: _default_schedule

def _pad_time(t: torch.Tensor, pad: int) -> torch.Tensor:
    """Append ``pad`` zero steps along dim 1 (``delta = 0`` makes them identity steps)."""
    return torch.nn.functional.pad(t, (0, 0) * (t.dim() - 2) + (0, pad)) if pad else t


def _recurrence_states(ds, e, A, h0, T):
    """States entering each step of ``h_k = exp(ds_k A) h_{k-1} + e_k``, and the last state.

    ``ds (b, K, d)``, ``e (b, K, d, n)``, ``h0 (b, d, n)`` -> ``(b, K, d, n)``, ``(b, d, n)``.
    Groups of ``T`` steps: each group's summary, the summaries scanned the same way
    (recursively, ``log_T K`` levels), then every group's ``T`` steps side by side.
    """
    b, K, d, n = e.shape
    if K < T and not scan_compile_enabled() and not torch.compiler.is_compiling():
        # one group, no padding steps; compiled (the switch, or a user's torch.compile around
        # the scan), T steps always, so that one graph serves every length
        T = K
    G = -(-K // T)
    ds = _pad_time(ds, G * T - K).reshape(b * G, T, d)
    e = _pad_time(e, G * T - K).reshape(b * G, T, d, n)
    if G == 1:
        states, h_last = _fn("group_states")(h0, ds, e, A)
    else:
        ds_group, e_group = _fn("group_summary")(ds, e, A)  # (b G, d), (b G, d, n)
        entering, h_last = _recurrence_states(ds_group.view(b, G, d), e_group.view(b, G, d, n),
                                              A, h0, T)
        states, _ = _fn("group_states")(entering.reshape(b * G, d, n), ds, e, A)
    return states.reshape(b, G * T, d, n)[:, :K], h_last


def _parallel_forward(x, delta, A, B, C, h0, T):
    """All chunks side by side; ``x, delta (b, L, d)`` with ``L = nc*T``. Returns
    ``y (b, L, d)``, states entering every chunk ``(b, nc, d, n)`` and the last state."""
    b, L, d = x.shape
    nc, n = L // T, A.shape[1]
    fold = lambda t: t.reshape(b * nc, T, *t.shape[2:])  # noqa: E731   (b, L, ...) -> (b nc, T, ...)
    h_end = _fn("chunk_summary_forward")(fold(delta), fold(x), A, fold(B))  # (b nc, d, n)
    ds = delta.view(b, nc, T, d).sum(2)  # (b, nc, d)
    entering, h_last = _recurrence_states(ds, h_end.view(b, nc, d, n), A, h0, T)
    y, _ = _fn("chunk_forward")(entering.reshape(b * nc, d, n), fold(delta), fold(x), A, fold(B),
                                fold(C))
    return y.view(b, L, d), entering, h_last


def _parallel_backward(x, delta, A, B, C, entering, gy, g_last, T):
    """Gradients for :func:`_parallel_forward`: ``ddelta, dx (b, L, d)``, ``dB, dC (b, L, n)``,
    ``dA (d, n)``, ``dh0 (b, d, n)``."""
    b, L, d = x.shape
    nc, n = L // T, A.shape[1]
    fold = lambda t: t.reshape(b * nc, T, *t.shape[2:])  # noqa: E731
    m_chunk = _fn("chunk_summary_backward")(fold(delta), A, fold(C), fold(gy))  # (b nc, d, n)
    ds = delta.view(b, nc, T, d).sum(2)  # (b, nc, d)
    # The adjoint runs backwards: lam_arriving(c-1) = exp(ds_c A) lam_arriving(c) + m_c, the
    # same recurrence on the flipped chunk sequence; it ends at dL/dh0.
    arriving, dh0 = _recurrence_states(ds.flip(1), m_chunk.view(b, nc, d, n).flip(1), A, g_last, T)
    ddelta, dx, dB, dC, dA, _ = _fn("chunk_backward")(
        entering.reshape(b * nc, d, n), arriving.flip(1).reshape(b * nc, d, n), fold(delta),
        fold(x), A, fold(B), fold(C), fold(gy))
    return ddelta.view(b, L, d), dx.view(b, L, d), dB.view(b, L, n), dC.view(b, L, n), dA, dh0


def _sequential_forward(x, delta, A, B, C, h0, T):
    """Chunks one after another: ``y (b, L, d)``, states entering every chunk, the last state."""
    b, L, d = x.shape
    fwd = _fn("chunk_forward")
    y = torch.empty_like(x)
    entering = x.new_empty(b, L // T, d, A.shape[1])
    h = h0
    for c in range(L // T):
        s = slice(c * T, (c + 1) * T)
        entering[:, c] = h
        y[:, s], h = fwd(h, delta[:, s], x[:, s], A, B[:, s], C[:, s])
    return y, entering, h


def _sequential_backward(x, delta, A, B, C, entering, gy, g_last, T):
    """Gradients for :func:`_sequential_forward`, chunks in reverse order."""
    bwd = _fn("chunk_backward")
    ddelta, dx, dB, dC = map(torch.empty_like, (delta, x, B, C))
    dA = torch.zeros_like(A)
    lam = g_last
    for c in reversed(range(entering.shape[1])):
        s = slice(c * T, (c + 1) * T)
        ddelta[:, s], dx[:, s], dB[:, s], dC[:, s], dA_c, lam = bwd(
            entering[:, c], lam, delta[:, s], x[:, s], A, B[:, s], C[:, s], gy[:, s])
        dA += dA_c
    return ddelta, dx, dB, dC, dA, lam


def _d_blocks(x, n, budget=None):
    """Equal slices of ``d_inner`` for ``x (b, L, d)`` whose ``(b, L, d_block, n)`` temporaries
    stay under ``budget`` elements: by default ``_BLOCK_ELEMENTS``, or on a CPU
    ``_CPU_BLOCK_ELEMENTS`` with at least ``_CPU_MIN_CHANNELS`` channels (Python's overhead per
    block). The width is the largest divisor of ``d`` that fits, or where that is below the
    minimum width, the smallest divisor of ``d`` above it."""
    b, L, d = x.shape
    cpu = x.device.type == "cpu"
    budget = budget or _block_elements(x.device)
    least = min(d, _CPU_MIN_CHANNELS if cpu else 1)
    step = min(d, max(least, budget // max(1, b * L * n)))
    step = max(k for k in range(1, step + 1) if d % k == 0)
    if step < least:  # e.g. d = 17: no divisor between 2 and 16
        step = min(k for k in range(least, d + 1) if d % k == 0)
    return [slice(i, i + step) for i in range(0, d, step)]


def _parallel_forward_blocks(x, delta, A, B, C, h0, T):
    """:func:`_parallel_forward` over blocks of ``d_inner``."""
    b, L, d = x.shape
    # Compiled on a GPU, the forward keeps no (b, L, d, n) temporary (the loops are fused): one block.
    budget = 16 * _BLOCK_ELEMENTS if scan_compile_enabled() and x.device.type != "cpu" else None
    blocks = _d_blocks(x, A.shape[1], budget)
    if len(blocks) == 1:  # no copies into the outputs
        return _parallel_forward(x, delta, A, B, C, h0, T)
    y, entering, h_last = torch.empty_like(x), x.new_empty(b, L // T, d, A.shape[1]), torch.empty_like(h0)
    for s in blocks:
        y[..., s], entering[:, :, s], h_last[:, s] = _parallel_forward(
            x[..., s], delta[..., s], A[s], B, C, h0[:, s], T)
    return y, entering, h_last


def _parallel_backward_blocks(x, delta, A, B, C, entering, gy, g_last, T):
    """:func:`_parallel_backward` over blocks of ``d_inner``; ``dB, dC`` summed over blocks."""
    b, L, d = x.shape
    ddelta, dx, dA, dh0 = map(torch.empty_like, (delta, x, A, g_last))
    dB, dC = torch.zeros_like(B), torch.zeros_like(C)
    for s in _d_blocks(x, A.shape[1]):
        ddelta[..., s], dx[..., s], dB_s, dC_s, dA[s], dh0[:, s] = _parallel_backward(
            x[..., s], delta[..., s], A[s], B, C, entering[:, :, s], gy[..., s], g_last[:, s], T)
        dB += dB_s
        dC += dC_s
    return ddelta, dx, dB, dC, dA, dh0


def _prime_allocator() -> None:
    """Once per process: allocate and free a float32 block of ``_PRIME_ELEMENTS`` (untouched, so
    no page is faulted in), raising glibc's mmap and trim thresholds (module doc). Elsewhere
    than glibc it is one allocation and free, and harmless. Skipped while ``torch.compile``
    traces (a guard on the flag would compile the caller twice)."""
    if torch.compiler.is_compiling() or _ALLOCATOR["primed"]:
        return
    _ALLOCATOR["primed"] = True
    block = torch.empty(_PRIME_ELEMENTS, dtype=torch.float32)  # not the default dtype: 28 MiB
    del block


def _block_elements(device: torch.device) -> int:
    """The default ``d_inner`` block budget: ``_CPU_BLOCK_ELEMENTS`` on a CPU, else ``_BLOCK_ELEMENTS``."""
    return _CPU_BLOCK_ELEMENTS if device.type == "cpu" else _BLOCK_ELEMENTS


def _compiled_chunks(device: torch.device) -> dict:
    """Steps per chunk per schedule when compiled: ``_CHUNK_COMPILED`` on a CPU, else
    ``_CHUNK_COMPILED_GPU`` (the dict itself, which benchmarks change and restore)."""
    return _CHUNK_COMPILED if device.type == "cpu" else _CHUNK_COMPILED_GPU


def _chunk_steps(schedule: str, device: torch.device) -> int:
    """Time steps per chunk: ``_CHUNK`` eager, :func:`_compiled_chunks` compiled."""
    return (_compiled_chunks(device) if scan_compile_enabled() else _CHUNK)[schedule]


_SCHEDULE_FNS = {"sequential": (_sequential_forward, _sequential_backward),
                 "parallel": (_parallel_forward_blocks, _parallel_backward_blocks)}


class ChunkedScan(torch.autograd.Function):
    """``(x, delta, A, B, C, h0) -> (y, h_last)`` with ``y_t = C_t . h_t``; see the module doc.

    ``x, delta (b, l, d)``, ``A (d, n)``, ``B, C (b, l, n)``, ``h0 (b, d, n)``, one float dtype;
    ``delta`` already biased and softplus-ed. The length is padded to a multiple of the chunk
    with identity steps (``delta = x = B = C = 0``: ``A_bar = 1``, no input, no output).
    Saves the inputs and the chunk-entry states ``(b, l/T, d, n)`` only.
    """

    @staticmethod
    def forward(ctx, x, delta, A, B, C, h0, schedule):
        T, L = _chunk_steps(schedule, x.device), x.shape[1]
        if x.device.type == "cpu":
            _prime_allocator()
        # A = -inf (exp(A_log) overflowed) would make the padding steps' delta*A = 0*(-inf) = NaN;
        # the most negative finite value decays the same (exp(delta A) = 0 for delta > 0)
        A = A.clamp(min=torch.finfo(A.dtype).min)
        padded = [_pad_time(t, -L % T) for t in (x, delta, B, C)]
        y, entering, h_last = _SCHEDULE_FNS[schedule][0](*padded[:2], A, *padded[2:], h0, T)
        ctx.save_for_backward(*padded, A, entering)
        ctx.schedule, ctx.L, ctx.T = schedule, L, T
        return y[:, :L], h_last

    @staticmethod
    @once_differentiable
    def backward(ctx, gy, g_last):
        x, delta, B, C, A, entering = ctx.saved_tensors
        T, L = ctx.T, ctx.L
        b, d, n = x.shape[0], x.shape[2], A.shape[1]
        gy = _pad_time(gy, x.shape[1] - L) if gy is not None else torch.zeros_like(x)
        g_last = x.new_zeros(b, d, n) if g_last is None else g_last
        ddelta, dx, dB, dC, dA, dh0 = _SCHEDULE_FNS[ctx.schedule][1](
            x, delta, A, B, C, entering, gy.contiguous(), g_last.contiguous(), T)
        return dx[:, :L], ddelta[:, :L], dA, dB[:, :L], dC[:, :L], dh0, None


def _default_schedule(x: torch.Tensor, A: torch.Tensor) -> str:
    """Always ``"parallel"``: the parallel scan's contract is no Python loop over every time step.

    On a CPU the ``"sequential"`` schedule does half the arithmetic (no summaries) and is faster
    (measured with two threads, fwd+bwd at (b, l, d_inner, N) = (1, 1024, 768, 16): 94.6 ms
    against 111.4 ms, ``benchmarks/results/cpu-2t-quiet-run5-2026-11-30.json``); opt in with
    ``fast_scan.SCHEDULE = "sequential"``."""
    return "parallel"


def chunked_scan(x, delta, A, B, C, h0=None, schedule: str | None = None):
    """``y (b, l, d)`` and the last state ``(b, d, n)`` of the scan without ``D`` and gate.

    Args as :class:`ChunkedScan`, all in one float dtype on one device; ``h0`` zeros when
    ``None``; ``schedule`` ``"sequential"`` or ``"parallel"``, by default
    :func:`_default_schedule`'s choice. Raises ``ValueError`` for an unknown schedule or an
    empty sequence (l = 0).
    """
    if schedule is None:
        schedule = SCHEDULE or _default_schedule(x, A)
    if schedule not in SCHEDULES:
        raise ValueError(f"schedule must be one of {SCHEDULES}, got {schedule!r}")
    if x.shape[1] == 0:
        raise ValueError("chunked_scan got an empty sequence (l = 0); pass at least one time step")
    if h0 is None:
        h0 = x.new_zeros(x.shape[0], x.shape[2], A.shape[1])
    contiguous = [t.contiguous() for t in (x, delta, A, B, C, h0)]
    return ChunkedScan.apply(*contiguous, schedule)

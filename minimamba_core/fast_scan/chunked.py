"""The chunked scan: chunks, a hand-written backward that recomputes, two schedules.

``chunked_scan`` computes ``y_t = C_t . h_t`` and the last state of the recurrence
``h_t = exp(delta_t A) h_{t-1} + delta_t x_t B_t`` (``scan.py`` adds ``D`` and the gate) as an
``torch.autograd.Function`` whose backward is written out (the adjoint equations in
``chunk_ops.py``). The sequence is cut into chunks of ``T`` steps; only the state entering each
chunk, ``(b, l/T, d_inner, d_state)``, is kept for the backward, which recomputes the states of
one chunk at a time. Autograd through the blocked scan kept ``(b, l, d_inner, d_state)`` several
times over; this keeps ``1/T`` of it.

Two schedules compute the same numbers (``settings.py`` holds every tuning number):

* ``"chained"`` (opt-in; faster on CPUs with many channels): chunks one after another, the state
  carried between them. A CPU's few cores are already busy with that many independent channels;
  small chunks stay in cache and the loop costs one fused ``addcmul_`` per step.
* ``"summarized"`` (the default on every device): all chunks side by side. Each chunk's effect on
  a state is summarized without a loop (``chunk_summary_forward``), the summaries are scanned the
  same way recursively to give the state entering every chunk, then every chunk runs its ``T``
  steps at once. ``d_inner`` is processed in blocks so that no temporary exceeds the block
  budget. On a CPU the gain is the memory allocator's: glibc hands a temporary above its mmap
  threshold (at most 32 MiB) fresh pages from the OS at every call, each page a fault; blocks of
  8 MiB temporaries reuse freed memory instead. The threshold starts at 128 KiB and rises only
  once a block that large has been freed, and the heap is trimmed back to the OS whenever more
  than twice the threshold is free at its top, so in a fresh process the blocks fault too. The
  first scan on a CPU therefore allocates and frees one 28 MiB block (:func:`prime_allocator`: no
  page is touched), which raises both thresholds for the process as any larger computation would
(``benchmarks/bench_allocator.py``, ``benchmarks/LOG.md``).

Built in notebooks ``04_parallel_scan`` (the schedules) and ``11_performance`` (the backward);
timed in ``benchmarks/``.
"""

from __future__ import annotations

import torch
from torch.autograd.function import once_differentiable

from .compile import chunk_fn, scan_compile_enabled
from .settings import SCHEDULES, settings

_primed = {"done": False}  # whether this process has primed the allocator (prime_allocator)


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
        states, h_last = chunk_fn("group_states")(h0, ds, e, A)
    else:
        ds_group, e_group = chunk_fn("group_summary")(ds, e, A)  # (b G, d), (b G, d, n)
        entering, h_last = _recurrence_states(ds_group.view(b, G, d), e_group.view(b, G, d, n),
                                              A, h0, T)
        states, _ = chunk_fn("group_states")(entering.reshape(b * G, d, n), ds, e, A)
    return states.reshape(b, G * T, d, n)[:, :K], h_last


def _summarized_forward(x, delta, A, B, C, h0, T):
    """All chunks side by side; ``x, delta (b, L, d)`` with ``L = nc*T``. Returns
    ``y (b, L, d)``, states entering every chunk ``(b, nc, d, n)`` and the last state."""
    b, L, d = x.shape
    nc, n = L // T, A.shape[1]
    fold = lambda t: t.reshape(b * nc, T, *t.shape[2:])  # noqa: E731   (b, L, ...) -> (b nc, T, ...)
    h_end = chunk_fn("chunk_summary_forward")(fold(delta), fold(x), A, fold(B))  # (b nc, d, n)
    ds = delta.view(b, nc, T, d).sum(2)  # (b, nc, d)
    entering, h_last = _recurrence_states(ds, h_end.view(b, nc, d, n), A, h0, T)
    y, _ = chunk_fn("chunk_forward")(entering.reshape(b * nc, d, n), fold(delta), fold(x), A, fold(B),
                                fold(C))
    return y.view(b, L, d), entering, h_last


def _summarized_backward(x, delta, A, B, C, entering, gy, g_last, T):
    """Gradients for :func:`_summarized_forward`: ``ddelta, dx (b, L, d)``, ``dB, dC (b, L, n)``,
    ``dA (d, n)``, ``dh0 (b, d, n)``."""
    b, L, d = x.shape
    nc, n = L // T, A.shape[1]
    fold = lambda t: t.reshape(b * nc, T, *t.shape[2:])  # noqa: E731
    m_chunk = chunk_fn("chunk_summary_backward")(fold(delta), A, fold(C), fold(gy))  # (b nc, d, n)
    ds = delta.view(b, nc, T, d).sum(2)  # (b, nc, d)
    # The adjoint runs backwards: lam_arriving(c-1) = exp(ds_c A) lam_arriving(c) + m_c, the
    # same recurrence on the flipped chunk sequence; it ends at dL/dh0.
    arriving, dh0 = _recurrence_states(ds.flip(1), m_chunk.view(b, nc, d, n).flip(1), A, g_last, T)
    ddelta, dx, dB, dC, dA, _ = chunk_fn("chunk_backward")(
        entering.reshape(b * nc, d, n), arriving.flip(1).reshape(b * nc, d, n), fold(delta),
        fold(x), A, fold(B), fold(C), fold(gy))
    return ddelta.view(b, L, d), dx.view(b, L, d), dB.view(b, L, n), dC.view(b, L, n), dA, dh0


def _chained_forward(x, delta, A, B, C, h0, T):
    """Chunks one after another: ``y (b, L, d)``, states entering every chunk, the last state."""
    b, L, d = x.shape
    fwd = chunk_fn("chunk_forward")
    y = torch.empty_like(x)
    entering = x.new_empty(b, L // T, d, A.shape[1])
    h = h0
    for c in range(L // T):
        s = slice(c * T, (c + 1) * T)
        entering[:, c] = h
        y[:, s], h = fwd(h, delta[:, s], x[:, s], A, B[:, s], C[:, s])
    return y, entering, h


def _chained_backward(x, delta, A, B, C, entering, gy, g_last, T):
    """Gradients for :func:`_chained_forward`, chunks in reverse order."""
    bwd = chunk_fn("chunk_backward")
    ddelta, dx, dB, dC = map(torch.empty_like, (delta, x, B, C))
    dA = torch.zeros_like(A)
    lam = g_last
    for c in reversed(range(entering.shape[1])):
        s = slice(c * T, (c + 1) * T)
        ddelta[:, s], dx[:, s], dB[:, s], dC[:, s], dA_c, lam = bwd(
            entering[:, c], lam, delta[:, s], x[:, s], A, B[:, s], C[:, s], gy[:, s])
        dA += dA_c
    return ddelta, dx, dB, dC, dA, lam


def d_blocks(x: torch.Tensor, n: int, budget: int | None = None) -> list[slice]:
    """Equal slices of ``d_inner`` for ``x (b, L, d)`` whose ``(b, L, d_block, n)`` temporaries
    stay under ``budget`` elements: by default ``settings.block_elements(x.device)``, and on a CPU
    at least ``settings.min_block_channels_cpu`` channels (Python's overhead per block). The width
    is the largest divisor of ``d`` that fits, or where that is below the minimum width, the
    smallest divisor of ``d`` above it."""
    b, L, d = x.shape
    cpu = x.device.type == "cpu"
    budget = budget or settings.block_elements(x.device)
    least = min(d, settings.min_block_channels_cpu if cpu else 1)
    step = min(d, max(least, budget // max(1, b * L * n)))
    step = max(k for k in range(1, step + 1) if d % k == 0)
    if step < least:  # e.g. d = 17: no divisor between 2 and 16
        step = min(k for k in range(least, d + 1) if d % k == 0)
    return [slice(i, i + step) for i in range(0, d, step)]


def _summarized_forward_blocks(x, delta, A, B, C, h0, T):
    """:func:`_summarized_forward` over blocks of ``d_inner``."""
    b, L, d = x.shape
    # Compiled on a GPU, the forward keeps no (b, L, d, n) temporary (the loops are fused): one block.
    budget = 16 * settings.block_elements_gpu if scan_compile_enabled() and x.device.type != "cpu" else None
    blocks = d_blocks(x, A.shape[1], budget)
    if len(blocks) == 1:  # no copies into the outputs
        return _summarized_forward(x, delta, A, B, C, h0, T)
    y, entering, h_last = torch.empty_like(x), x.new_empty(b, L // T, d, A.shape[1]), torch.empty_like(h0)
    for s in blocks:
        y[..., s], entering[:, :, s], h_last[:, s] = _summarized_forward(
            x[..., s], delta[..., s], A[s], B, C, h0[:, s], T)
    return y, entering, h_last


def _summarized_backward_blocks(x, delta, A, B, C, entering, gy, g_last, T):
    """:func:`_summarized_backward` over blocks of ``d_inner``; ``dB, dC`` summed over blocks."""
    b, L, d = x.shape
    ddelta, dx, dA, dh0 = map(torch.empty_like, (delta, x, A, g_last))
    dB, dC = torch.zeros_like(B), torch.zeros_like(C)
    for s in d_blocks(x, A.shape[1]):
        ddelta[..., s], dx[..., s], dB_s, dC_s, dA[s], dh0[:, s] = _summarized_backward(
            x[..., s], delta[..., s], A[s], B, C, entering[:, :, s], gy[..., s], g_last[:, s], T)
        dB += dB_s
        dC += dC_s
    return ddelta, dx, dB, dC, dA, dh0


def prime_allocator() -> bool:
    """Once per process: allocate and free a float32 block of ``settings.prime_elements``
    (untouched, so no page is faulted in), raising glibc's mmap and trim thresholds (module doc).
    Elsewhere than glibc it is one allocation and free, and harmless. Returns whether it primed
    now. Skipped while ``torch.compile`` traces (a guard on the flag would compile the caller
    twice) and when ``settings.prime_allocator`` is off."""
    if torch.compiler.is_compiling() or _primed["done"] or not settings.prime_allocator:
        return False
    _primed["done"] = True
    block = torch.empty(settings.prime_elements, dtype=torch.float32)  # not the default dtype: 28 MiB
    del block
    return True


def forget_priming() -> None:
    """Forget that this process primed the allocator: the next CPU scan primes again (tests)."""
    _primed["done"] = False


_SCHEDULE_FNS = {"chained": (_chained_forward, _chained_backward),
                 "summarized": (_summarized_forward_blocks, _summarized_backward_blocks)}


class ChunkedScan(torch.autograd.Function):
    """``(x, delta, A, B, C, h0) -> (y, h_last)`` with ``y_t = C_t . h_t``; see the module doc.

    ``x, delta (b, l, d)``, ``A (d, n)``, ``B, C (b, l, n)``, ``h0 (b, d, n)``, one float dtype;
    ``delta`` already biased and softplus-ed. The length is padded to a multiple of the chunk
    with identity steps (``delta = x = B = C = 0``: ``A_bar = 1``, no input, no output).
    Saves the inputs and the chunk-entry states ``(b, l/T, d, n)`` only.
    """

    @staticmethod
    def forward(ctx, x, delta, A, B, C, h0, schedule):
        T, L = settings.chunk_steps(schedule, x.device, scan_compile_enabled()), x.shape[1]
        if x.device.type == "cpu":
            prime_allocator()
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


def chunked_scan(x, delta, A, B, C, h0=None, schedule: str | None = None):
    """``y (b, l, d)`` and the last state ``(b, d, n)`` of the scan without ``D`` and gate.

    Args as :class:`ChunkedScan`, all in one float dtype on one device; ``h0`` zeros when
    ``None``; ``schedule`` ``"chained"`` or ``"summarized"``, by default ``settings.schedule``
    or else ``"summarized"`` (the parallel scan's contract: no Python loop over every step).

    Raises:
        ValueError: an unknown schedule, an empty sequence (l = 0), or a setting out of range.
    """
    settings.check()  # cheap; catches a setting changed by hand (settings.chunk[...] = 0)
    if schedule is None:
        schedule = settings.schedule or "summarized"
    if schedule not in SCHEDULES:
        raise ValueError(f"schedule must be one of {SCHEDULES}, got {schedule!r}")
    if x.shape[1] == 0:
        raise ValueError("chunked_scan got an empty sequence (l = 0); pass at least one time step")
    if h0 is None:
        h0 = x.new_zeros(x.shape[0], x.shape[2], A.shape[1])
    contiguous = [t.contiguous() for t in (x, delta, A, B, C, h0)]
    return ChunkedScan.apply(*contiguous, schedule)

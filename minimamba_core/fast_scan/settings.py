"""The fast scan's tuning, in one public object, each number beside the measurement that chose it.

``settings`` is read at every call of the chunked scan; change it for a block of code with
:func:`using`, which restores the old values on exit (also on an error)::

    from minimamba_core import fast_scan
    with fast_scan.using(schedule="chained", chunk={"chained": 16}):
        y = mm.selective_scan_parallel(...)

Schedules (both compute the same numbers; see ``chunked.py``):

* ``"summarized"`` (the default): all chunks side by side; each chunk's effect on a state is
  summarized without a loop and the summaries are scanned, recursively.
* ``"chained"``: chunks one after another, the state handed from each to the next.

Measurements cited below are in ``benchmarks/`` (README.md, LOG.md and the results files).
"""

from __future__ import annotations

import contextlib
import dataclasses
from dataclasses import dataclass, field

import torch

SCHEDULES = ("chained", "summarized")


@dataclass
class ScanSettings:
    """Every tuning number of the fast scan; the module-level ``settings`` is the one in effect.

    Attributes:
        schedule: ``None`` (the default schedule, ``"summarized"``: the parallel scan's contract
            is no Python loop over every time step) or one of ``SCHEDULES`` forced everywhere.
            On a CPU ``"chained"`` does half the arithmetic and is faster: forward+backward at
            (b, l, d_inner, N) = (1, 1024, 768, 16) with two threads, 94.6 ms against 111.4 ms
            (``benchmarks/results/cpu-2t-quiet-run5-2026-11-30.json``).
        chunk: time steps per chunk, per schedule, eager.
        chunk_compiled_cpu: the same when compiled on a CPU: the loop is unrolled, keep it short.
        chunk_compiled_gpu: compiled on a GPU. Chunks of 16 halve the backward's unrolled reverse
            loop (its per-step reductions over d_inner run one after another) for twice the
            saved chunk-entry states; on H200s faster than 32 in every pairing measured, though
            each pairing spans two processes or machines (device run 6, ``benchmarks/LOG.md``).
        block_elements_gpu: largest ``(m, T, d_block, n)`` temporary of the summarized schedule
            off the CPU (2**27: 512 MiB in float32).
        block_elements_cpu, min_block_channels_cpu: on a CPU, 8 MiB float32 blocks (below glibc's
            largest mmap threshold, 32 MiB, so no page faults per call once the threshold has
            risen) of at least 16 channels (Python's overhead per block); chosen by trial on a
            2-core machine.
        prime_allocator: whether the first CPU scan of the process allocates and frees one
            ``prime_elements`` float32 block (28 MiB, untouched). glibc raises its mmap threshold
            to the size of a freed mmapped block, up to 32 MiB, and its trim threshold to twice
            that, so later temporaries reuse freed memory: forward at l = 256 in a fresh
            process 25.0 ms and 11,229 page faults per call unprimed, 9.5 ms and 63 primed
            (``benchmarks/bench_allocator.py``). Benchmarks switch it off to measure the
            unprimed allocator.
    """

    schedule: str | None = None
    chunk: dict = field(default_factory=lambda: {"chained": 64, "summarized": 32})
    chunk_compiled_cpu: dict = field(default_factory=lambda: {"chained": 32, "summarized": 32})
    chunk_compiled_gpu: dict = field(default_factory=lambda: {"chained": 32, "summarized": 16})
    block_elements_gpu: int = 2 ** 27
    block_elements_cpu: int = 2 ** 21
    min_block_channels_cpu: int = 16
    prime_allocator: bool = True
    prime_elements: int = 28 * 2 ** 20 // 4

    def block_elements(self, device: torch.device) -> int:
        """The ``d_inner`` block budget on ``device``: ``block_elements_cpu`` or ``_gpu``."""
        return self.block_elements_cpu if device.type == "cpu" else self.block_elements_gpu

    def chunk_steps(self, schedule: str, device: torch.device, compiled: bool) -> int:
        """Time steps per chunk for ``schedule`` on ``device``, eager or compiled."""
        if not compiled:
            return self.chunk[schedule]
        table = self.chunk_compiled_cpu if device.type == "cpu" else self.chunk_compiled_gpu
        return table[schedule]

    def check(self) -> None:
        """Raise ``ValueError`` naming the setting that is out of range."""
        if self.schedule is not None and self.schedule not in SCHEDULES:
            raise ValueError(f"fast_scan schedule must be None or one of {SCHEDULES}, got {self.schedule!r}")
        least = {"chained": 1, "summarized": 2}  # summaries of 1 step never shrink: the recursion would not end
        for name in ("chunk", "chunk_compiled_cpu", "chunk_compiled_gpu"):
            table = getattr(self, name)
            if not isinstance(table, dict) or set(table) != set(SCHEDULES) or any(
                    isinstance(v, bool) or not isinstance(v, int) or v < least[k] for k, v in table.items()):
                raise ValueError(f"fast_scan {name} must map each of {SCHEDULES} to a positive int (at least 2 "
                                 f"for 'summarized'), got {table!r}")
        for name in ("block_elements_gpu", "block_elements_cpu", "min_block_channels_cpu", "prime_elements"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"fast_scan {name} must be a positive int, got {value!r}")
        if not isinstance(self.prime_allocator, bool):
            raise ValueError(f"fast_scan prime_allocator must be a bool, got {self.prime_allocator!r}")


settings = ScanSettings()


@contextlib.contextmanager
def using(**changes):
    """Change ``settings`` inside a ``with`` block; the old values come back on exit.

    Dict settings (``chunk``, ``chunk_compiled_cpu``, ``chunk_compiled_gpu``) may be given in
    part: ``using(chunk={"chained": 8})`` keeps the other schedule's value.

    Raises:
        ValueError: an unknown setting, or a value out of range (nothing is changed then).
    """
    known = {f.name for f in dataclasses.fields(ScanSettings)}
    unknown = sorted(set(changes) - known)
    if unknown:
        raise ValueError(f"unknown fast_scan setting(s) {unknown}; known: {sorted(known)}")
    old = {name: getattr(settings, name) for name in changes}
    new = {name: ({**old[name], **value} if isinstance(old[name], dict) and isinstance(value, dict) else value)
           for name, value in changes.items()}
    trial = dataclasses.replace(settings, **new)
    trial.check()
    for name, value in new.items():
        setattr(settings, name, value)
    try:
        yield settings
    finally:
        for name, value in old.items():
            setattr(settings, name, value)

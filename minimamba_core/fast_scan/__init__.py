"""The engine behind ``selective_scan_parallel``: one door, and nothing else to reach into.

* ``chunked.py``: the chunked algorithm (two schedules, a hand-written backward, d_inner blocks);
* ``chunk_ops.py``: the operations on one chunk (forward states, adjoints, summaries);
* ``compile.py``: the opt-in ``torch.compile`` switch;
* ``settings.py``: every tuning number, in the public ``settings`` object, with ``using(...)``.

The lesson (``minimamba_core/scan.py``) calls :func:`chunked_scan` and :func:`maybe_compiled`
through this door only.
"""

from . import chunk_ops
from .chunked import chunked_scan, d_blocks, forget_priming, prime_allocator
from .compile import (compiled_functions, forget_compiled, maybe_compiled, scan_compile_enabled,
                      scan_compile_failures, set_scan_compile)
from .settings import SCHEDULES, ScanSettings, settings, using

__all__ = ["SCHEDULES", "ScanSettings", "chunk_ops", "chunked_scan", "compiled_functions", "d_blocks",
           "forget_compiled", "forget_priming", "maybe_compiled", "prime_allocator",
           "scan_compile_enabled", "scan_compile_failures", "set_scan_compile", "settings", "using"]

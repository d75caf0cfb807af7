"""The one switch that runs the fast scan's chunk functions through ``torch.compile``.

``set_scan_compile(True)`` (or ``MINIMAMBA_COMPILE=1`` in the environment before import) makes
:func:`chunk_fn` hand out compiled versions of the functions in ``chunk_ops.py`` (and
:func:`maybe_compiled` those of the scan's elementwise edges in ``scan.py``); where
``torch.compile`` is missing, or compiling fails at a call, it warns once and the scan runs eager.
Compiled, the in-place eager chunk functions are replaced by their ``*_functional`` twins:
Inductor turns an in-place update of a slice into a copy of the whole buffer per step, while the
functional loop fuses into a few kernels. Shapes are dynamic, so one compilation serves most
lengths (the first call still takes seconds to minutes: ``benchmarks/`` reports it); dynamo still
compiles again for a batch of 1 (it specializes sizes 0 and 1) and for a length that is not a
multiple of the chunk (the padded outputs' strides differ), tens of seconds each on a CPU. Inductor
does choose each kernel's block sizes from the shapes of that first call: make it at the length
you will run (on an H200, the scan first called at l = 2048 ran l = 8192 forward+backward in
42.7 ms, against 21.6 ms when first called at 8192, both with chunks of 32 steps;
``benchmarks/LOG.md``, device run 5).
"""

from __future__ import annotations

import os
import warnings

import torch

from . import chunk_ops as cs

_compile = {"on": os.environ.get("MINIMAMBA_COMPILE", "0") == "1", "fns": {}, "failed": set()}


def set_scan_compile(enabled: bool = True) -> bool:
    """Switch ``torch.compile`` for the parallel scan on or off; returns whether it is now on.

    Compiling is opt-in (first calls take seconds to minutes). Where ``torch.compile`` is missing,
    this warns and returns ``False``; a compile that fails at the first call warns and falls back
    to the eager functions until the switch is turned on again. Also read from
    ``MINIMAMBA_COMPILE=1``.
    """
    if enabled and not callable(getattr(torch, "compile", None)):
        warnings.warn("torch.compile is not available in this PyTorch; the scan stays eager",
                      RuntimeWarning, stacklevel=2)
        enabled = False
    if enabled and not _compile["on"]:
        # Compiled functions are kept across switching off and on (each holds its compiled
        # graphs); those that failed are tried again (stale ones: see maybe_compiled).
        for name in _compile["failed"]:
            _compile["fns"].pop(name, None)
        _compile["failed"].clear()
    _compile["on"] = bool(enabled)
    return _compile["on"]


def forget_compiled() -> None:
    """Drop every compiled chunk function and every failure: the next call compiles anew (after
    swapping one of ``chunk_ops``' functions, as ``benchmarks/bench_backward.py`` does)."""
    _compile["fns"].clear()
    _compile["failed"].clear()


def scan_compile_enabled() -> bool:
    """Whether :func:`set_scan_compile` has switched compilation on."""
    return _compile["on"]


def compiled_functions() -> list[str]:
    """Names of the functions compiled so far in this process (failed ones included)."""
    return sorted(_compile["fns"])


def scan_compile_failures() -> list[str]:
    """Names of the compiled functions (chunk functions, the scan's edges) whose compilation
    failed (they run eager)."""
    return sorted(_compile["failed"])


def chunk_fn(name: str):
    """The chunk function ``name`` of ``chunk_ops``: eager, or compiled when the switch is on.

    Compiled, the in-place eager version is replaced by its ``*_functional`` twin where one
    exists. A compile error at a call warns once and falls back to the eager function until the
    switch is turned on again.
    """
    eager = getattr(cs, name)
    return maybe_compiled(name, eager, getattr(cs, name + "_functional", eager))


def maybe_compiled(name: str, eager, to_compile=None):
    """``eager`` while the switch is off; on, ``to_compile`` (default ``eager``) through
    ``torch.compile``, kept under ``name``, with the fallback of :func:`chunk_fn`."""
    if not _compile["on"]:
        return eager
    made = _compile["fns"].get(name)
    if made is not None and made is not eager and (
            getattr(made, "eager", None) is not eager or getattr(made, "source", None) is not to_compile
            or getattr(made, "compiler", None) is not torch.compile):
        del _compile["fns"][name]  # made from other functions or by another torch.compile (tests swap both)
    if name not in _compile["fns"]:
        # dynamic: one compilation serves most lengths and block widths (module doc: when not)
        compiled = torch.compile(to_compile or eager, dynamic=True)

        def guarded(*args):
            if _compile["fns"].get(name) is eager:  # an earlier failure: stay eager
                return eager(*args)
            try:
                return compiled(*args)
            except Exception as err:  # noqa: BLE001  (any compiler error: fall back, once)
                warnings.warn(f"torch.compile failed for {name} ({type(err).__name__}: {err}); "
                              "the scan falls back to eager", RuntimeWarning, stacklevel=2)
                _compile["fns"][name] = eager
                _compile["failed"].add(name)
                return eager(*args)

        guarded.compiler = torch.compile  # which compile made it (tests swap torch.compile)
        guarded.eager, guarded.source = eager, to_compile  # and from which functions
        _compile["fns"][name] = guarded
    return _compile["fns"][name]

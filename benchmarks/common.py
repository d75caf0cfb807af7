"""Timing, memory and bookkeeping shared by the benchmark scripts.

* ``measure(fn, device)`` runs ``fn`` after warm-up calls and returns the median of repeats
  (CUDA events on a GPU, ``time.perf_counter`` on a CPU) and the peak extra memory of one call:
  ``torch.cuda.max_memory_allocated`` minus what was allocated before, or on a CPU the peak
  resident set size (sampled every 0.2 ms) minus the size before, after returning freed
  memory to the system.
* ``machine_info()`` records what the numbers were measured on; ``write_results`` writes the
  JSON documented in ``benchmarks/LOG.md`` (results file schema).
An out-of-memory error is recorded as ``"oom"``, any other failure as ``"error: ..."``.
"""

from __future__ import annotations

import ctypes
import datetime
import json
import os
import platform
import statistics
import tempfile
import threading
import time

import torch


def quick() -> bool:
    """``MINIMAMBA_QUICK=1``: tiny sizes for the smoke test (never changes the code path)."""
    return os.environ.get("MINIMAMBA_QUICK", "0") == "1"


EPILOG = ("MINIMAMBA_QUICK=1 in the environment shrinks every size to a smoke test (a minute or two on a 2-core CPU, most of it compiling; "
          "its numbers mean nothing). Results files are merged: a re-measured row replaces its "
          "old one, other rows stay.")


def parse_device(parser, name: str) -> torch.device:
    """``--device`` checked: ``cpu`` or ``cuda`` (issue 7 gives shapes for those two), and
    CUDA only where PyTorch sees a GPU; anything else is a usage error from ``parser``."""
    if name not in ("cpu", "cuda"):
        parser.error(f"--device {name}: the benchmarks have issue 7's shapes for cpu and cuda only")
    if name == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: PyTorch sees no CUDA GPU here; use --device cpu")
    return torch.device(name)


def default_out(device: torch.device) -> str:
    """Where a script writes without ``--out``: ``results/<machine>-<date>.json`` next to this
    file, or at the smoke size (:func:`quick`) a file in the temporary directory, so that a
    smoke run never lands among the committed results."""
    name = f"{machine_name(device)}-{time.strftime('%Y-%m-%d')}.json"
    if quick():
        return os.path.join(tempfile.gettempdir(), f"minimamba-smoke-{name}")
    return os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", name)


def _trim() -> None:
    """Give freed heap memory back to the OS so the next RSS reading starts low (glibc only)."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except OSError:
        pass


def _rss() -> int:
    import psutil

    return psutil.Process().memory_info().rss


def _peak_cpu_bytes(fn) -> int:
    """Peak RSS during ``fn()`` minus RSS before it, by a sampling thread."""
    _trim()
    start = peak = _rss()
    done = threading.Event()

    def sample():
        nonlocal peak
        while not done.is_set():
            peak = max(peak, _rss())
            time.sleep(0.0002)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    try:
        fn()
    finally:
        done.set()
        thread.join()
    return max(0, max(peak, _rss()) - start)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


WARMUP_S = 0.5  # seconds of warm-up calls after the first (compiling) call, at least
CLOCK = {"name": "wall"}  # "process": CPU time of this process, for a CPU shared with other jobs


def measure(fn, device: torch.device, warmup: int = 2, repeats: int = 5,
            budget_s: float = 10.0, memory: bool = True) -> dict:
    """Median time in ms of ``fn()`` over repeats and its peak extra memory in MB.

    On a CPU, ``CLOCK["name"] = "process"`` times with ``time.process_time`` (the CPU time of
    all this process's threads) instead of the wall clock: on a machine shared with other jobs
    the wall clock measures the scheduler; with one thread, CPU time measures the code.

    Warm-up: the first call (its time, compilation included, is ``warmup_s``), then calls until
    ``warmup`` calls and ``WARMUP_S`` seconds have passed, or 50 calls. Stops repeating once ``budget_s`` of
    timed calls have passed (at least one). Returns
    ``{"ms": median, "ms_all": [...], "peak_mb": ...}`` or ``{"status": "oom" | "error: ..."}``.
    """
    try:
        first = time.perf_counter()
        fn()
        sync(device)
        first_call_s = time.perf_counter() - first  # compilation included, where there is one
        # Warm up for at least ``warmup`` calls and WARMUP_S seconds: on a CPU the first calls
        # of a new size also pay the allocator's page faults (tens of calls at small sizes).
        calls = 1
        warmup_s = 0.0 if quick() else WARMUP_S
        while calls < warmup or (time.perf_counter() - first - first_call_s < warmup_s
                                 and calls < 50):
            fn()
            sync(device)
            calls += 1
        times = []
        spent = 0.0
        for _ in range(repeats):
            if device.type == "cuda":
                start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                start.record()
                fn()
                end.record()
                end.synchronize()
                times.append(start.elapsed_time(end))
            else:
                clock = time.process_time if CLOCK["name"] == "process" else time.perf_counter
                t0 = clock()
                fn()
                times.append((clock() - t0) * 1e3)
            spent += times[-1] / 1e3
            if spent > budget_s:
                break
        out = {"ms": statistics.median(times), "ms_all": [round(t, 4) for t in times],
               "warmup_s": round(first_call_s, 3)}
        if memory:
            if device.type == "cuda":
                sync(device)
                torch.cuda.empty_cache()
                before = torch.cuda.memory_allocated(device)
                torch.cuda.reset_peak_memory_stats(device)
                fn()
                sync(device)
                out["peak_mb"] = (torch.cuda.max_memory_allocated(device) - before) / 2 ** 20
            else:
                out["peak_mb"] = _peak_cpu_bytes(fn) / 2 ** 20
        return out
    except torch.OutOfMemoryError:
        return {"status": "oom"}
    except Exception as err:  # noqa: BLE001  (CPU allocation failures, a method's own errors)
        if "out of memory" in str(err).lower() or "not enough memory" in str(err).lower():
            return {"status": "oom"}
        return {"status": f"error: {type(err).__name__}: {str(err)[:200]}"}
    finally:
        if device.type == "cuda":
            torch.cuda.empty_cache()


def _version(name: str) -> str | None:
    try:
        from importlib.metadata import version

        return version(name)
    except Exception:  # noqa: BLE001
        return None


def machine_info(device: torch.device) -> dict:
    """Machine, versions and date for the results file."""
    info = {
        "date": datetime.date.today().isoformat(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "clock": CLOCK["name"] if device.type == "cpu" else "cuda events",
        "load_average": os.getloadavg() if hasattr(os, "getloadavg") else None,
        "device": str(device),
        "versions": {k: _version(k) for k in ("torch", "triton", "transformers", "mambapy",
                                              "mamba_ssm", "minimamba-core")},
    }
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        info["gpu"] = props.name
        info["gpu_memory_gb"] = round(props.total_memory / 2 ** 30, 1)
        info["cuda"] = torch.version.cuda
        info["launch_us"] = round(launch_us(device), 2)
    return info


def launch_us(device: torch.device, n: int = 2000) -> float:
    """Host time per tiny kernel launch, in microseconds: ``n`` in-place adds on one element,
    back to back. The GPU finishes each at once, so this is the host's cost (Python, dispatch,
    driver), which bounds every launch-bound path (eager scans, decoding) and differs between
    machines lent as the same kind."""
    x = torch.zeros(1, device=device)
    for _ in range(100):  # warm-up
        x.add_(1)
    sync(device)
    t0 = time.perf_counter()
    for _ in range(n):
        x.add_(1)
    sync(device)
    return (time.perf_counter() - t0) / n * 1e6


def machine_name(device: torch.device) -> str:
    """Short name for the results file: ``h200``, ``cpu-2t`` ..."""
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device).lower()
        return "".join(c for c in name.replace("nvidia", "") if c.isalnum()) or "cuda"
    return f"cpu-{torch.get_num_threads()}t"


_ROW_KEYS = ("method", "lib", "variant", "L", "dtype", "mode", "allocator")  # what a row measured


def _row_key(row: dict) -> tuple:
    return tuple(row.get(k) for k in _ROW_KEYS)


def write_results(path: str, section: str, payload: dict) -> None:
    """Merge ``payload`` under ``section`` into the JSON file at ``path`` (created if missing).

    A later run adds its rows; a row that measures the same thing as an earlier one (same
    method or library or variant, length, dtype, mode, allocator) replaces it, unless it is only
    a skip (``status`` "skipped: ..." or "not measured: ..."). The file is written to a
    temporary name and renamed, so an interrupted write leaves the old file whole.
    """
    data = {}
    if os.path.exists(path):
        with open(path) as f:
            data = json.load(f)
    if "rows" in data.get(section, {}) and "rows" in payload:
        def skip(r):
            return str(r.get("status", "")).startswith(("skipped", "not measured"))

        new = {_row_key(r) for r in payload["rows"] if not skip(r)}
        kept = [r for r in data[section]["rows"] if _row_key(r) not in new]
        old = {_row_key(r) for r in kept}
        payload = dict(payload, rows=kept + [r for r in payload["rows"] if not (skip(r) and _row_key(r) in old)])
    data[section] = payload
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "w") as f:
        json.dump(data, f, indent=1)
    os.replace(tmp, path)

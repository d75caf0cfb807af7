"""Time and measure the selective scans side by side: ours and the peers, forward and backward.

    python -m benchmarks.bench_scan --device cpu --threads 2
    python -m benchmarks.bench_scan --device cuda --lengths 512 2048 8192 32768 65536

Shapes follow issue 7: CPU ``b=1, d_inner=768, d_state=16``; GPU ``b=4, d_inner=1536,
d_state=16``; always with ``z``, ``D`` and the delta bias. For each length every method runs
in turn (interleaved by length) on fresh random inputs (``randn``, never zeros), forward only
(under ``torch.no_grad``) and forward+backward (``y.backward(gy)`` with a random ``gy``).
Results are merged into ``--out`` under the section ``scan-<device>`` after every length (a
stopped run keeps what it measured); the schema is in
``benchmarks/LOG.md``. ``MINIMAMBA_QUICK=1`` shrinks everything to a smoke test.
"""

from __future__ import annotations

import argparse
import time

import torch

from minimamba_core import fast_scan

from . import approaches, common

SHAPES = {"cpu": dict(b=1, d=768, n=16), "cuda": dict(b=4, d=1536, n=16)}
DEFAULT_METHODS = {
    "cpu": ["ours_eager", "ours_eager_sequential_schedule", "ours_compiled", "ours_loop_reference",
            "blocked_autograd_before", "mambapy_pscan", "transformers_loop"],
    "cuda": ["ours_eager", "ours_compiled", "ours_compiled_cudagraph", "assoc_scan_compiled", "mambapy_pscan",
             "transformers_loop", "ours_loop_reference", "mamba_ssm_cuda"],
}
CUDA_ONLY = ("mamba_ssm_cuda", "assoc_scan_compiled", "ours_compiled_cudagraph")
# Longest length per (device, method, mode) worth waiting for; longer ones are skipped.
MAX_LEN = {
    ("cpu", "ours_loop_reference", "fwd"): 8192, ("cpu", "ours_loop_reference", "fwd+bwd"): 1024,
    ("cpu", "transformers_loop", "fwd"): 8192, ("cpu", "transformers_loop", "fwd+bwd"): 256,
    ("cpu", "blocked_autograd_before", "fwd"): 1024, ("cpu", "blocked_autograd_before", "fwd+bwd"): 1024,
    ("cpu", "mambapy_pscan", "fwd"): 8192, ("cpu", "mambapy_pscan", "fwd+bwd"): 8192,
    ("cpu", "ours_eager_parallel_schedule", "fwd"): 1024,
    ("cpu", "ours_eager_parallel_schedule", "fwd+bwd"): 1024,
    ("cuda", "ours_loop_reference", "fwd"): 2048, ("cuda", "ours_loop_reference", "fwd+bwd"): 512,
    ("cuda", "transformers_loop", "fwd"): 8192, ("cuda", "transformers_loop", "fwd+bwd"): 512,
    ("cuda", "mambapy_pscan", "fwd"): 65536, ("cuda", "mambapy_pscan", "fwd+bwd"): 65536,
}


def make_inputs(b, l, d, n, dtype, device, seed):
    """Random inputs in our layout; ``A, D, delta_bias`` float32 as the model keeps them."""
    g = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.randn(*s, generator=g)  # noqa: E731
    return dict(
        x=r(b, l, d).to(device, dtype), delta=(r(b, l, d) * 0.5 - 1.0).to(device, dtype),
        A=-torch.exp(r(d, n) * 0.5).to(device), B=r(b, l, n).to(device, dtype),
        C=r(b, l, n).to(device, dtype), D=r(d).to(device), z=r(b, l, d).to(device, dtype),
        delta_bias=(r(d) * 0.1).to(device))


def one_call(fn, inp, mode):
    """The call that is timed: ``fn(**inp)`` forward (no grad) or forward+backward."""
    if mode == "fwd":
        def run():
            with torch.no_grad():
                fn(**inp)
    else:
        leaves = {k: v.detach().requires_grad_() for k, v in inp.items()}
        gy = torch.randn_like(inp["x"])

        def run():
            for v in leaves.values():
                v.grad = None
            fn(**leaves).backward(gy)
    return run


def bench_one(fn, inp, mode, device, repeats, budget_s):
    """Time ``fn(**inp)`` forward (no grad) or forward+backward."""
    return common.measure(one_call(fn, inp, mode), device, warmup=2, repeats=repeats,
                          budget_s=budget_s)


def _settings(kind):
    """The scan's size constants in effect, for the results file."""
    s = fast_scan.settings
    return dict(chunk=dict(s.chunk), chunk_compiled=dict(s.chunk_compiled_cpu),
                chunk_compiled_gpu=dict(s.chunk_compiled_gpu),
                block_elements=s.block_elements(torch.device(kind)),
                min_block_channels=s.min_block_channels_cpu if kind == "cpu" else 1)


def _flush(out, device, shape, rows, written):
    """Merge the rows not yet written (``rows[written:]``) into ``out`` under ``scan-<device>``;
    returns the section with all ``rows``."""
    payload = dict(_settings(device.type), machine=common.machine_info(device), shape=shape)
    common.write_results(out, f"scan-{device.type}", dict(payload, rows=rows[written:]))
    return dict(payload, rows=rows)


def _unrunnable(methods, kind):
    """``{method: why}`` for the methods that cannot run here: a peer not installed, or a
    GPU-only method on a CPU."""
    why = {}
    for name in methods:
        package = approaches.METHODS[name][1]
        if package and not approaches.available(package):
            where = ("the official kernel's package, in no extra" if package == "mamba_ssm"
                     else "pip install -e '.[bench]'")
            why[name] = f"needs the package {package!r} ({where})"
        elif name in CUDA_ONLY and kind != "cuda":
            why[name] = "runs on a CUDA GPU only"
    return why


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0], epilog=common.EPILOG,
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu",
                   help="cpu or cuda: picks issue 7's shape, lengths and methods")
    p.add_argument("--threads", type=int, default=2, help="torch threads on a CPU")
    p.add_argument("--lengths", type=int, nargs="+",
                   help="sequence lengths (None: CPU 256 ... 16384, GPU 512 ... 65536)")
    p.add_argument("--methods", nargs="+", choices=sorted(approaches.METHODS), metavar="METHOD",
                   help="methods of approaches.py, any of: " + ", ".join(sorted(approaches.METHODS))
                   + " (None: DEFAULT_METHODS for the device)")
    p.add_argument("--dtypes", nargs="+", default=["float32", "bfloat16"], help="input dtypes")
    p.add_argument("--modes", nargs="+", default=["fwd", "fwd+bwd"], choices=["fwd", "fwd+bwd"],
                   help="forward only (no grad) and forward+backward")
    p.add_argument("--repeats", type=int, default=5, help="timed calls at most (see --budget-s)")
    p.add_argument("--budget-s", type=float, default=6.0, help="timed seconds per measurement")
    p.add_argument("--clock", choices=["wall", "process"], default="wall",
                   help="CPU timing: wall clock, or this process's CPU time (for a shared machine)")
    p.add_argument("--deadline", type=float, default=0.0,
                   help="epoch seconds after which remaining measurements are skipped")
    p.add_argument("--out", help="results JSON (default: results/<machine>-<date>.json; at the "
                   "smoke size, a file in the temporary directory)")
    args = p.parse_args(argv)
    device = common.parse_device(p, args.device)
    torch.set_num_threads(args.threads)
    common.CLOCK["name"] = args.clock
    kind = device.type
    shape = dict(SHAPES[kind])
    lengths = args.lengths or ([256, 1024, 4096, 8192, 16384] if kind == "cpu" else
                               [512, 2048, 8192, 32768, 65536])
    methods = args.methods or DEFAULT_METHODS[kind]
    if common.quick():
        shape, lengths, args.repeats = dict(b=1, d=8, n=4), [33], 2
    out = args.out or common.default_out(device)
    unrunnable = _unrunnable(methods, kind)
    for name, why in unrunnable.items():
        print(f"skipping {name}: {why}", flush=True)  # no column
    rows, written = [], 0
    for l in lengths:
        if rows:  # what is measured so far is on disk, should the process be stopped
            _flush(out, device, shape, rows, written)
            written = len(rows)
        for dtype_name in args.dtypes:
            dtype = getattr(torch, dtype_name)
            for mode in args.modes:
                for i, name in enumerate(methods):
                    factory, _, has_backward = approaches.METHODS[name]
                    row = dict(method=name, L=l, dtype=dtype_name, mode=mode)
                    if name in unrunnable:
                        continue
                    limit = MAX_LEN.get((kind, name, mode))
                    if (mode == "fwd+bwd" and not has_backward) or (limit and l > limit):
                        continue
                    if args.deadline and time.time() > args.deadline:
                        rows.append(dict(row, status="skipped: out of time"))
                        continue
                    inp = make_inputs(shape["b"], l, shape["d"], shape["n"], dtype, device, seed=l + i)
                    try:
                        fn = factory()
                    except Exception as err:  # noqa: BLE001
                        row.update(status=f"error: {type(err).__name__}: {str(err)[:200]}")
                        rows.append(row)
                        continue
                    row.update(bench_one(fn, inp, mode, device, args.repeats, args.budget_s))
                    if "compiled" in name:
                        row["compile_failures"] = fast_scan.scan_compile_failures()
                    if getattr(fn, "capture_peak_mb", None) is not None and "peak_mb" in row:
                        # replays allocate nothing: the graph's memory is the capture's peak
                        row.update(replay_peak_mb=row["peak_mb"], peak_mb=fn.capture_peak_mb,
                                   held_mb=fn.held_mb)
                    fast_scan.set_scan_compile(False)
                    rows.append(row)
                    shown = f"{row['ms']:.3f} ms, {row.get('peak_mb', 0):.0f} MB" if "ms" in row else row["status"]
                    print(f"{kind} L={l:6d} {dtype_name:8s} {mode:7s} {name:32s} {shown}", flush=True)
                    del inp
    payload = _flush(out, device, shape, rows, written)
    print(f"wrote {out}")
    return payload


if __name__ == "__main__":
    main()

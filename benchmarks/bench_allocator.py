"""The eager CPU scan in a fresh process: how much of its time is the allocator's page faults.

    python -m benchmarks.bench_allocator --out benchmarks/results/cpu-<date>.json

glibc's ``malloc`` serves a large block with ``mmap`` (fresh pages, one fault each at first
touch) until a block that large has been freed: its mmap threshold starts at 128 KiB and rises
to the size of the largest mmapped block freed so far (at most 32 MiB), and the heap is trimmed
back to the OS when more than twice that is free at its top. The eager parallel scan allocates
and frees temporaries of up to 8 MiB per ``d_inner`` block (``fast_scan.settings.block_elements_cpu``),
so in a process that has never freed a larger block, every call faults its temporaries in again.
The package therefore primes the allocator itself at its first CPU scan
(``fast_scan.prime_allocator``).

Each row runs in its own fresh Python process: one method, one length, one mode, and either a
*fresh* allocator (the package's priming switched off) or a *primed* one (a tensor of
``fast_scan.settings.prime_elements`` float32, 28 MiB, allocated and freed first, as the package does,
and as any larger earlier computation would; files before 2026-11-30's second allocator run
used 32 MiB - 4 KiB, their ``prime_bytes``). It records the median time (``common.measure``) and the
minor page faults per call (``resource.getrusage``). Rows go under ``allocator-cpu``.
``MINIMAMBA_QUICK=1`` shrinks the sizes to a smoke test.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys

import torch

from minimamba_core import fast_scan

from . import approaches, common
from .bench_scan import SHAPES, make_inputs, one_call


def _child(method: str, L: int, mode: str, primed: bool, threads: int) -> dict:
    """One measurement in this (fresh) process."""
    torch.set_num_threads(threads)
    if primed:
        fast_scan.prime_allocator()  # what the package's first CPU scan does
    fast_scan.settings.prime_allocator = False  # and no priming later: this row decides
    shape = dict(b=1, d=8, n=4) if common.quick() else SHAPES["cpu"]
    inp = make_inputs(shape["b"], L, shape["d"], shape["n"], torch.float32, torch.device("cpu"), seed=L)
    call = one_call(approaches.METHODS[method][0](), inp, mode)
    row = common.measure(call, torch.device("cpu"), warmup=2, repeats=5, budget_s=2)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    calls = 5
    for _ in range(calls):
        call()
    row["minor_faults_per_call"] = (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / calls
    return dict(row, method=method, L=L, mode=mode, allocator="primed" if primed else "fresh")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0], epilog=common.EPILOG,
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--threads", type=int, default=2, help="torch threads")
    p.add_argument("--lengths", type=int, nargs="+", default=[1024, 4096], help="sequence lengths")
    p.add_argument("--methods", nargs="+", default=["ours_eager", "ours_loop_reference"],
                   help="methods of approaches.py, each row in a fresh process")
    p.add_argument("--modes", nargs="+", default=["fwd", "fwd+bwd"], choices=["fwd", "fwd+bwd"],
                   help="forward only (no grad) and forward+backward")
    p.add_argument("--out", required=True, help="results JSON; rows go under allocator-cpu")
    p.add_argument("--child", nargs=4, metavar=("METHOD", "L", "MODE", "PRIMED"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        method, L, mode, primed = args.child
        print(json.dumps(_child(method, int(L), mode, primed == "1", args.threads)))
        return None
    lengths = [33] if common.quick() else args.lengths
    rows = []
    for L in lengths:
        for mode in args.modes:
            for method in args.methods:
                if mode == "fwd+bwd" and method == "ours_loop_reference" and L > 1024:
                    continue  # the loop's backward through autograd takes seconds there
                for primed in ("0", "1"):
                    done = subprocess.run(
                        [sys.executable, "-m", "benchmarks.bench_allocator", "--threads", str(args.threads),
                         "--out", args.out, "--child", method, str(L), mode, primed],
                        capture_output=True, text=True, check=True)
                    row = json.loads(done.stdout.strip().splitlines()[-1])
                    rows.append(row)
                    print(f"L={L:5d} {mode:7s} {method:22s} {row['allocator']:6s} "
                          f"{row.get('ms', float('nan')):8.1f} ms  {row['minor_faults_per_call']:8.0f} faults/call",
                          flush=True)
    common.write_results(args.out, "allocator-cpu", dict(machine=common.machine_info(torch.device("cpu")),
                                                          prime_bytes=fast_scan.settings.prime_elements * 4, rows=rows))
    print(f"wrote {args.out}")
    return rows


if __name__ == "__main__":
    main()

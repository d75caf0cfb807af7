"""The compiled scan's backward in variants, timed on the scan of issue 7 (one process each).

    python -m benchmarks.bench_backward --device cuda --variant in_loop --lock /tmp/gpu.lock
    python -m benchmarks.bench_backward --device cuda --variant stacked --lock /tmp/gpu.lock

Variants of the function that ``torch.compile`` runs for one chunk's backward:

* ``in_loop`` -- the package's ``fast_scan.chunk_ops.chunk_backward_functional``: every reduction (over
  ``N`` for ``dx`` and ``ddelta``, over ``d_inner`` for ``dB`` and ``dC``) taken inside the
  reverse loop, so no ``(m, T, d_inner, N)`` tensor is built;
* ``stacked`` -- the earlier version (``approaches.chunk_backward_stacked``): the ``T`` states
  and adjoints stacked into ``(m, T, d_inner, N)`` tensors, then reduced;
* ``stacked_t16`` -- the same with chunks of 16 steps;
* ``in_loop_t16``, ``in_loop_t32`` -- ``in_loop`` with chunks of 16 or 32 steps (``in_loop``
  and ``stacked`` take the package's compiled chunks: 16 on a GPU, 32 on a CPU);
* ``in_loop_one_block`` -- ``in_loop`` with the whole of ``d_inner`` in one block (on a GPU;
  the CPU's blocks are set by ``fast_scan.settings.block_elements_cpu``), saving launches and the
  per-block sums of ``dB``, ``dC`` at the cost of larger temporaries;
* ``in_loop_t16_one_block`` -- both of the last two.

Each process compiles its variant (the first forward+backward call: ``compile_fb_s``; a
non-empty ``compile_failures`` means the row timed the eager fallback), checks its gradients
against the eager scan (``max_rel_grad_err``), then times forward+backward and forward alone
at the issue's shape for the device (GPU ``b=4, d_inner=1536``, CPU ``b=1, d_inner=768``; ``N=16``). Several processes may compile side by
side: ``--lock`` makes everything they run on the device at full size take turns. Rows are
merged into ``--out`` under ``backward-<device>``; the package is restored afterwards.
``MINIMAMBA_QUICK=1`` shrinks the sizes to a smoke test.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import time

import torch

from minimamba_core import fast_scan

from . import approaches, common
from .bench_scan import SHAPES, make_inputs

VARIANTS = {  # name -> (the compiled chunk backward, steps per chunk, d_inner block elements;
    #                 None: the package's)
    "in_loop": (fast_scan.chunk_ops.chunk_backward_functional, None, None),
    "in_loop_t16": (fast_scan.chunk_ops.chunk_backward_functional, 16, None),
    "in_loop_t32": (fast_scan.chunk_ops.chunk_backward_functional, 32, None),
    "in_loop_one_block": (fast_scan.chunk_ops.chunk_backward_functional, None, 2 ** 40),
    "in_loop_t16_one_block": (fast_scan.chunk_ops.chunk_backward_functional, 16, 2 ** 40),
    "stacked": (approaches.chunk_backward_stacked, None, None),
    "stacked_t16": (approaches.chunk_backward_stacked, 16, None),
}
GRADS = ("x", "delta", "A", "B", "C")


@contextlib.contextmanager
def _turn(path):
    """Hold an exclusive lock on ``path`` (no lock when ``None``)."""
    if not path:
        yield
        return
    with open(path, "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0], epilog=common.EPILOG,
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu",
                   help="cpu or cuda (issue 7's shape for each)")
    p.add_argument("--variant", choices=sorted(VARIANTS), default="in_loop",
                   help="the compiled backward to time (the module doc describes each)")
    p.add_argument("--lengths", type=int, nargs="+", default=[8192],
                   help="on a CPU, 1024 is a better start (compiling takes a few minutes)")
    p.add_argument("--lock", help="a file whose lock the timed parts of several processes share")
    p.add_argument("--out", required=True, help="results JSON; rows go under backward-<device>")
    args = p.parse_args(argv)
    device = common.parse_device(p, args.device)
    backward, T, block = VARIANTS[args.variant]
    table = "chunk_compiled_cpu" if device.type == "cpu" else "chunk_compiled_gpu"
    T = T or getattr(fast_scan.settings, table)["summarized"]
    block = block or fast_scan.settings.block_elements_gpu
    shape = dict(SHAPES[device.type])  # issue 7's shapes: GPU b=4, d_inner=1536; CPU b=1, 768
    if common.quick():
        shape, args.lengths, T = dict(b=1, d=8, n=4), [33], 2
    saved = (fast_scan.chunk_ops.chunk_backward_functional, fast_scan.scan_compile_enabled())
    fast_scan.chunk_ops.chunk_backward_functional = backward  # what the compiled scan's backward runs
    fast_scan.forget_compiled()  # compile the variant, not a function compiled earlier
    try:
        # on a GPU block_elements_gpu sets the backward's d_inner blocks
        with fast_scan.using(**{table: {"summarized": T}}, block_elements_gpu=block):
            rows = [_one_length(args, device, shape, L, T) for L in args.lengths]
    finally:  # the package as it was
        fast_scan.chunk_ops.chunk_backward_functional = saved[0]
        fast_scan.forget_compiled()
        fast_scan.set_scan_compile(saved[1])
    return rows


def _one_length(args, device, shape, L, T):
    """Compile, check and time one length; the row is merged into ``args.out`` at once."""
    compiled, eager = approaches.METHODS["ours_compiled"][0](), approaches.METHODS["ours_eager"][0]()
    inp = make_inputs(shape["b"], L, shape["d"], shape["n"], torch.float32, device, seed=L)
    leaves = {k: v.detach().clone().requires_grad_() for k, v in inp.items()}
    gy = torch.randn_like(inp["x"])

    def fwd_bwd(fn=compiled):
        for v in leaves.values():
            v.grad = None
        fn(**leaves).backward(gy)

    def fwd():
        with torch.no_grad():
            compiled(**inp)

    row = dict(variant=args.variant, L=L, chunk=T, dtype="float32",
               block_elements=fast_scan.settings.block_elements(device))  # the d_inner blocks in effect
    t0 = time.perf_counter()
    fwd_bwd()  # compiles; other processes may be timing meanwhile (it runs little on the GPU)
    common.sync(device)
    row["compile_fb_s"] = round(time.perf_counter() - t0, 1)
    row["compile_failures"] = fast_scan.scan_compile_failures()  # non-empty: the row timed eager
    got = {k: leaves[k].grad.clone() for k in GRADS}
    with _turn(args.lock):  # everything that runs on the device at full size takes turns
        fwd_bwd(eager)
        row["max_rel_grad_err"] = max(((got[k] - leaves[k].grad).norm() / leaves[k].grad.norm()).item()
                                      for k in GRADS)
        t0 = time.perf_counter()
        fwd()
        common.sync(device)
        row["compile_fw_s"] = round(time.perf_counter() - t0, 1)
        row["fwd+bwd"] = common.measure(fwd_bwd, device, repeats=5, budget_s=2)
        row["fwd"] = common.measure(fwd, device, repeats=5, budget_s=2)
        common.write_results(args.out, f"backward-{device.type}",
                             dict(machine=common.machine_info(device), shape=shape, rows=[row]))
    print({k: v for k, v in row.items() if k not in ("fwd+bwd", "fwd")},
          {m: round(row[m].get("ms", 0), 3) for m in ("fwd+bwd", "fwd")}, flush=True)
    return row


if __name__ == "__main__":
    main()

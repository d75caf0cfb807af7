"""Time Mamba-2's scan (SSD) side by side: our chunked SSD and the peers, forward and backward.

    python -m benchmarks.bench_ssd --device cpu --threads 2             # b=1, l = 512 ... 2048
    python -m benchmarks.bench_ssd --device cuda --lengths 2048 8192    # b=4
    MAMBA_SSM_SRC=/path/to/mamba/checkout python -m benchmarks.bench_ssd --device cuda   # + the kernel

The head shape is the 130m-sized Mamba-2's: ``h = 24`` heads of ``p = 64`` channels,
``n = 128``, one group, chunk 256; ``b = 4`` on a GPU, ``b = 1`` on a CPU; float32. Every method
computes the same function of the same inputs (``dt`` before its bias and softplus, ``D`` per
head): ours is :func:`minimamba_core.ssd_chunked`; transformers' is ``mamba2_chunk_scan`` of
``transformers==5.24.0`` (``models/mamba2/modeling_mamba2.py``, its pure-PyTorch path); the
official Triton kernel is ``mamba_chunk_scan_combined`` (``mamba_ssm/ops/triton/ssd_combined.py``),
a column only where its Python sources are given (``MAMBA_SSM_SRC``: a checkout of
state-spaces/mamba, read in place and never committed; the package's ``__init__`` is bypassed,
since it imports CUDA extensions). Each method's error against :func:`minimamba_core.ssd_sequential`
in float64 (on one smaller input) is recorded beside its times. Results go to ``--out`` under the
section ``ssd-<device>``; ``MINIMAMBA_QUICK=1`` shrinks everything to a smoke test.
"""

from __future__ import annotations

import argparse
import importlib.util
import math
import os
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

import minimamba_core as mm

from . import common

SHAPES = {"cpu": dict(b=1, h=24, p=64, n=128, g=1, chunk=256), "cuda": dict(b=4, h=24, p=64, n=128, g=1, chunk=256)}
LENGTHS = {"cpu": [512, 1024, 2048], "cuda": [2048, 8192]}


def _transformers():
    from transformers.models.mamba2.modeling_mamba2 import mamba2_chunk_scan
    return lambda x, dt, A, B, C, D, dt_bias, chunk: mamba2_chunk_scan(
        x, dt, A, B, C, chunk, D=D, dt_bias=dt_bias, dt_softplus=True)


def _import_from_sources(module: str, name: str):
    """``name`` from ``module`` of the ``mamba_ssm`` sources in ``$MAMBA_SSM_SRC``, without the
    package's ``__init__`` (it imports CUDA extensions). Empty parent packages are registered for
    the import and removed after it: left in ``sys.modules``, they made transformers take
    ``mamba_ssm`` for installed, and its "pure-PyTorch" Mamba-2 path ran the Triton kernel."""
    src = os.environ.get("MAMBA_SSM_SRC")
    if not src:
        raise RuntimeError("set MAMBA_SSM_SRC to a checkout of state-spaces/mamba")
    root = Path(src) / "mamba_ssm"
    for pkg in ("mamba_ssm", "mamba_ssm.ops", "mamba_ssm.ops.triton", "mamba_ssm.utils", "mamba_ssm.modules"):
        package = importlib.util.module_from_spec(importlib.machinery.ModuleSpec(pkg, None, is_package=True))
        package.__path__ = [str(root.joinpath(*pkg.split(".")[1:]))]
        sys.modules.setdefault(pkg, package)
    try:
        return getattr(importlib.import_module(module), name)
    finally:
        for key in [k for k in sys.modules if k == "mamba_ssm" or k.startswith("mamba_ssm.")]:
            del sys.modules[key]


def _official_kernel():
    """``mamba_chunk_scan_combined`` (``mamba_ssm/ops/triton/ssd_combined.py``) from ``$MAMBA_SSM_SRC``."""
    kernel = _import_from_sources("mamba_ssm.ops.triton.ssd_combined", "mamba_chunk_scan_combined")
    return lambda x, dt, A, B, C, D, dt_bias, chunk: kernel(
        x, dt, A, B, C, chunk, D=D, dt_bias=dt_bias, dt_softplus=True)


def source_version() -> str | None:
    """What ``$MAMBA_SSM_SRC`` holds: the first line of its ``VERSION`` file (repository, commit,
    date; written by whoever copied the sources), else the path alone."""
    src = os.environ.get("MAMBA_SSM_SRC")
    if not src:
        return None
    version = Path(src) / "VERSION"
    return version.read_text().splitlines()[0] if version.is_file() else src


def _official_listing():
    """The paper's Listing 1, ``ssd_minimal_discrete`` (``mamba_ssm/modules/ssd_minimal.py`` from
    ``$MAMBA_SSM_SRC``), wrapped to the same function: ``dt`` biased and softplused, ``X = dt x``,
    ``A dt`` per step, ``B, C`` repeated over the heads of their group, ``+ D x``."""
    ssd_minimal_discrete = _import_from_sources("mamba_ssm.modules.ssd_minimal", "ssd_minimal_discrete")

    def run(x, dt, A, B, C, D, dt_bias, chunk):
        dt = F.softplus(dt + dt_bias)  # (b, l, h)
        r = x.shape[2] // B.shape[2]
        y, _ = ssd_minimal_discrete(x * dt[..., None], A * dt, B.repeat_interleave(r, 2),
                                    C.repeat_interleave(r, 2), chunk)
        return y + D[:, None] * x
    return run


def _ours(compiled=False, sliced=True):
    fn = lambda x, dt, A, B, C, D, dt_bias, chunk: mm.ssd_chunked(  # noqa: E731
        x, dt, A, B, C, chunk, D=D, dt_bias=dt_bias, dt_softplus=True)
    if not sliced:  # the decay matrices of all heads at once, kept for the backward
        ssd_module = sys.modules["minimamba_core.ssd"]

        def whole(*args):
            before, ssd_module.DECAY_BLOCK_BYTES = ssd_module.DECAY_BLOCK_BYTES, math.inf
            try:
                return fn(*args)
            finally:
                ssd_module.DECAY_BLOCK_BYTES = before
        return whole
    if not compiled:
        return fn
    compiled_fn = torch.compile(fn, dynamic=False)

    def run(*args):
        try:
            return compiled_fn(*args)
        except Exception:  # noqa: BLE001 - a compiler failure falls back to eager, and is said
            run.fell_back = True
            return fn(*args)
    run.fell_back = False
    return run


METHODS = {"ours_eager": lambda: _ours(), "ours_compiled": lambda: _ours(compiled=True),
           "ours_eager_unsliced": lambda: _ours(sliced=False),
           "transformers_torch": _transformers, "mamba_ssm_triton": _official_kernel,
           "official_listing": _official_listing}
DEFAULT_METHODS = {"cpu": ["ours_eager", "transformers_torch"],
                   "cuda": ["ours_eager", "ours_compiled", "transformers_torch", "mamba_ssm_triton", "official_listing"]}


def make_inputs(b, l, h, p, n, g, dtype, device, seed):
    """Random SSD inputs (``dt`` before bias and softplus, ``A < 0``), float32 ``A, D, dt_bias``."""
    gen = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.randn(*s, generator=gen)  # noqa: E731
    return dict(x=r(b, l, h, p).to(device, dtype), dt=(r(b, l, h) * 0.5 - 1.0).to(device, dtype),
                A=-torch.exp(r(h) * 0.5).to(device), B=r(b, l, g, n).to(device, dtype),
                C=r(b, l, g, n).to(device, dtype), D=r(h).to(device), dt_bias=(r(h) * 0.1).to(device))


def error_vs_float64(fn, shape, device, l=320) -> float:
    """Max relative error of ``fn`` in float32 against ``ssd_sequential`` in float64, one input."""
    inp = make_inputs(1, l, shape["h"], 8, 16, shape["g"], torch.float32, device, seed=7)
    ref = mm.ssd_sequential(*(inp[k].double().cpu() for k in ("x", "dt", "A", "B", "C")), D=inp["D"].double().cpu(),
                            dt_bias=inp["dt_bias"].double().cpu(), dt_softplus=True)
    with torch.no_grad():
        y = fn(inp["x"], inp["dt"], inp["A"], inp["B"], inp["C"], inp["D"], inp["dt_bias"], 64)
    return float((y.double().cpu() - ref).abs().max() / ref.abs().max())


def one_call(fn, inp, chunk, mode):
    args = [inp[k] for k in ("x", "dt", "A", "B", "C", "D", "dt_bias")]
    if mode == "fwd":
        def run():
            with torch.no_grad():
                fn(*args, chunk)
        return run
    leaves = [a.detach().requires_grad_() for a in args]
    gy = torch.randn_like(args[0])

    def run():
        for v in leaves:
            v.grad = None
        fn(*leaves, chunk).backward(gy)
    return run


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0], epilog=common.EPILOG,
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--threads", type=int, default=2, help="torch threads on a CPU")
    p.add_argument("--lengths", type=int, nargs="+", help="sequence lengths (None: CPU 512 ... 2048, GPU 2048, 8192)")
    p.add_argument("--methods", nargs="+", choices=sorted(METHODS), help="(None: DEFAULT_METHODS for the device)")
    p.add_argument("--modes", nargs="+", default=["fwd", "fwd+bwd"], choices=["fwd", "fwd+bwd"])
    p.add_argument("--chunks", type=int, nargs="+", help="chunk lengths to time (None: the shape's, 256)")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--budget-s", type=float, default=6.0, help="timed seconds per measurement")
    p.add_argument("--tf32", choices=["off", "on", "both"], default="off",
                   help="TF32 matrix products for the PyTorch methods (rows say which: variant "
                   "'chunkQ-tf32'); the Triton kernel uses TF32 whatever this says")
    p.add_argument("--out", help="results JSON (default: results/<machine>-<date>.json; at the smoke size, "
                   "a file in the temporary directory)")
    args = p.parse_args(argv)
    device = common.parse_device(p, args.device)
    torch.set_num_threads(args.threads)
    kind = device.type
    shape, lengths = dict(SHAPES[kind]), args.lengths or LENGTHS[kind]
    methods = args.methods or DEFAULT_METHODS[kind]
    if common.quick():
        shape, lengths, args.repeats = dict(b=1, h=4, p=8, n=16, g=1, chunk=16), [40], 2
        methods = [m for m in methods if m != "ours_compiled"]
    out = args.out or common.default_out(device)
    tf32_settings = {"off": [False], "on": [True], "both": [False, True]}[args.tf32]
    rows, errors = [], {}
    for name in methods:
        for tf32 in tf32_settings:
            if tf32 and name == "mamba_ssm_triton":
                continue  # TF32 whatever the setting: its one row is measured with TF32 off for the rest
            torch.backends.cuda.matmul.allow_tf32 = tf32
            try:
                fn = METHODS[name]()
                errors[name, tf32] = error_vs_float64(fn, shape, device)
            except Exception as err:  # noqa: BLE001 - a peer that cannot run here is a status row
                rows.append(dict(method=name, status=f"unavailable: {type(err).__name__}: {str(err)[:160]}"))
                print(f"skipping {name}: {rows[-1]['status']}", flush=True)
    chunks = [shape["chunk"]] if common.quick() or not args.chunks else args.chunks

    machine = common.machine_info(device)

    def save(rows):
        payload = dict(shape=shape, tf32=args.tf32, machine=machine, rows=list(rows),
                       date=time.strftime("%Y-%m-%d"), mamba_ssm_src=source_version())
        common.write_results(out, f"ssd-{kind}", payload)
        return payload

    for l, chunk in ((l, q) for l in lengths for q in chunks):
        for mode in args.modes:
            for i, (name, tf32) in enumerate(k for k in ((m, t) for m in methods for t in tf32_settings)
                                             if k in errors):
                torch.backends.cuda.matmul.allow_tf32 = tf32
                inp = make_inputs(shape["b"], l, shape["h"], shape["p"], shape["n"], shape["g"], torch.float32,
                                  device, seed=l + i)
                fn = METHODS[name]()
                row = dict(method=name, L=l, dtype="float32", mode=mode,
                           variant=f"chunk{chunk}" + ("-tf32" if tf32 else ""),
                           rel_err_vs_float64=errors[name, tf32])
                if name == "mamba_ssm_triton":
                    row["status_note"] = "the kernel's matrix products run in TF32"
                row.update(common.measure(one_call(fn, inp, chunk, mode), device, repeats=args.repeats,
                                          budget_s=args.budget_s))
                if getattr(fn, "fell_back", False):
                    row["status_note"] = "torch.compile failed: eager fallback"
                rows.append(row)
                save(rows)  # after every row: a run stopped early keeps what it measured
                shown = f"{row['ms']:.2f} ms, {row.get('peak_mb', 0):.0f} MB" if "ms" in row else row["status"]
                print(f"{kind} L={l:6d} Q={chunk:4d} {mode:7s} {name:20s} tf32={tf32!s:5} {shown}", flush=True)
                del inp
    torch.backends.cuda.matmul.allow_tf32 = False
    payload = save(rows)
    print(f"wrote {out}")
    return payload


if __name__ == "__main__":
    main()

"""The scans we time: ours, earlier approaches kept for comparison, and the peers' (adapters).

Every entry of :data:`METHODS` maps the same inputs -- ``x, delta, z (b, l, d)``, ``A (d, n)``,
``B, C (b, l, n)``, ``D, delta_bias (d,)``, our layout, ``delta`` before bias and softplus --
to ``y (b, l, d)``, so that each is timed on identical work: bias, softplus, scan, ``D`` skip
and ``silu(z)`` gate. A peer without some of these steps gets them added around its scan with
plain PyTorch (elementwise over ``(b, l, d)``, cheap next to the scan).

Peers (pinned in the ``bench`` extra): mamba.py's Blelloch ``pscan`` (``mambapy==1.2.0``,
``mambapy/pscan.py``) and transformers' pure-torch loop (``mamba_selective_scan`` of
``transformers==5.24.0``, ``models/mamba/modeling_mamba.py``, called with its kernels absent).
``mamba_ssm``'s CUDA ``selective_scan_fn`` is a column only where it is already importable.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

import minimamba_core as mm
from minimamba_core import fast_scan


def _ours(schedule=None, compiled=False):
    """The package's parallel scan; ``schedule`` forces ``"chained"`` or ``"summarized"`` (the
    methods keep their recorded names: ``*_sequential_schedule`` is the chained schedule,
    ``*_parallel_schedule`` the summarized one)."""
    def run(x, delta, A, B, C, D, z, delta_bias):
        fast_scan.set_scan_compile(compiled)
        with fast_scan.using(schedule=schedule):
            return mm.selective_scan_parallel(x, delta, A, B, C, D=D, z=z, delta_bias=delta_bias,
                                              delta_softplus=True)
    return run


def _ours_compiled_eager_edges(x, delta, A, B, C, D, z, delta_bias):
    """Ours with only the scan compiled: the bias, softplus, ``D`` skip and gate around it eager
    (one pass over ``(b, l, d)`` per operation), as they were before device run 5."""
    fast_scan.set_scan_compile(True)
    out_dtype, f32 = x.dtype, torch.float32
    delta = F.softplus(delta.to(f32) + delta_bias.to(f32))  # (b, l, d), eager
    x, A, B, C = (t.to(f32) for t in (x, A, B, C))
    y, _ = fast_scan.chunked_scan(x, delta, A, B, C)  # (b, l, d), compiled chunk functions
    return ((y + x * D.to(f32)) * F.silu(z.to(f32))).to(out_dtype)  # eager D skip and gate


_ARGS = ("x", "delta", "A", "B", "C", "D", "z", "delta_bias")


def _ours_compiled_cudagraph():
    """Ours compiled, then captured as CUDA graphs, one per shape, dtype and grad mode.

    A compiled forward+backward launches hundreds of small kernels, each costing the host a few
    microseconds; a CUDA graph replays all of them from one launch. The capture is PyTorch's:
    ``torch.cuda.graph`` for a forward without grad, ``torch.cuda.make_graphed_callables``
    (forward and backward graphs) with grad. A graph runs on fixed input buffers: here the
    tensors of the call that captured it (as a training loop would refill its own), so a call
    with other tensors first copies them in; its outputs and the gradients it hands to autograd
    live in the graph's memory and are overwritten by the next replay. ``run.capture_peak_mb``
    is the peak extra memory of the last capture (warm-up calls included), ``run.held_mb`` what
    the graphs keep allocated afterwards; replays allocate nothing more.
    """
    scan = _ours(compiled=True)
    graphs = {}

    def capture(named):
        """Graphs of ``scan`` on the tensors ``named`` (name -> tensor; ``None`` ones left out)."""
        args = tuple(named.values())

        def positional(*tensors):  # the graph API passes tensors by position
            return scan(**dict(zip(named, tensors)))

        torch.cuda.synchronize()
        before = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        if torch.is_grad_enabled() and any(a.requires_grad for a in args):
            graphed = torch.cuda.make_graphed_callables(positional, args)
        else:
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                for _ in range(3):  # warm-up off the capture: compiles, fills the allocator
                    positional(*args)
            torch.cuda.current_stream().wait_stream(side)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                out = positional(*args)

            def graphed(*new):
                for static, a in zip(args, new):
                    if static.data_ptr() != a.data_ptr():
                        static.copy_(a)
                graph.replay()
                return out
        torch.cuda.synchronize()
        run.capture_peak_mb = (torch.cuda.max_memory_allocated() - before) / 2 ** 20
        run.held_mb = (torch.cuda.memory_allocated() - before) / 2 ** 20
        return graphed

    def run(x, delta, A, B, C, D, z, delta_bias):
        named = {k: v for k, v in zip(_ARGS, (x, delta, A, B, C, D, z, delta_bias)) if v is not None}
        if x.device.type != "cuda":
            raise ValueError(f"ours_compiled_cudagraph captures CUDA graphs; got tensors on {x.device}")
        key = tuple((k, a.shape, a.dtype, a.requires_grad) for k, a in named.items()) + (torch.is_grad_enabled(),)
        if key not in graphs:
            graphs.clear()  # one shape at a time: a graph holds its memory pool
            graphs[key] = capture(named)
        return graphs[key](*named.values())

    return run


def sequential(x, delta, A, B, C, D, z, delta_bias):
    """Our reference loop (``selective_scan_sequential``)."""
    return mm.selective_scan_sequential(x, delta, A, B, C, D=D, z=z, delta_bias=delta_bias,
                                        delta_softplus=True)


def _blocked_scan(a, u, chunk=16):
    """The scan this issue replaced: chunks of 16 scanned by a loop, summaries recursively,
    all of ``(b, l, d, n)`` kept for autograd (``scan.py`` at commit 4e705fd)."""
    b, l = a.shape[:2]
    rest = a.shape[2:]

    def within(a, u):
        a_cum, h = a[:, 0], u[:, 0]
        a_cums, hs = [a_cum], [h]
        for t in range(1, a.shape[1]):
            h = a[:, t] * h + u[:, t]
            a_cum = a_cum * a[:, t]
            hs.append(h)
            a_cums.append(a_cum)
        return torch.stack(a_cums, 1), torch.stack(hs, 1)

    if l <= chunk:
        return within(a, u)
    nc = -(-l // chunk)
    pad = nc * chunk - l
    if pad:
        a = torch.cat([a, a.new_ones(b, pad, *rest)], 1)
        u = torch.cat([u, u.new_zeros(b, pad, *rest)], 1)
    a_loc, h_loc = within(a.reshape(b * nc, chunk, *rest), u.reshape(b * nc, chunk, *rest))
    a_loc, h_loc = a_loc.reshape(b, nc, chunk, *rest), h_loc.reshape(b, nc, chunk, *rest)
    a_end, h_end = _blocked_scan(a_loc[:, :, -1], h_loc[:, :, -1], chunk)
    h_in = torch.cat([torch.zeros_like(h_end[:, :1]), h_end[:, :-1]], 1)
    a_in = torch.cat([torch.ones_like(a_end[:, :1]), a_end[:, :-1]], 1)
    h = (h_loc + a_loc * h_in[:, :, None]).reshape(b, nc * chunk, *rest)[:, :l]
    a_cum = (a_loc * a_in[:, :, None]).reshape(b, nc * chunk, *rest)[:, :l]
    return a_cum, h


def _materialized(scan_fn):
    """``A_bar, B_bar x (b, l, d, n)`` formed whole, scanned by ``scan_fn(a, u) -> h``."""
    def run(x, delta, A, B, C, D, z, delta_bias):
        dt = F.softplus(delta.float() + delta_bias)  # (b, l, d)
        a = torch.exp(dt[..., None] * A)  # (b, l, d, n)
        u = (dt * x.float())[..., None] * B.float()[:, :, None, :]  # (b, l, d, n)
        h = scan_fn(a, u)  # (b, l, d, n)
        y = (h @ C.float()[..., None])[..., 0] + D * x.float()
        return (y * F.silu(z.float())).to(x.dtype)
    return run


def _mambapy_pscan(a, u):
    from mambapy.pscan import pscan

    return pscan(a, u)


def _assoc_scan_compiled():
    """torch's ``associative_scan`` higher-order op under ``torch.compile`` (forward only)."""
    from torch._higher_order_ops.associative_scan import associative_scan

    def combine(left, right):
        return left[0] * right[0], right[0] * left[1] + right[1]

    def scan(a, u):
        return associative_scan(combine, (a, u), dim=1, combine_mode="pointwise")[1]

    return torch.compile(_materialized(scan))


def transformers_loop(x, delta, A, B, C, D, z, delta_bias):
    """transformers' ``mamba_selective_scan`` (pure-torch loop), layout ``(b, d, l)``."""
    from transformers.models.mamba import modeling_mamba

    fn = getattr(modeling_mamba.mamba_selective_scan, "__wrapped__", modeling_mamba.mamba_selective_scan)
    y = fn(x.transpose(1, 2), delta.transpose(1, 2), A, B.transpose(1, 2), C.transpose(1, 2), D=D,
           z=z.transpose(1, 2), delta_bias=delta_bias, delta_softplus=True)
    return y.transpose(1, 2)


def mamba_ssm_kernel(x, delta, A, B, C, D, z, delta_bias):
    """The official CUDA kernel, only where ``mamba_ssm`` is already installed."""
    from mamba_ssm.ops.selective_scan_interface import selective_scan_fn

    y = selective_scan_fn(x.transpose(1, 2), delta.transpose(1, 2), A, B.transpose(1, 2),
                          C.transpose(1, 2), D=D, z=z.transpose(1, 2), delta_bias=delta_bias,
                          delta_softplus=True)
    return y.transpose(1, 2)


def available(name: str) -> bool:
    """Whether the package behind a peer can be imported here."""
    modules = {"mambapy": "mambapy", "transformers": "transformers", "mamba_ssm": "mamba_ssm"}
    if name not in modules:
        return True
    try:
        __import__(modules[name])
        return True
    except Exception:  # noqa: BLE001
        return False


# name -> (factory of the callable, peer package or None, supports backward)
METHODS = {
    "ours_eager": (lambda: _ours(), None, True),
    "ours_eager_sequential_schedule": (lambda: _ours("chained"), None, True),
    "ours_eager_parallel_schedule": (lambda: _ours("summarized"), None, True),
    "ours_compiled": (lambda: _ours(compiled=True), None, True),
    "ours_compiled_parallel_schedule": (lambda: _ours("summarized", compiled=True), None, True),
    "ours_compiled_cudagraph": (_ours_compiled_cudagraph, None, True),
    "ours_compiled_eager_edges": (lambda: _ours_compiled_eager_edges, None, True),
    "ours_loop_reference": (lambda: sequential, None, True),
    "blocked_autograd_before": (lambda: _materialized(lambda a, u: _blocked_scan(a, u)[1]), None, True),
    "assoc_scan_compiled": (_assoc_scan_compiled, None, False),
    "mambapy_pscan": (lambda: _materialized(_mambapy_pscan), "mambapy", True),
    "transformers_loop": (lambda: transformers_loop, "transformers", True),
    "mamba_ssm_cuda": (lambda: mamba_ssm_kernel, "mamba_ssm", True),
}


def chunk_backward_stacked(h_in, lam_in, delta, x, A, B, C, gy):
    """The compiled chunk backward before device run 4 (``chunk_scan.py``, now ``fast_scan/chunk_ops.py``, at commit bfb0fe2, with
    the states appended rather than indexed): all ``T`` states and adjoints stacked into
    ``(m, T, d, n)`` tensors, then reduced. ``bench_backward.py`` times it against the package's
    ``chunk_backward_functional``, which reduces inside the reverse loop."""
    T = delta.shape[1]
    A_bar = [torch.exp(delta[:, t, :, None] * A) for t in range(T)]  # T x (m, d, n)
    hs, h = [h_in], h_in
    for t in range(T):
        h = A_bar[t] * h + (delta[:, t] * x[:, t])[:, :, None] * B[:, t, None, :]
        hs.append(h)
    lams, lam = [], lam_in
    for t in range(T - 1, -1, -1):
        lam = gy[:, t, :, None] * C[:, t, None, :] + (lam if t == T - 1 else A_bar[t + 1] * lam)
        lams.append(lam)
    lams = lams[::-1]
    h_prev = torch.stack(hs[:-1], dim=1)  # (m, T, d, n)
    lam = torch.stack(lams, dim=1)  # (m, T, d, n)
    g = lam * torch.stack(A_bar, dim=1) * h_prev  # (m, T, d, n)
    q = (lam * B[:, :, None, :]).sum(-1)  # (m, T, d)
    dC = torch.einsum("mtdn,mtd->mtn", torch.stack(hs[1:], dim=1), gy)
    dB = torch.einsum("mtdn,mtd->mtn", lam, delta * x)
    ddelta = x * q + (g * A).sum(-1)
    dA = torch.einsum("mtdn,mtd->dn", g, delta)
    return ddelta, delta * q, dB, dC, dA, A_bar[0] * lams[0]

"""Plots of the language model (notebook 06) and the cache (notebook 07): the initial step
sizes, where the parameters go, cached decoding against the full forward, the cache's memory and
the time per token.

Each measures what it draws from minimamba_core itself; the notebooks check the numbers against
inline references, tests/test_viz_lm.py against formulas.
"""

from __future__ import annotations

import math
import time

import matplotlib.pyplot as plt
import numpy as np
import torch

from ..config import MambaConfig
from ..mixer import MambaMixer
from ..model import MambaLM


def plot_dt_init(dt_min: float = 0.001, dt_max: float = 0.1, d_inner: int = 1536, seed: int = 0,
                 bins: int = 20):
    """Histogram of the initial step size delta per channel against its log-uniform target.

    Builds one :class:`~minimamba_core.MambaMixer` (``d_model = d_inner // 2``, ``expand = 2``)
    with the official initialization and reads ``delta_0 = softplus(dt_proj.bias)`` for each of
    its ``d_inner`` channels: the step every channel takes when ``dt_proj``'s input is zero.
    The target is log-uniform on ``[dt_min, dt_max]``, clamped below at ``dt_init_floor = 1e-4``.

    Args:
        dt_min, dt_max: the range, ``0 < dt_min <= dt_max``.
        d_inner: number of channels (even, >= 2).
        seed: ``torch.manual_seed`` before building the mixer.
        bins: histogram bins over ``[log10 dt_min, log10 dt_max]``.

    Returns:
        ``(fig, data)``; ``data`` holds ``dt (d_inner,)`` float64, ``edges (bins+1,)`` in log10,
        ``counts (bins,)``, ``expected (bins,)`` (the log-uniform target's counts),
        ``ks`` (Kolmogorov-Smirnov distance of ``log dt`` from uniform), ``ks_threshold``
        (``1.63 / sqrt(d_inner)``, the 1 % critical value) and ``floor``.

    Raises:
        ValueError: odd or too small ``d_inner``, or a range ``MambaConfig`` rejects.
    """
    if isinstance(d_inner, bool) or not isinstance(d_inner, int) or d_inner < 2 or d_inner % 2:
        raise ValueError(f"d_inner must be an even int >= 2, got {d_inner!r}")
    if isinstance(bins, bool) or not isinstance(bins, int) or bins < 1:
        raise ValueError(f"bins must be a positive int, got {bins!r}")
    config = MambaConfig(d_model=d_inner // 2, n_layer=1, vocab_size=8, dt_min=dt_min, dt_max=dt_max)
    with torch.random.fork_rng(devices=[]):  # seeded here, the caller's random state untouched
        torch.manual_seed(seed)
        mixer = MambaMixer(config)
    dt = torch.nn.functional.softplus(mixer.dt_proj.bias.detach().double()).numpy()  # (d_inner,)
    lo, hi = math.log10(dt_min), math.log10(dt_max)
    edges = np.linspace(lo, hi, bins + 1) if hi > lo else np.array([lo - 0.5, hi + 0.5])
    counts, _ = np.histogram(np.log10(dt), bins=edges)
    expected = np.full(len(counts), d_inner / len(counts))
    # KS distance: the largest gap between the empirical CDF of log(dt) and the uniform CDF.
    u = np.sort((np.log(dt) - math.log(dt_min)) / max(math.log(dt_max) - math.log(dt_min), 1e-300))
    n = len(u)
    ks = float(max(np.max(np.arange(1, n + 1) / n - u), np.max(u - np.arange(n) / n)))
    floor = config.dt_init_floor

    fig, (ax0, ax1) = plt.subplots(1, 2, figsize=(10, 3.4))
    ax0.bar(edges[:-1], counts, width=np.diff(edges), align="edge", alpha=0.7, label="MambaMixer init")
    ax0.step(edges, np.append(expected, expected[-1]), where="post", color="k", label="log-uniform target")
    ax0.set(xlabel=r"$\log_{10}\,\Delta_0$ per channel", ylabel="channels",
            title=f"initial delta of {d_inner} channels")
    ax0.legend(fontsize=8)
    ax1.plot(np.log10(np.sort(dt)), np.arange(1, n + 1) / n, label="empirical CDF")
    ax1.plot([lo, hi], [0, 1], "k--", label="target CDF")
    if floor > dt_min:
        ax1.axvline(math.log10(floor), color="r", lw=0.8, label=f"floor {floor:g}")
    ax1.set(xlabel=r"$\log_{10}\,\Delta_0$", ylabel="fraction of channels",
            title=f"KS distance {ks:.3f} (1% threshold {1.63 / math.sqrt(n):.3f})")
    ax1.legend(fontsize=8)
    fig.tight_layout()
    return fig, {"dt": dt, "edges": edges, "counts": counts, "expected": expected, "ks": ks,
                 "ks_threshold": 1.63 / math.sqrt(n), "floor": floor}


_PARAM_GROUPS = ("embedding (= head)", "in_proj", "out_proj", "x_proj + dt_proj", "conv1d, A_log, D, norms")


def _param_group(name: str) -> str:
    if "embedding" in name or name.startswith("lm_head"):
        return _PARAM_GROUPS[0]
    for part, group in (("in_proj", 1), ("out_proj", 2), ("x_proj", 3), ("dt_proj", 3)):
        if f".{part}." in name:
            return _PARAM_GROUPS[group]
    return _PARAM_GROUPS[4]


def plot_param_breakdown(configs: dict):
    """Where the parameters of each model go: a stacked bar per configuration.

    Each :class:`~minimamba_core.MambaLM` is built on the ``meta`` device (shapes only, no
    memory), and its distinct parameters (a tied head counted once) are summed by group.

    Args:
        configs: ``{label: MambaConfig}``, drawn in the given order.

    Returns:
        ``(fig, data)``; ``data`` holds ``labels``, ``groups`` (the group names),
        ``counts (len(configs), len(groups))`` int64 and ``totals (len(configs),)``.

    Raises:
        ValueError: an empty ``configs``. TypeError: a value that is not a ``MambaConfig``.
    """
    if not configs:
        raise ValueError("configs must name at least one MambaConfig")
    labels = list(configs)
    counts = np.zeros((len(labels), len(_PARAM_GROUPS)), dtype=np.int64)
    for i, label in enumerate(labels):
        if not isinstance(configs[label], MambaConfig):
            raise TypeError(f"configs[{label!r}] must be a MambaConfig, got {type(configs[label]).__name__}")
        with torch.device("meta"):
            model = MambaLM(configs[label])
        for name, p in model.named_parameters():  # named_parameters lists a tied tensor once
            counts[i, _PARAM_GROUPS.index(_param_group(name))] += p.numel()
    totals = counts.sum(axis=1)
    fig, ax = plt.subplots(figsize=(7, 3.2))
    left = np.zeros(len(labels))
    for j, group in enumerate(_PARAM_GROUPS):
        share = counts[:, j] / totals
        ax.barh(labels, share, left=left, label=group)
        left += share
    ax.set(xlabel="share of the parameters", xlim=(0, 1), title="where the parameters are")
    ax.invert_yaxis()
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1))
    fig.tight_layout()
    return fig, {"labels": labels, "groups": list(_PARAM_GROUPS), "counts": counts, "totals": totals}


def _tiny_lm(d_model: int, n_layer: int, vocab_size: int, d_state: int, seed: int,
             dtype: torch.dtype = torch.float32, expand: int = 2, d_conv: int = 4) -> MambaLM:
    config = MambaConfig(d_model=d_model, n_layer=n_layer, vocab_size=vocab_size, d_state=d_state,
                          expand=expand, d_conv=d_conv)
    with torch.random.fork_rng(devices=[]):  # seeded here, the caller's random state untouched
        torch.manual_seed(seed)
        return MambaLM(config).to(dtype).eval()


@torch.no_grad()
def plot_decode_error(length: int = 128, d_model: int = 32, n_layer: int = 2, d_state: int = 16,
                      vocab_size: int = 64, seed: int = 0):
    """Error of step-by-step decoding against the full forward, per position, in fp32 and fp64.

    For each dtype, a freshly initialized :class:`~minimamba_core.MambaLM` (same seed) reads
    ``length`` random tokens twice: once with one parallel forward, once as a one-token prefill
    followed by ``length - 1`` calls of :meth:`~minimamba_core.MambaLM.step`. The error at
    position ``t`` is ``max |logits_step[t] - logits_full[t]|`` over the vocabulary.

    Returns:
        ``(fig, data)``; ``data`` holds ``positions (length,)``, ``err_fp32``, ``err_fp64``
        ``(length,)`` float64 and ``logit_scale`` (the largest ``|logit|`` of the fp64 run).

    Raises:
        ValueError: ``length < 2`` (or a size ``MambaConfig`` rejects).
    """
    if isinstance(length, bool) or not isinstance(length, int) or length < 2:
        raise ValueError(f"length must be an int >= 2, got {length!r}")
    ids = torch.randint(0, vocab_size, (1, length), generator=torch.Generator().manual_seed(seed))
    errors = {}
    for name, dtype in (("fp32", torch.float32), ("fp64", torch.float64)):
        model = _tiny_lm(d_model, n_layer, vocab_size, d_state, seed, dtype)
        full = model(ids)[0]  # (l, V_padded)
        cache = model.allocate_inference_cache(1)
        steps = [model(ids[:, :1], cache=cache)[0]]  # (1, V_padded), the prefill
        for t in range(1, length):
            steps.append(model.step(ids[:, t:t + 1], cache)[0])
        stepped = torch.cat(steps)  # (l, V_padded)
        errors[name] = (stepped.double() - full.double()).abs().amax(dim=-1).numpy()  # (l,)
        scale = float(full.abs().max())
    positions = np.arange(length)
    tiny = 1e-20  # zeros drawn at this floor on the log axis
    fig, ax = plt.subplots(figsize=(7, 3.2))
    for name, color in (("fp32", "C0"), ("fp64", "C1")):
        ax.semilogy(positions, np.maximum(errors[name], tiny), ".", ms=3, color=color,
                    label=f"{name}: step vs forward")  # no round-off digits: they vary by machine
    ax.axhline(np.finfo(np.float32).eps * scale, color="C0", ls=":", lw=0.8, label="fp32 eps x max|logit|")
    ax.axhline(np.finfo(np.float64).eps * scale, color="C1", ls=":", lw=0.8, label="fp64 eps x max|logit|")
    ax.set(xlabel="position t", ylabel="max |step - forward| over the vocabulary",
           title="cached decoding against the full forward")
    ax.legend(fontsize=8, loc="center right")
    fig.tight_layout()
    return fig, {"positions": positions, "err_fp32": errors["fp32"], "err_fp64": errors["fp64"],
                 "logit_scale": scale}


def _tensor_bytes(tensors) -> int:
    return sum(t.numel() * t.element_size() for t in tensors)


@torch.no_grad()
def plot_cache_memory(d_model: int = 64, d_state: int = 16, expand: int = 2, d_conv: int = 4,
                      max_len: int = 256, chunk: int = 16, n_head: int = 4, seed: int = 0):
    """Measured bytes of one layer's decoding cache as the sequence grows: Mamba against attention.

    Mamba: a one-layer :class:`~minimamba_core.MambaLM` reads random tokens ``chunk`` at a time
    with an :class:`~minimamba_core.InferenceCache`; after each chunk the bytes of its
    ``conv_state`` and ``ssm_state`` tensors are summed. Attention: a same-width layer's key and
    value projections (``d_model -> d_model`` each, ``n_head`` heads) are applied to hidden
    states of the same length and appended to a KV cache ``(b, n_head, l, d_model / n_head)``
    each, whose bytes are summed the same way. Both in float32.

    Returns:
        ``(fig, data)``; ``data`` holds ``lengths``, ``mamba_bytes``, ``kv_bytes`` (int arrays)
        and ``crossover``: the predicted length ``expand * (d_state + d_conv) / 2`` beyond which
        the KV cache is larger.

    Raises:
        ValueError: ``d_model`` not divisible by ``n_head``, or non-positive sizes.
    """
    for name, value in (("max_len", max_len), ("chunk", chunk), ("n_head", n_head)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive int, got {value!r}")
    if d_model % n_head:
        raise ValueError(f"d_model ({d_model}) must be divisible by n_head ({n_head})")
    vocab = 64
    model = _tiny_lm(d_model, 1, vocab, d_state, seed, expand=expand, d_conv=d_conv)
    cache = model.allocate_inference_cache(1)
    gen = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        k_proj, v_proj = torch.nn.Linear(d_model, d_model), torch.nn.Linear(d_model, d_model)
    head_dim = d_model // n_head
    keys = torch.zeros(1, n_head, 0, head_dim)  # (b, n_head, l, head_dim)
    values = torch.zeros(1, n_head, 0, head_dim)
    lengths, mamba_bytes, kv_bytes = [0], [cache.nbytes()], [0]
    length = 0
    while length < max_len:
        n = min(chunk, max_len - length)
        ids = torch.randint(0, vocab, (1, n), generator=gen)
        model(ids, cache=cache)  # the cache now summarizes every token so far
        hidden = model.backbone.embedding(ids)  # (1, n, d_model), the attention layer's input
        k = k_proj(hidden).view(1, n, n_head, head_dim).transpose(1, 2)  # (1, n_head, n, head_dim)
        v = v_proj(hidden).view(1, n, n_head, head_dim).transpose(1, 2)
        keys, values = torch.cat([keys, k], dim=2), torch.cat([values, v], dim=2)
        length += n
        lengths.append(length)
        mamba_bytes.append(cache.nbytes())
        kv_bytes.append(_tensor_bytes([keys, values]))
    lengths, mamba_bytes, kv_bytes = map(np.array, (lengths, mamba_bytes, kv_bytes))
    crossover = expand * (d_state + d_conv) / 2
    fig, ax = plt.subplots(figsize=(7, 3.2))
    ax.plot(lengths, kv_bytes / 1024, "o-", ms=3, label=f"attention KV cache ({n_head} heads)")
    ax.plot(lengths, mamba_bytes / 1024, "s-", ms=3, label="Mamba conv_state + ssm_state")
    ax.axvline(crossover, color="gray", ls=":", label=f"equal at l = {crossover:g}")
    ax.set(xlabel="tokens seen l", ylabel="KiB per layer (float32, batch 1)",
           title=f"decoding cache of one layer, d_model = {d_model}, N = {d_state}, E = {expand}")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig, {"lengths": lengths, "mamba_bytes": mamba_bytes, "kv_bytes": kv_bytes,
                 "crossover": crossover}


@torch.no_grad()
def plot_time_per_token(d_model: int = 64, n_layer: int = 2, lengths=(16, 32, 64, 128, 256),
                        repeats: int = 3, seed: int = 0):
    """Illustrative wall time to produce the next token at position ``l``, with and without a cache.

    Without a cache the model re-reads the whole prefix: one forward over ``l`` tokens. With
    the cache it runs one :meth:`~minimamba_core.MambaLM.step`. Best of ``repeats`` runs on the
    CPU (timings vary from machine to machine; the benchmarks make the claims).

    Returns:
        ``(fig, data)``; ``data`` holds ``lengths``, ``seconds_no_cache``, ``seconds_cache``.
    """
    if isinstance(repeats, bool) or not isinstance(repeats, int) or repeats < 1:
        raise ValueError(f"repeats must be a positive int, got {repeats!r}")
    lengths = [int(l) for l in lengths]
    if not lengths or min(lengths) < 1:
        raise ValueError(f"lengths must be positive ints, got {lengths!r}")
    vocab = 64
    model = _tiny_lm(d_model, n_layer, vocab, 16, seed)
    ids = torch.randint(0, vocab, (1, max(lengths) + 1), generator=torch.Generator().manual_seed(seed))
    no_cache, with_cache = [], []
    for l in lengths:
        best = float("inf")
        for _ in range(repeats):
            t0 = time.perf_counter()
            model(ids[:, :l + 1], num_last_tokens=1)
            best = min(best, time.perf_counter() - t0)
        no_cache.append(best)
        cache = model.allocate_inference_cache(1)
        model(ids[:, :l], cache=cache)
        best = float("inf")
        for _ in range(repeats):
            saved = [dict(layer) for layer in cache.layers]  # the step rebinds, never writes in place
            t0 = time.perf_counter()
            model.step(ids[:, l:l + 1], cache)
            best = min(best, time.perf_counter() - t0)
            cache.layers, cache.seqlen_offset = saved, l  # rewind
        with_cache.append(best)
    lengths, no_cache, with_cache = map(np.array, (lengths, no_cache, with_cache))
    fig, ax = plt.subplots(figsize=(7, 3.2))
    ax.plot(lengths, no_cache * 1e3, "o-", label="no cache: forward over the prefix")
    ax.plot(lengths, with_cache * 1e3, "s-", label="cache: one step")
    ax.set(xlabel="position l of the new token", ylabel="ms per token (best of %d)" % repeats,
           title="time for the next token (illustrative)", yscale="log")
    ax.set_xscale("log", base=2)
    ax.set_xticks(lengths, [str(l) for l in lengths])
    ax.minorticks_off()
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig, {"lengths": lengths, "seconds_no_cache": no_cache, "seconds_cache": with_cache}

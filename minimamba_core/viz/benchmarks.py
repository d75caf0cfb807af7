"""Plots and tables of notebook 11 and ``benchmarks/report.py``: cost against length on
log-log axes, and the committed benchmark results (``benchmarks/results/*.json``; the earlier
runs' files in ``benchmarks/results/archive/``).
"""

from __future__ import annotations

import math

import matplotlib.pyplot as plt


def loglog_slope(lengths, values) -> float | None:
    """Least-squares slope of ``log(values)`` against ``log(lengths)`` (1: linear, 2: quadratic);
    ``None`` when fewer than two finite positive points remain."""
    pts = [(math.log(l), math.log(v)) for l, v in zip(lengths, values) if v is not None and v > 0]
    if len(pts) < 2:
        return None
    mx = sum(p[0] for p in pts) / len(pts)
    my = sum(p[1] for p in pts) / len(pts)
    sxx = sum((p[0] - mx) ** 2 for p in pts)
    return sum((p[0] - mx) * (p[1] - my) for p in pts) / sxx if sxx else None


def plot_loglog(lengths, series: dict, ylabel: str, title: str = "", xlabel: str = "sequence length l"):
    """One line per ``series[name]`` (a list aligned with ``lengths``; ``None`` = not measured)
    on log-log axes, with its fitted slope in the legend. Returns ``(fig, data)``: ``data`` has
    ``lengths``, ``series``, ``slopes`` (the fitted floats) and ``labels`` (the legend's texts,
    ``"name (slope 1.00)"``; a flat line reads ``0.00``, never ``-0.00``)."""
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    slopes, labels = {}, {}
    for name, values in series.items():
        pts = [(l, v) for l, v in zip(lengths, values) if v is not None and v > 0]
        if not pts:
            continue
        slopes[name] = loglog_slope(*zip(*pts))
        # round first, then + 0.0 turns the -0.0 of a flat line's round-off into 0.0
        labels[name] = name if slopes[name] is None else f"{name} (slope {round(slopes[name], 2) + 0.0:.2f})"
        ax.plot(*zip(*pts), marker="o", label=labels[name])
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig, {"lengths": list(lengths), "series": series, "slopes": slopes, "labels": labels}


def benchmark_series(results: dict, section: str, mode: str = "fwd", dtype: str = "float32",
                     metric: str = "ms") -> tuple[list, dict]:
    """From a results file's ``section`` (``"scan-cuda"`` ...): the lengths measured and, per
    method, ``metric`` (``"ms"`` or ``"peak_mb"``) at each length (``None`` where skipped, out of
    memory or failed)."""
    rows = [r for r in results[section]["rows"] if r["mode"] == mode and r["dtype"] == dtype]
    lengths = sorted({r["L"] for r in rows})
    series = {}
    for r in rows:
        series.setdefault(r["method"], {})[r["L"]] = r.get(metric)
    return lengths, {m: [v.get(l) for l in lengths] for m, v in series.items()}


def plot_benchmark(results: dict, section: str, mode: str = "fwd", dtype: str = "float32",
                   metric: str = "ms"):
    """:func:`plot_loglog` of one benchmark section; returns ``(fig, data)``."""
    lengths, series = benchmark_series(results, section, mode, dtype, metric)
    unit = {"ms": "time (ms)", "peak_mb": "peak extra memory (MB)"}[metric]
    machine = results[section].get("machine", {})
    where = machine.get("gpu") or f"CPU, {machine.get('torch_threads')} threads"
    return plot_loglog(lengths, series, unit, f"{section}: {mode}, {dtype} ({where})")


def benchmark_table(results: dict, section: str, length: int, dtype: str = "float32") -> str:
    """A Markdown table of every method at one length: forward and forward+backward time and
    peak memory, ``oom``/``skipped`` where so recorded."""
    cells = {}
    for r in results[section]["rows"]:
        if r["L"] != length or r["dtype"] != dtype:
            continue
        if "ms" in r:
            text = f"{r['ms']:.4g} ms, {r.get('peak_mb', float('nan')):.0f} MB"
        else:
            text = r.get("status", "")
        cells.setdefault(r["method"], {})[r["mode"]] = text
    lines = [f"| method (l = {length}, {dtype}) | forward | forward+backward |", "| --- | --- | --- |"]
    lines += [f"| {m} | {v.get('fwd', '')} | {v.get('fwd+bwd', '')} |" for m, v in cells.items()]
    return "\n".join(lines)

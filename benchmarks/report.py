"""Render a results file as Markdown tables and log-log plots (time and memory against length).

    python -m benchmarks.report benchmarks/results/h200-run7-2026-11-30.json --plots /tmp/plots

Writes ``tables.md`` and one PNG per (section, mode, dtype, metric) into ``--plots``; the
tables and plots in ``benchmarks/README.md`` come from here. Uses ``minimamba_core.viz``.
"""

from __future__ import annotations

import argparse
import json
import os

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402

from minimamba_core import viz  # noqa: E402

# The official CUDA kernel, from a reference build measured once on the H200 (issue 7), fp32,
# b=4, d_inner=1536, d_state=16, with z and D: l -> ms. Drawn for comparison, never re-measured.
KERNEL_MS = {"fwd": {512: 0.123, 2048: 0.449, 8192: 1.866}, "fwd+bwd": {512: 0.42, 2048: 1.62, 8192: 6.05}}
KERNEL_LABEL = "CUDA kernel (reference build, issue 7)"


def _plot(results, section, mode, dtype, metric):
    lengths, series = viz.benchmark_series(results, section, mode, dtype, metric)
    if section.startswith("scan-cuda") and metric == "ms" and dtype == "float32":
        ref = KERNEL_MS[mode]
        merged = sorted(set(lengths) | set(ref))
        series = {k: [dict(zip(lengths, v)).get(l) for l in merged] for k, v in series.items()}
        series[KERNEL_LABEL] = [ref.get(l) for l in merged]
        lengths = merged
    unit = {"ms": "time (ms)", "peak_mb": "peak extra memory (MB)"}[metric]
    machine = results[section].get("machine", {})
    where = machine.get("gpu") or f"CPU, {machine.get('torch_threads')} thread(s), {machine.get('clock')} clock"
    return viz.plot_loglog(lengths, series, unit, f"{section}: {mode}, {dtype} ({where})")


def _markdown(header: list[str], rows: list[str]) -> str:
    """A Markdown table from its header cells and its rows (already ``| ... |`` lines)."""
    return "\n".join(["| " + " | ".join(header) + " |", "|" + " --- |" * len(header), *rows])


def model_table(results: dict, section: str) -> str:
    """Markdown table of a ``model-*`` section: training tokens/s and decode ms per token."""
    cfg = results[section]["config"]
    lines = []
    for r in results[section]["rows"]:
        train = r.get("train", {})
        tok = f"{r['train_tokens_per_s']:.0f}" if "train_tokens_per_s" in r else train.get("status", r.get("status", ""))
        dec = f"{r['decode_ms_per_token']:.2f}" if "decode_ms_per_token" in r else ""
        lines.append(f"| {r['lib']} | {r.get('params_m', '')} | {tok} | "
                     f"{train.get('peak_mb', float('nan')):.0f} | {dec} |")
    return _markdown([f"library ({cfg['name']}, batch {cfg['batch']} x {cfg['seqlen']})", "params (M)",
                      "train tokens/s (fwd+bwd)", "peak MB", "decode ms/token"], lines)


def backward_table(results: dict, section: str) -> str:
    """Markdown table of a ``backward-*`` section (``bench_backward.py``): one row per variant."""
    lines = []
    for r in results[section]["rows"]:
        fb, fw = r.get("fwd+bwd", {}), r.get("fwd", {})
        lines.append(f"| {r['variant']} | {r['L']} | {r['chunk']} | {fb.get('ms', float('nan')):.1f} | "
                     f"{fb.get('peak_mb', float('nan')):.0f} | {fw.get('ms', float('nan')):.2f} | "
                     f"{r.get('compile_fb_s', '')} | {r.get('max_rel_grad_err', float('nan')):.1e} |")
    return _markdown(["variant", "l", "chunk", "fwd+bwd ms", "peak MB", "fwd ms", "compile s",
                      "max rel. grad error"], lines)


def allocator_table(results: dict, section: str) -> str:
    """Markdown table of an ``allocator-*`` section (``bench_allocator.py``): fresh against primed."""
    lines = [f"| {r['method']} | {r['L']} | {r['mode']} | {r['allocator']} | "
             f"{r.get('ms', float('nan')):.1f} | {r['minor_faults_per_call']:.0f} |"
             for r in results[section]["rows"]]
    return _markdown(["method", "l", "mode", "allocator", "ms", "minor faults per call"], lines)


def main(argv=None) -> list[str]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("results", help="a results JSON written by the bench_* scripts")
    p.add_argument("--plots", required=True,
                   help="folder for tables.md and the PNGs (created; its tables.md is overwritten: "
                        "benchmarks/plots/tables.md is several files' tables put together by hand)")
    args = p.parse_args(argv)
    with open(args.results) as f:
        results = json.load(f)
    os.makedirs(args.plots, exist_ok=True)
    stem = os.path.splitext(os.path.basename(args.results))[0]
    written, tables = [], []
    for section, payload in results.items():
        if section.startswith("model-"):
            tables.append(f"### {section}\n\n{model_table(results, section)}\n")
            continue
        if section.startswith("backward-"):
            tables.append(f"### {section}\n\n{backward_table(results, section)}\n")
            continue
        if section.startswith("allocator-"):
            tables.append(f"### {section}\n\n{allocator_table(results, section)}\n")
            continue
        rows = payload["rows"]
        for dtype in sorted({r["dtype"] for r in rows}, key=lambda t: (t != "float32", t)):
            for length in sorted({r["L"] for r in rows if r["dtype"] == dtype}):
                tables.append(f"### {section}, l = {length}, {dtype}\n\n"
                              f"{viz.benchmark_table(results, section, length, dtype)}\n")
            for mode in ("fwd", "fwd+bwd"):
                for metric in ("ms", "peak_mb"):
                    if not any(r["mode"] == mode and r["dtype"] == dtype and metric in r for r in rows):
                        continue
                    fig, _ = _plot(results, section, mode, dtype, metric)
                    name = f"{stem}-{section}-{mode.replace('+', '_')}-{dtype}-{metric}.png"
                    fig.savefig(os.path.join(args.plots, name), dpi=90)
                    plt.close(fig)
                    written.append(os.path.join(args.plots, name))
    with open(os.path.join(args.plots, "tables.md"), "w") as f:
        f.write("\n".join(tables))
    written.append(os.path.join(args.plots, "tables.md"))
    print("\n".join(written))
    return written


if __name__ == "__main__":
    main()

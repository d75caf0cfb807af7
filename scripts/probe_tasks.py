"""Measurements behind notebook 09's honest statistics: what the LTI model predicts at long
lengths, and why ``ih_s6`` slips at 64x its training length.

Command (from the repository root; a few minutes on a CPU)::

    python scripts/probe_tasks.py --out models/tasks/tasks_probes.json \
        [--old-lti DIR] [--rows 64] [--trace-rows 8] [--device cuda]

``--old-lti`` names an earlier LTI folder to probe as well: the shared-``B, C`` ``ih_lti`` that
shipped before the fair ablation, extracted from git with
``git show d90e3bd:models/tasks/ih_lti/config.json`` (and ``model.safetensors``).

1. ``predictions``: for each LTI induction-heads folder, at lengths 256, 4096 and 16384
   (``--rows`` rows each, seeds ``40_000 + length``): the accuracy, the share of each predicted
   token at the answer position, and the share of predictions that can never be right (the
   trigger ``V-1``: the answer is drawn from ``0 .. V-2``).
2. ``ih_s6``: the shipped S6 model on the same rows: per-row correctness against the distance
   from the key (the token after the first trigger) to the query (the last position), in
   quartiles of distance; and, with :func:`minimamba_core.viz.selection_trace` on
   ``--trace-rows`` rows at 256 and at 16384, for the four layer-1 channels that step hardest on
   the key (chosen on other rows at 256, as notebook 09 does): the mean step ``delta`` on the
   irrelevant tokens, the sum of ``delta`` from the key to the query, and what survives of a
   value written at the key: ``exp(A_slow * sum delta)`` with ``A_slow`` each channel's slowest
   state (the ``A`` entry closest to 0; the ZOH decay of eq. 4 of notebook 09).

Writes a JSON of these numbers (rounded) with the command and the torch version.
``models/tasks/tasks_probes.json`` was recorded on a CPU (two threads, about 17 minutes, before the
``--device`` option and the ``"device"`` key existed) with the defaults and ``--old-lti`` pointing at
the folder extracted from ``d90e3bd``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

import minimamba_core as mm
import minimamba_core.viz  # noqa: F401  (mm.viz)
from minimamba_core.training import tasks

ROOT = Path(__file__).resolve().parent.parent
V = 16
LENGTHS = (256, 4096, 16384)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--old-lti", type=Path, default=None, help="an earlier (shared B, C) ih_lti folder")
    p.add_argument("--rows", type=int, default=64)
    p.add_argument("--trace-rows", type=int, default=8)
    p.add_argument("--chunk-len", type=int, default=2048)
    p.add_argument("--device", default="cpu")
    return p.parse_args(argv)


@torch.inference_mode()
def last_predictions(model, x: torch.Tensor, chunk_len: int, batch_size: int = 16) -> torch.Tensor:
    """The prediction at the last position of each row: ``x (n, l)`` -> ``(n,)`` int64."""
    out = []
    device = next(model.parameters()).device
    for i in range(0, x.shape[0], batch_size):
        xb = x[i:i + batch_size].to(device)
        cache = model.allocate_inference_cache(xb.shape[0])
        for s in range(0, xb.shape[1], chunk_len):
            logits = model(xb[:, s:s + chunk_len], cache=cache)  # (b, chunk, vocab)
        out.append(logits[:, -1, :V].argmax(-1).cpu())
    return torch.cat(out)


def batch(length: int, rows: int):
    return tasks.induction_heads(rows, length, V, generator=torch.Generator().manual_seed(40_000 + length))


def prediction_stats(model, rows: int, chunk_len: int) -> dict:
    res = {}
    for length in LENGTHS:
        x, y = batch(length, rows)
        pred = last_predictions(model, x, chunk_len)  # (rows,)
        counts = torch.bincount(pred, minlength=V)
        res[str(length)] = {
            "accuracy": round(float((pred == y[:, -1]).double().mean()), 4),
            "rows": rows,
            "share_by_token": [round(float(c) / rows, 4) for c in counts],
            "most_common": {"token": int(counts.argmax()), "share": round(float(counts.max()) / rows, 4)},
            "share_never_right": round(float(counts[V - 1]) / rows, 4),  # the trigger is never an answer
            "answer_share_by_token": [round(float(c) / rows, 4) for c in torch.bincount(y[:, -1], minlength=V)],
        }
        print(f"  length {length}: {res[str(length)]['accuracy']:.3f}, most common prediction "
              f"{res[str(length)]['most_common']}, never right {res[str(length)]['share_never_right']}", flush=True)
    return res


def s6_probe(model, rows: int, trace_rows: int, chunk_len: int) -> dict:
    res = {"by_distance": {}, "trace": {}}
    # 1. correctness against the key-to-query distance
    for length in (4096, 16384):
        x, y = batch(length, rows)
        pred = last_predictions(model, x, chunk_len)
        right = (pred == y[:, -1]).double()  # (rows,)
        key = mm.viz.token_groups("induction_heads", x, V)["key"].float().argmax(1)  # (rows,)
        dist = (length - 1 - key).double()  # (rows,)
        edges = torch.quantile(dist, torch.tensor([0.25, 0.5, 0.75], dtype=torch.float64))
        q = torch.bucketize(dist, edges)  # (rows,) in 0..3
        res["by_distance"][str(length)] = {
            "accuracy": round(float(right.mean()), 4), "rows": rows,
            "quartile_upper_distance": [int(e) for e in edges.tolist()] + [int(dist.max())],
            "accuracy_by_quartile": [round(float(right[q == i].mean()), 4) for i in range(4)],
            "mean_distance_right": round(float(dist[right == 1].mean()), 1) if right.any() else None,
            "mean_distance_wrong": round(float(dist[right == 0].mean()), 1) if (right == 0).any() else None,
        }
        print(f"  ih_s6 length {length}: {res['by_distance'][str(length)]}", flush=True)
    # 2. the memory channels' steps and the decay of what was written at the key
    device = next(model.parameters()).device
    pick_x, _ = tasks.induction_heads(32, 256, V, generator=torch.Generator().manual_seed(11))
    pick = mm.viz.selection_trace(model, pick_x.to(device))["delta"][1].cpu()  # (32, 256, d_inner)
    g = mm.viz.token_groups("induction_heads", pick_x, V)
    memory = (pick[g["key"]].mean(0) / pick[g["other"]].mean(0)).topk(4).indices  # (4,)
    A, _, _ = model.backbone.layers[1].mixer.scan_params()  # (d_inner, N)
    A_slow = A.detach().cpu()[memory].max(-1).values  # (4,), closest to 0
    res["memory_channels"] = memory.tolist()
    res["A_slow"] = [round(float(a), 4) for a in A_slow.detach()]
    for length in (256, 16384):
        x, y = batch(length, trace_rows)
        t0 = time.perf_counter()
        tr = mm.viz.selection_trace(model, x.to(device))
        tr = {key_: ([t.cpu() for t in v] if isinstance(v, list) else v.cpu()) for key_, v in tr.items()}
        d = tr["delta"][1][..., memory]  # (rows, l, 4)
        g = mm.viz.token_groups("induction_heads", x, V)
        key = g["key"].float().argmax(1)  # (rows,)
        sums, keep, other_mean, hratio = [], [], [], []
        for r in range(trace_rows):
            k = int(key[r])
            s = d[r, k + 1:].sum(0)  # (4,), steps after the key up to the query
            sums.append(s)
            keep.append(torch.exp(A_slow * s))  # (4,)
            other_mean.append(d[r][g["other"][r]].mean(0))  # (4,)
            h = tr["h_norm"][1][r, :, memory]  # (l, 4)
            hratio.append(h[-1] / h[k:k + 4].max(0).values)  # (4,)
        right = (tr["pred"][:, -1] == y[:, -1]).double()
        res["trace"][str(length)] = {
            "rows": trace_rows, "accuracy": round(float(right.mean()), 4),
            "mean_delta_other": [round(float(v), 5) for v in torch.stack(other_mean).mean(0)],
            "mean_delta_key": [round(float(v), 4) for v in d[g["key"]].mean(0)],
            "median_sum_delta_key_to_query": [round(float(v), 2) for v in torch.stack(sums).median(0).values],
            "median_kept_slowest_state": [float(f"{float(v):.3g}") for v in torch.stack(keep).median(0).values],
            "median_h_query_over_h_key": [round(float(v), 3) for v in torch.stack(hratio).median(0).values],
            "seconds": round(time.perf_counter() - t0, 1),
        }
        print(f"  ih_s6 trace at {length}: {res['trace'][str(length)]}", flush=True)
    return res


def main(argv=None) -> dict:
    args = parse_args(argv)
    torch.manual_seed(0)
    device = torch.device(args.device)
    report = {"command": "python scripts/probe_tasks.py " + " ".join(argv if argv is not None else sys.argv[1:]),
              "device": mm.describe_device(device), "torch": torch.__version__, "predictions": {}}
    folders = {"ih_lti": ROOT / "models" / "tasks" / "ih_lti"}
    if args.old_lti is not None:
        folders["ih_lti_shared_old"] = args.old_lti
    for name, folder in folders.items():
        model, _ = tasks.load_task_model(folder, device)
        print(name, flush=True)
        report["predictions"][name] = prediction_stats(model.eval(), args.rows, args.chunk_len)
        report["predictions"][name]["lti_bc"] = model.backbone.layers[0].mixer.bc
    model, _ = tasks.load_task_model(ROOT / "models" / "tasks" / "ih_s6", device)
    report["ih_s6"] = s6_probe(model.eval(), args.rows, args.trace_rows, args.chunk_len)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    return report


if __name__ == "__main__":
    main()

"""Evaluate task-model folders (``models/tasks/*``) on many fresh rows, with standard errors.

Command (from the repository root)::

    python scripts/eval_tasks.py --out eval.json models/tasks/ih_s6 models/tasks/ih_lti \
        models/tasks/sc_s6_64 models/tasks/sc_lti_64 [--ih-rows 256] [--sc-rows 2048] \
        [--factors 1 4 16 64] [--device cuda]

Each folder's task and training length come from its ``config.json`` (written by
``scripts/train_tasks.py``). Induction Heads models are scored at ``factor x`` the training
length for every ``--factors`` entry on ``--ih-rows`` rows each (one answer per row);
Selective Copying models at their training length on ``--sc-rows`` rows (``k`` answers per
row). The rows are drawn with seeds ``30_000 + length`` (never a training or validation seed
of ``train_tasks.py``), the same rows for every model of a task. The standard error is that of
the mean of per-row accuracies, ``std(row accuracies, ddof=1) / sqrt(rows)`` (rows are
independent; the answers within one row are not). Long rows run through the model in pieces
of ``--chunk-len`` carrying the cache, which gives the same logits with bounded memory.

Writes ``{"settings": ..., "models": {folder as given: {"task", "selective", "lti_bc",
"train_length", "total_steps", "total_sequences", "results": {length: {"accuracy",
"stderr", "rows", "answers", "seconds"}}}}}``.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import torch

import minimamba_core as mm
from minimamba_core.training import IGNORE_INDEX, tasks


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("models", type=Path, nargs="+", help="folders written by scripts/train_tasks.py")
    p.add_argument("--out", type=Path, required=True, help="the JSON file to write")
    p.add_argument("--ih-rows", type=int, default=256)
    p.add_argument("--sc-rows", type=int, default=2048)
    p.add_argument("--factors", type=int, nargs="+", default=[1, 4, 16, 64],
                   help="induction heads: test lengths as multiples of the training length")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--chunk-len", type=int, default=2048)
    p.add_argument("--device", default=None)
    return p.parse_args(argv)


@torch.inference_mode()
def row_accuracies(model, x: torch.Tensor, y: torch.Tensor, batch_size: int, chunk_len: int) -> torch.Tensor:
    """Per-row accuracy over the scored targets: ``x, y (n, l)`` int64 -> ``(n,)`` float64."""
    device = next(model.parameters()).device
    vocab = model.config.vocab_size
    out = []
    for i in range(0, x.shape[0], batch_size):
        xb, yb = x[i:i + batch_size].to(device), y[i:i + batch_size].to(device)
        if chunk_len >= xb.shape[1]:
            pred = model(xb)[..., :vocab].argmax(-1)  # (b, l)
        else:
            cache = model.allocate_inference_cache(xb.shape[0])
            pred = torch.cat([model(xb[:, s:s + chunk_len], cache=cache)[..., :vocab].argmax(-1)
                              for s in range(0, xb.shape[1], chunk_len)], dim=1)  # (b, l)
        mask = yb != IGNORE_INDEX  # (b, l)
        out.append((((pred == yb) & mask).sum(1).double() / mask.sum(1).double()).cpu())
    return torch.cat(out)


def main(argv=None) -> dict:
    args = parse_args(argv)
    device = torch.device(args.device) if args.device else mm.pick_device()
    report = {"settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()
                           if k != "models"},
              "command": "python scripts/eval_tasks.py " + " ".join(argv if argv is not None else sys.argv[1:]),
              "device": mm.describe_device(device), "torch": torch.__version__, "models": {}}
    report["settings"]["models"] = [str(m) for m in args.models]
    for folder in args.models:
        model, info = tasks.load_task_model(folder, device)
        meta = json.loads((folder / "config.json").read_text())
        s = info["settings"]
        task, L = s["task"], s["seqlen"]
        if task == "induction_heads":
            lengths, rows = [L * f for f in args.factors], args.ih_rows
        else:
            lengths, rows = [L], args.sc_rows
        stages = info.get("stages", []) + [info]  # every training stage, oldest first
        entry = {"task": task, "selective": meta["selective"],
                 "lti_bc": None if meta["selective"] else meta.get("lti_bc", "shared"),
                 "train_length": L, "total_steps": sum(st["steps_done"] for st in stages),
                 "total_sequences": sum(st["steps_done"] * st["settings"]["batch_size"] for st in stages),
                 "results": {}}
        for length in lengths:
            g = torch.Generator().manual_seed(30_000 + length)
            x, y = tasks.make_batch(task, rows, length, s["vocab_size"], s["n_tokens"], g)
            t0 = time.perf_counter()
            acc = row_accuracies(model, x, y, args.batch_size, args.chunk_len)  # (rows,)
            stderr = float(acc.std(unbiased=True)) / math.sqrt(rows) if rows > 1 else float("nan")
            entry["results"][str(length)] = {
                "accuracy": round(float(acc.mean()), 4), "stderr": round(stderr, 4), "rows": rows,
                "answers": int((y != IGNORE_INDEX).sum()), "seconds": round(time.perf_counter() - t0, 1)}
            r = entry["results"][str(length)]
            print(f"{folder}: length {length}: accuracy {r['accuracy']:.4f} +- {r['stderr']:.4f} "
                  f"({rows} rows, {r['seconds']} s)", flush=True)
        report["models"][str(folder)] = entry
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    return report


if __name__ == "__main__":
    main()

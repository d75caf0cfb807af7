"""Train the small task models of notebook 09 (Selective Copying, Induction Heads; S6 and LTI).

Commands (from the repository root; ``--lti`` switches selection off; ``--init`` continues an
earlier run's weights as a new stage, and the folder keeps every stage's record)::

    python scripts/train_tasks.py --task selective_copying --seqlen 64 --n-tokens 8 --out DIR
    python scripts/train_tasks.py --task selective_copying --seqlen 64 --n-tokens 8 --lti --out DIR
    python scripts/train_tasks.py --task induction_heads --seqlen 256 --out DIR [--lti]

The shipped folders in ``models/tasks/`` and how they were made (exact commands and times in
each ``config.json``; the GPU batches are ``scripts/train_all_gpu.sh``):

* ``sc_s6_64``, ``sc_lti_64``: selective copying, ``L = 64``, ``k = 8``; ``ih_lti``: induction
  heads trained at 256, the LTI model with per-channel ``B, C``. All three from stage 3 of
  ``scripts/train_all_gpu.sh`` (``STAGE=3``, one H100, 80 s wall for the three runs side by side
  and the evaluation, 2026-12-07): 2000 steps of batch 256 for both selective-copying models
  (512,000 sequences each, same seed and schedule, no early stop), 1400 steps of batch 256 for
  ``ih_lti`` (358,400 sequences, at least ``ih_s6``'s 353,792). ``models/tasks/tasks_eval.json``
  is that stage's ``scripts/eval_tasks.py`` output (its ``shipped/sc_s6_64`` is the earlier S6
  folder this one replaced, trained 1886 steps); ``models/tasks/logs/`` holds the runs' logs.
* ``ih_s6``: induction heads trained at 256, 602 steps of batch 128 (GPU shared seven ways), then
  1081 steps of batch 256 (``--init``); evaluated in ``tasks_eval.json`` as ``shipped/ih_s6``.

The same budget for S6 and LTI: give both the same ``--steps``, ``--batch-size``, ``--lr``,
``--warmup`` and ``--seed``, with neither ``--budget-seconds`` nor ``--max-seconds`` (a time
budget gives the faster model more steps) and ``--stop-at 2`` (no early stop); ``config.json``
then records the same ``steps_done``, ``sequences_seen`` and ``schedule`` for both. Stage 3 of
``scripts/train_all_gpu.sh`` does this, and ``scripts/eval_tasks.py`` evaluates the results.

Each run trains the paper's task model (2 layers, ``d_model = 64``, ``d_state = 16``,
vocabulary 16; Gu & Dao 2023, Appendix E.1) on freshly drawn batches, evaluates a fixed
validation set (its own seed) every ``--eval-every`` steps, stops early once that set is
solved (accuracy >= ``--stop-at``), and writes the folder with
:func:`minimamba_core.training.tasks.save_task_model`; ``config.json`` records the command, the
settings, the steps done, the time and the device, and the accuracies measured (for
Induction Heads at the training length and at 4x, 16x and 64x it). GPU times were measured
with several runs sharing one H200, so they are upper bounds for a run alone.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from pathlib import Path

import torch

import minimamba_core as mm
from minimamba_core.training import evaluate, steps_for_budget, tasks, train


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--task", choices=tasks.TASKS, required=True)
    p.add_argument("--lti", action="store_true", help="the LTI ablation (delta, B, C independent of the input)")
    p.add_argument("--lti-bc", choices=tasks.LTI_BC, default="channel",
                   help="the LTI model's B, C: per channel (the paper's S4, default) or shared over channels")
    p.add_argument("--seqlen", type=int, default=256, help="training length (selective copying: the context L)")
    p.add_argument("--n-tokens", type=int, default=8, help="selective copying: tokens to copy, k")
    p.add_argument("--vocab-size", type=int, default=16)
    p.add_argument("--d-model", type=int, default=64)
    p.add_argument("--n-layer", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--steps", type=int, default=4000)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--eval-every", type=int, default=250)
    p.add_argument("--eval-size", type=int, default=512)
    p.add_argument("--stop-at", type=float, default=0.995)
    p.add_argument("--extrapolate", type=int, nargs="*", default=[4, 16, 64],
                   help="induction heads: test lengths as multiples of --seqlen")
    p.add_argument("--budget-seconds", type=float, default=None,
                   help="choose --steps to fit this training time (timed on 10 steps)")
    p.add_argument("--max-seconds", type=float, default=None, help="hard cap on training time")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default=None)
    p.add_argument("--init", type=Path, default=None,
                   help="start from the weights of a folder written by this script (a second stage)")
    p.add_argument("--warmup", type=int, default=None)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--no-progress", action="store_true")
    return p.parse_args(argv)


def validation_set(task: str, seqlen: int, size: int, vocab_size: int, n_tokens: int, seed: int):
    """A fixed evaluation set: ``size`` rows drawn with ``seed`` (never the training seed)."""
    g = torch.Generator().manual_seed(seed)
    return tasks.make_batch(task, size, seqlen, vocab_size, n_tokens, g)


def main(argv=None) -> dict:
    args = parse_args(argv)
    device = torch.device(args.device) if args.device else mm.pick_device()
    if device.type == "cuda":
        torch.set_float32_matmul_precision("high")  # TF32 matrix products
    model = tasks.task_model(args.vocab_size, args.d_model, args.n_layer, selective=not args.lti,
                             seed=args.seed, lti_bc=args.lti_bc).to(device)
    earlier = None
    if args.init is not None:  # continue an earlier run: same kind of model, its weights
        previous, earlier = tasks.load_task_model(args.init)
        if tasks.is_selective(previous) == args.lti:
            raise ValueError(f"--init {args.init} holds a {'S6' if tasks.is_selective(previous) else 'LTI'} model")
        if args.lti and previous.backbone.layers[0].mixer.bc != args.lti_bc:
            raise ValueError(f"--init {args.init} holds B, C {previous.backbone.layers[0].mixer.bc!r}, "
                             f"not --lti-bc {args.lti_bc!r}")
        model.load_state_dict(previous.state_dict())
    gen = torch.Generator().manual_seed(args.seed + 1 + (len(earlier.get("stages", [])) + 1 if earlier else 0))

    def batch_fn(step):
        return tasks.make_batch(args.task, args.batch_size, args.seqlen, args.vocab_size, args.n_tokens, gen)

    val_x, val_y = validation_set(args.task, args.seqlen, args.eval_size, args.vocab_size, args.n_tokens,
                                  seed=10_000 + args.seed)
    best = {"accuracy": -1.0, "state": None}

    def eval_fn(m):
        r = evaluate(m, val_x, val_y, batch_size=256)
        if r["accuracy"] > best["accuracy"]:
            best.update(accuracy=r["accuracy"], state=copy.deepcopy(m.state_dict()))
        r["stop"] = r["accuracy"] >= args.stop_at
        return r

    if args.budget_seconds:
        state = gen.get_state()
        args.steps = steps_for_budget(model, batch_fn, args.budget_seconds)
        gen.set_state(state)
    name = f"{args.task} {'LTI' if args.lti else 'S6'}"
    print(f"{name}: {model.num_parameters():,} parameters, training length {args.seqlen}, "
          f"{mm.describe_device(device)}", flush=True)
    hist = train(model, batch_fn, args.steps, lr=args.lr, warmup=args.warmup, eval_fn=eval_fn, eval_every=args.eval_every,
                 progress=not args.no_progress, desc=name, max_seconds=args.max_seconds)
    model.load_state_dict(best["state"])
    results = {"train_length": args.seqlen, "accuracy": {}}
    lengths = [args.seqlen] + ([args.seqlen * f for f in args.extrapolate]
                               if args.task == "induction_heads" else [])
    for length in lengths:
        size = args.eval_size if length <= 4096 else max(64, args.eval_size // 4)
        x, y = validation_set(args.task, length, size, args.vocab_size, args.n_tokens, seed=20_000 + length)
        r = evaluate(model, x, y, batch_size=64, chunk_len=2048)
        results["accuracy"][str(length)] = round(r["accuracy"], 4)
        print(f"{name}: accuracy at length {length}: {r['accuracy']:.4f} ({r['tokens']} answers)", flush=True)
    info = {
        "task": args.task, "selective": not args.lti, "command": "python scripts/train_tasks.py "
        + " ".join(argv if argv is not None else sys.argv[1:]),
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "steps_done": len(hist.steps), "train_seconds": round(hist.seconds, 1),
        "sequences_seen": len(hist.steps) * args.batch_size,
        "schedule": {"lr": args.lr, "warmup": min(100, args.steps // 10) if args.warmup is None else args.warmup,
                     "shape": "linear warm-up, then cosine to 0.1 lr over --steps (training.loop.lr_at)"},
        "device": mm.describe_device(device), "torch": torch.__version__,
        "eval_steps": hist.eval_steps, "val_accuracy": [round(e["accuracy"], 4) for e in hist.evals],
        "results": results,
    }
    if earlier is not None:  # keep the earlier stages' records, oldest first
        stages = earlier.pop("stages", [])
        info["stages"] = stages + [earlier]
        info["total_steps"] = sum(st["steps_done"] for st in info["stages"]) + info["steps_done"]
        info["total_sequences"] = sum(st.get("sequences_seen", st["steps_done"] * st["settings"]["batch_size"])
                                      for st in info["stages"]) + info["sequences_seen"]
    tasks.save_task_model(model, args.out, info)
    print(json.dumps({"out": str(args.out), "steps": info["steps_done"], "seconds": info["train_seconds"],
                      **results}), flush=True)
    return info


if __name__ == "__main__":
    main()

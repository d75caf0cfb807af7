"""Training and evaluation: a plain AdamW loop with a progress bar, reused by scripts, tests, notebooks.

The loop knows nothing about the data: it calls ``batch_fn(step) -> (x, y)`` (ids ``(b, l)``
and targets ``(b, l)``, ``-100`` where a position is not scored) and minimizes the mean
cross-entropy of the scored positions. Language modelling scores every position; the
synthetic tasks of notebook ``09_selection_tasks`` score only the answers.

Choices, as in the official training recipe of the paper (Gu & Dao 2023, Appendix E.2:
AdamW, betas (0.9, 0.95), weight decay 0.1, gradient clipping 1.0, linear warm-up then cosine
decay to a tenth of the peak), except the sizes. No weight decay on ``A_log``, ``D``,
biases and norm weights (the official ``_no_weight_decay`` set, plus norms and biases as in
nanoGPT). Logits of padded vocabulary rows are dropped before the loss.
Built in notebook ``08_tiny_shakespeare``.
"""

from __future__ import annotations

import copy
import math
import sys
import time
from dataclasses import dataclass, field
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm as _tqdm_auto
from tqdm.std import tqdm as _tqdm_text

from .data import IGNORE_INDEX


def lm_loss(logits: torch.Tensor, targets: torch.Tensor, vocab_size: int | None = None,
            reduction: str = "mean") -> torch.Tensor:
    """Cross-entropy in nats: ``logits (b, l, V')``, ``targets (b, l)`` int64 -> scalar.

    Only the first ``vocab_size`` logit columns are used (the padded ones never are tokens);
    targets equal to ``IGNORE_INDEX`` are skipped. ``reduction`` as in ``F.cross_entropy``.

    Raises:
        ValueError: shapes that do not match; a target outside ``[0, vocab_size)`` that is not
            ``IGNORE_INDEX`` (``vocab_size`` defaults to the logits' last dimension).
        TypeError: targets that are not integers.
    """
    if logits.shape[:-1] != targets.shape:
        raise ValueError(f"logits {tuple(logits.shape)} and targets {tuple(targets.shape)} "
                         f"must agree in (batch, seqlen)")
    if targets.dtype.is_floating_point or targets.dtype.is_complex or targets.dtype == torch.bool:
        raise TypeError(f"targets must be integer token ids (torch.long), got {targets.dtype}")
    if vocab_size is not None:
        logits = logits[..., :vocab_size]
    V = logits.shape[-1]
    bad = (targets != IGNORE_INDEX) & ((targets < 0) | (targets >= V))  # checked here: on CUDA a bad
    if bool(bad.any()):                                                  # target is a device-side assert
        raise ValueError(f"targets must be token ids in [0, {V}) or IGNORE_INDEX={IGNORE_INDEX}; found "
                         f"{sorted(set(targets[bad].tolist()))[:5]}")
    return F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten(),
                           ignore_index=IGNORE_INDEX, reduction=reduction)


def _model_device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


@torch.no_grad()
def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 32,
             chunk_len: int | None = None) -> dict:
    """Loss and accuracy of ``model`` over a fixed set: ``x, y (n, l)``.

    Returns ``{"loss": nats per scored token, "accuracy": fraction of scored tokens whose
    argmax is right, "tokens": number scored}``, every scored token weighted equally.
    ``chunk_len`` feeds long rows through the model in pieces of that length, carrying the
    :class:`~minimamba_core.cache.InferenceCache` between them (same result, bounded memory).
    The model is put in eval mode and restored afterwards.
    """
    if x.shape != y.shape or x.dim() != 2:
        raise ValueError(f"x and y must both be (n, l), got {tuple(x.shape)} and {tuple(y.shape)}")
    for name, value in (("batch_size", batch_size), ("chunk_len", chunk_len)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise ValueError(f"{name} must be a positive int, got {value!r}")
    was_training = model.training
    model.eval()
    device = _model_device(model)
    vocab = model.config.vocab_size
    total, correct, count = 0.0, 0, 0
    for i in range(0, x.shape[0], batch_size):
        xb, yb = x[i:i + batch_size].to(device), y[i:i + batch_size].to(device)
        if chunk_len is None or chunk_len >= xb.shape[1]:
            logits = model(xb)[..., :vocab]  # (b, l, V)
        else:
            cache = model.allocate_inference_cache(xb.shape[0])
            logits = torch.cat([model(xb[:, s:s + chunk_len], cache=cache)[..., :vocab]
                                for s in range(0, xb.shape[1], chunk_len)], dim=1)  # (b, l, V)
        mask = yb != IGNORE_INDEX  # (b, l)
        total += float(lm_loss(logits, yb, reduction="sum"))
        correct += int(((logits.argmax(-1) == yb) & mask).sum())
        count += int(mask.sum())
    model.train(was_training)
    if count == 0:
        raise ValueError("no scored targets (all equal IGNORE_INDEX)")
    return {"loss": total / count, "accuracy": correct / count, "tokens": count}


def lr_at(step: int, steps: int, lr: float, warmup: int, min_lr_ratio: float = 0.1) -> float:
    """Learning rate at ``step`` (0-based): linear warm-up over ``warmup`` steps, then cosine to ``min_lr_ratio * lr``."""
    if step < warmup:
        return lr * (step + 1) / warmup
    progress = (step - warmup) / max(1, steps - warmup)
    return lr * (min_lr_ratio + (1 - min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0))))


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """AdamW groups: decay matrices (linear, conv and embedding weights); not ``A_log``, ``D``, biases, norms."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        leaf = name.rsplit(".", 1)[-1]
        if p.dim() >= 2 and leaf not in ("A_log",):
            decay.append(p)
        else:
            no_decay.append(p)
    return [{"params": decay, "weight_decay": weight_decay},
            {"params": no_decay, "weight_decay": 0.0}]


@dataclass
class History:
    """What :func:`train` records: per-step training loss, periodic evaluations, wall time."""

    steps: list[int] = field(default_factory=list)
    train_loss: list[float] = field(default_factory=list)
    eval_steps: list[int] = field(default_factory=list)
    evals: list[dict] = field(default_factory=list)
    seconds: float = 0.0

    def eval_series(self, key: str = "loss") -> list[float]:
        """One metric of every evaluation, in order (e.g. ``"loss"`` or ``"accuracy"``)."""
        return [e[key] for e in self.evals]


def train(model: nn.Module, batch_fn: Callable[[int], tuple[torch.Tensor, torch.Tensor]],
          steps: int, lr: float = 1e-3, weight_decay: float = 0.1, warmup: int | None = None,
          min_lr_ratio: float = 0.1, grad_clip: float = 1.0, betas=(0.9, 0.95),
          eval_fn: Callable[[nn.Module], dict] | None = None, eval_every: int = 0,
          progress: bool = True, desc: str = "train", notebook_bar: bool = False,
          progress_interval: float = 1.0, max_seconds: float | None = None) -> History:
    """Train ``model`` in place for ``steps`` AdamW steps; return the :class:`History`.

    Args:
        model: a :class:`~minimamba_core.model.MambaLM` (or anything with ``config.vocab_size``
            returning logits ``(b, l, V')``), already on its device.
        batch_fn: ``step -> (x, y)``, int64 ``(b, l)`` each (on any device; moved to the model's).
        steps: number of optimizer steps.
        lr, weight_decay, betas, grad_clip: AdamW and clipping; ``warmup`` defaults to
            ``min(100, steps // 10)`` steps; cosine decay to ``min_lr_ratio * lr``.
        eval_fn: ``model -> dict`` (e.g. a closure over :func:`evaluate`; its ``"loss"``, if
            any, is shown on the bar), called every
            ``eval_every`` steps and after the last step; a result with ``"stop": True``
            ends training early (e.g. once a task is solved).
        progress: show a tqdm bar (text bar written to stdout, or a widget when
            ``notebook_bar``) with the running loss, redrawn at most every
            ``progress_interval`` seconds (notebooks use a long interval: fewer stored lines).
        max_seconds: stop early once this much wall time has passed (a safety net; the
            schedule still assumes ``steps``).

    Raises:
        ValueError: ``steps`` < 1 or a non-finite loss (names the step).
    """
    if not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be a positive int, got {steps!r}")
    warmup = min(100, steps // 10) if warmup is None else warmup
    device = _model_device(model)
    vocab = model.config.vocab_size
    opt = torch.optim.AdamW(param_groups(model, weight_decay), lr=lr, betas=betas,
                            fused=device.type == "cuda")
    hist = History()
    model.train()
    bar_cls = _tqdm_auto if notebook_bar else _tqdm_text
    bar = bar_cls(range(steps), desc=desc, disable=not progress, file=sys.stdout,
                  mininterval=progress_interval, ncols=90 if not notebook_bar else None)
    t0 = time.perf_counter()
    for step in bar:
        for group in opt.param_groups:
            group["lr"] = lr_at(step, steps, lr, warmup, min_lr_ratio)
        x, y = batch_fn(step)
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        loss = lm_loss(model(x), y, vocab)
        value = loss.item()  # syncs the device once per step; checked before any weight changes
        if not math.isfinite(value):
            if not bool((y != IGNORE_INDEX).any()):
                raise ValueError(f"the batch of step {step} has no scored targets (every target is "
                                 f"IGNORE_INDEX={IGNORE_INDEX}): check batch_fn")
            raise ValueError(f"training loss became {value} at step {step} (the weights are those "
                             f"before this step): lower lr={lr} or check the data")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if grad_clip:
            nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
        opt.step()
        hist.steps.append(step)
        hist.train_loss.append(value)
        last = step == steps - 1
        stop = max_seconds is not None and time.perf_counter() - t0 > max_seconds
        if eval_fn is not None and ((eval_every and (step + 1) % eval_every == 0) or last or stop):
            hist.eval_steps.append(step + 1)
            hist.evals.append(eval_fn(model))
            shown = {"val": f"{hist.evals[-1]['loss']:.3f}"} if "loss" in hist.evals[-1] else {}
            bar.set_postfix(loss=f"{value:.3f}", **shown, refresh=False)
            stop = stop or bool(hist.evals[-1].get("stop", False))
        elif step % 10 == 0:
            bar.set_postfix(loss=f"{value:.3f}", refresh=False)
        if stop:
            break
    bar.close()
    hist.seconds = time.perf_counter() - t0
    return hist


def steps_for_budget(model: nn.Module, batch_fn: Callable[[int], tuple[torch.Tensor, torch.Tensor]],
                     seconds: float, probe: int = 10) -> int:
    """How many :func:`train` steps fit in ``seconds``: times ``probe`` steps on a copy of ``model``.

    The copy is thrown away, so ``model`` is untouched; ``batch_fn`` is called ``probe + 2``
    times (reseed its generator afterwards for a reproducible run).
    """
    trial = copy.deepcopy(model)
    train(trial, batch_fn, steps=2, progress=False)  # warm-up: allocator, kernels
    hist = train(trial, batch_fn, steps=probe, progress=False)
    return max(1, int(seconds * probe / hist.seconds))

"""Plots of training (notebooks 08 and 09): the bigram table, loss and accuracy curves, the
synthetic tasks as coloured strips, and length generalization.
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np


def plot_bigram(counts, chars, top: int = 20):
    """The bigram table ``p(next | previous)`` of the ``top`` most frequent characters, as an image.

    Args:
        counts: ``(V, V)`` pair counts (rows: previous character), tensor or array.
        chars: the ``V`` characters, in id order.
        top: how many of the most frequent previous characters to show (rows and columns).

    Returns:
        ``(fig, data)``; ``data`` holds ``ids (top,)`` (the characters shown, most frequent
        first), ``probs (top, top)`` (rows renormalized over the shown columns) and ``labels``.

    Raises:
        ValueError: a non-square table, ``len(chars)`` that does not match, ``top`` out of range.
    """
    counts = np.asarray(counts, dtype=np.float64)
    if counts.ndim != 2 or counts.shape[0] != counts.shape[1] or counts.shape[0] != len(chars):
        raise ValueError(f"counts must be (V, V) with V = len(chars) = {len(chars)}, got {counts.shape}")
    if isinstance(top, bool) or not isinstance(top, int) or not 1 <= top <= len(chars):
        raise ValueError(f"top must be an int in [1, {len(chars)}], got {top!r}")
    ids = np.argsort(-counts.sum(1), kind="stable")[:top]  # (top,)
    sub = counts[np.ix_(ids, ids)] + 1e-12
    probs = sub / sub.sum(1, keepdims=True)  # (top, top)
    labels = [repr(chars[i])[1:-1] if chars[i] not in " \n" else {" ": "␣", "\n": "⏎"}[chars[i]] for i in ids]
    fig, ax = plt.subplots(figsize=(5.6, 4.8))
    im = ax.imshow(probs, cmap="viridis")
    ax.set_xticks(range(top), labels, fontsize=8)
    ax.set_yticks(range(top), labels, fontsize=8)
    ax.set(xlabel="next character", ylabel="previous character",
           title=f"bigram p(next | previous), {top} most frequent characters")
    fig.colorbar(im, ax=ax, fraction=0.046)
    fig.tight_layout()
    return fig, {"ids": ids, "probs": probs, "labels": labels}


def plot_loss_curves(steps, train_loss, eval_steps, val_loss, baselines: dict | None = None,
                     smooth: int = 20, title: str = "training"):
    """Training loss (raw and smoothed), validation loss, and horizontal baselines, in nats.

    Args:
        steps, train_loss: one value per optimizer step.
        eval_steps, val_loss: the periodic validation evaluations.
        baselines: ``{"bigram": 2.48, ...}`` drawn as dashed lines.
        smooth: moving-average window for the training loss.

    Returns:
        ``(fig, data)``; ``data`` holds ``smoothed`` (the moving average, as long as
        ``train_loss``) and ``final_val`` (the last validation loss).

    Raises:
        ValueError: lists of different lengths, or no validation point.
    """
    if len(steps) != len(train_loss) or len(eval_steps) != len(val_loss) or not len(val_loss):
        raise ValueError("steps/train_loss and eval_steps/val_loss must pair up; need >= 1 validation point")
    loss = np.asarray(train_loss, dtype=np.float64)
    w = max(1, min(int(smooth), len(loss)))
    csum = np.cumsum(np.insert(loss, 0, 0.0))
    smoothed = np.array([(csum[i + 1] - csum[max(0, i + 1 - w)]) / min(i + 1, w) for i in range(len(loss))])
    fig, ax = plt.subplots(figsize=(7, 3.6))
    ax.plot(steps, loss, color="C0", alpha=0.25, lw=0.8)
    ax.plot(steps, smoothed, color="C0", label="train (moving average)")
    ax.plot(eval_steps, val_loss, "o-", color="C1", label="validation")
    for i, (name, value) in enumerate((baselines or {}).items()):
        ax.axhline(value, ls="--", color=f"C{i + 2}", lw=1, label=f"{name} {value:.2f}")
    ax.set(xlabel="step", ylabel="cross-entropy (nats / token)", title=title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig, {"smoothed": smoothed, "final_val": float(val_loss[-1])}


def plot_task_example(inputs, targets, predictions: dict | None = None, vocab_size: int = 16,
                      special: tuple[int, ...] = (), noise: int | None = None, title: str = ""):
    """One task sequence as a strip of coloured cells (as the paper's Figure 2), answers below.

    Args:
        inputs: ``(l,)`` token ids of one row.
        targets: ``(l,)`` with ``-100`` where nothing is asked.
        predictions: ``{"S6": (l,) ids, "LTI": (l,) ids}``: each model's argmax, shown at the
            asked positions (a cross marks a wrong answer).
        vocab_size: for the colour scale.
        special: ids drawn in black (the marker or trigger).
        noise: the id drawn white (selective copying's noise token), if any.

    Returns:
        ``(fig, data)``; ``data`` holds ``asked`` (the asked positions) and per model
        ``correct`` (bool per asked position).
    """
    inputs = np.asarray(inputs)
    targets = np.asarray(targets)
    asked = np.nonzero(targets != -100)[0]
    rows = 1 + 1 + len(predictions or {})
    fig, ax = plt.subplots(figsize=(min(14, 0.16 * len(inputs) + 2), 0.45 * rows + 1.0))
    cmap = plt.get_cmap("tab20", vocab_size)

    def colour(t):
        if noise is not None and t == noise:
            return (1, 1, 1, 1)
        return (0, 0, 0, 1) if t in special else cmap(int(t))

    def cell(x, y, t, edge="0.7"):
        ax.add_patch(plt.Rectangle((x, y), 0.9, 0.9, facecolor=colour(t), edgecolor=edge, lw=0.5))

    for i, t in enumerate(inputs):
        cell(i, rows - 1, t)
    for i in asked:
        cell(i, rows - 2, targets[i])
    data = {"asked": asked}
    names = ["input", "target"]
    for r, (name, pred) in enumerate((predictions or {}).items()):
        pred = np.asarray(pred)
        ok = pred[asked] == targets[asked]
        data[name] = {"correct": ok}
        for i, good in zip(asked, ok):
            cell(i, rows - 3 - r, pred[i])
            if not good:
                ax.plot([i, i + 0.9], [rows - 3 - r, rows - 2.1 - r], color="r", lw=1.2)
        names.append(f"{name} ({int(ok.sum())}/{len(ok)})")
    ax.set_xlim(-0.5, len(inputs) + 0.5)
    ax.set_ylim(-0.2, rows + 0.1)
    ax.set_yticks([rows - 1 - i + 0.45 for i in range(rows)], names)
    ax.set_xlabel("position")
    ax.set_title(title)
    for side in ("top", "right", "left"):
        ax.spines[side].set_visible(False)
    fig.tight_layout()
    return fig, data


def plot_accuracy_curves(curves: dict, chance: float | None = None, title: str = "validation accuracy"):
    """Accuracy against training step for several runs: ``curves = {name: (steps, accuracies)}``.

    Returns ``(fig, data)``; ``data`` maps each name to its final accuracy.
    """
    fig, ax = plt.subplots(figsize=(6.5, 3.4))
    final = {}
    for name, (steps, acc) in curves.items():
        if len(steps) != len(acc) or not len(acc):
            raise ValueError(f"curve {name!r}: steps and accuracies must pair up and not be empty")
        ax.plot(steps, acc, "o-", ms=3, label=name)
        final[name] = float(acc[-1])
    if chance is not None:
        ax.axhline(chance, ls=":", color="k", lw=1, label=f"chance {chance:.2f}")
    ax.set(xlabel="step", ylabel="token accuracy", ylim=(0, 1.02), title=title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig, final


def plot_length_generalization(results: dict, train_length: int, threshold: float | None = None,
                               chance: float | None = None, stderr: dict | None = None):
    """Accuracy against test length (log scale) per model: ``results = {name: {length: accuracy}}``.

    The training length is marked; ``threshold`` draws the pass line. ``stderr``, shaped like
    ``results`` (keys int or str), adds error bars of one standard error. Returns ``(fig, data)``
    with ``data[name] = (lengths sorted, accuracies)``, and ``data["stderr"][name]`` (the bars,
    in the same order) when ``stderr`` is given.
    """
    fig, ax = plt.subplots(figsize=(6.5, 3.4))
    data = {}
    for name, by_length in results.items():
        lengths = sorted(int(k) for k in by_length)
        acc = [float(by_length[k] if k in by_length else by_length[str(k)]) for k in lengths]
        data[name] = (lengths, acc)
        if stderr is not None and name in stderr:
            se = [float(stderr[name][k] if k in stderr[name] else stderr[name][str(k)]) for k in lengths]
            ax.errorbar(lengths, acc, yerr=se, fmt="o-", capsize=3, label=f"{name} (±1 s.e.)")
            data.setdefault("stderr", {})[name] = se
        else:
            ax.plot(lengths, acc, "o-", label=name)
    ax.axvline(train_length, color="0.5", lw=1, ls="--", label=f"trained at {train_length}")
    if threshold is not None:
        ax.axhline(threshold, color="r", lw=0.8, ls=":", label=f"{threshold:.0%}")
    if chance is not None:
        ax.axhline(chance, color="k", lw=0.8, ls=":", label=f"chance {chance:.2f}")
    ax.set_xscale("log", base=2)
    ax.set(xlabel="test sequence length", ylabel="accuracy", ylim=(0, 1.02),
           title="induction heads: accuracy vs test length")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig, data

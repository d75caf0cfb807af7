"""Plots of notebooks 09 and 08: selection seen in a trained task model (``delta_t``, ``|h_t|`` and
the prediction along one sequence, per layer and channel), and in the Tiny Shakespeare model
(:func:`char_groups`, :func:`plot_delta_by_group`, :func:`plot_text_delta`: the step per kind of
character, and a passage coloured by its steps).

:func:`selection_trace` runs a model on a batch and returns, per layer, the step sizes
``delta`` (after bias and softplus, paper Algorithm 2) and the norm of the state ``h_t`` over
its ``N`` entries; :func:`token_groups` names the token kinds of a task's input;
:func:`plot_selection_trace` draws one row. The plot returns ``(fig, data)``;
tests/test_viz_selection.py asserts on ``data``. The paper's reading of the step (Section 3.5.2,
"Interpretation of Delta"): a large ``delta`` resets the state and takes in the current token, a
small one keeps the state and ignores the token. No official counterpart (a visualization).
"""

from __future__ import annotations

import matplotlib
import matplotlib.pyplot as plt
import numpy as np
import torch
import torch.nn.functional as F

from ..mixer import causal_conv
from .widgets import check_choice, check_int

TASK_NAMES = ("selective_copying", "induction_heads")


@torch.no_grad()
def selection_trace(model, input_ids: torch.Tensor) -> dict:
    """Per layer ``delta`` and ``|h_t|`` of ``model`` on ``input_ids (b, l)``, and its predictions.

    Each mixer's input (the normed residual) is caught by a forward pre-hook during one ordinary
    forward pass; from it the mixer's own public pieces give the scan's inputs: ``in_proj``,
    :func:`~minimamba_core.mixer.causal_conv`, ``ssm_inputs`` and ``scan_params``, then
    ``delta = softplus(delta + bias)`` (eq. 1 of notebook 09). The state is re-derived by the
    recurrence ``h_t = exp(delta_t A) h_{t-1} + delta_t B_t x_t`` (Euler ``B_bar``, as the scan),
    from ``h_0 = 0``. Works for selective and LTI mixers alike (both have these hooks), with
    ``B`` shared by the channels ``(b, l, N)`` or per channel ``(b, l, d_inner, N)`` (``LTIMixer(bc="channel")``).

    Returns a dict: ``delta`` and ``h_norm``, lists (one per layer) of ``(b, l, d_inner)``
    float tensors (``h_norm`` is the Euclidean norm over the ``N`` state entries), and ``write``
    likewise, the norm of the term ``delta_t B_t x_t`` that the token adds to the state;
    ``logits (b, l, vocab)``; ``pred (b, l)`` (argmax); ``input_ids (b, l)``.

    Raises ValueError: ``input_ids`` not of shape ``(b, l)``.
    """
    if input_ids.dim() != 2:
        raise ValueError(f"input_ids must have shape (b, l), got {tuple(input_ids.shape)}")
    layers = model.backbone.layers
    hidden = [None] * len(layers)

    def catch(i):
        def hook(module, args):
            hidden[i] = args[0]
        return hook

    handles = [layer.mixer.register_forward_pre_hook(catch(i)) for i, layer in enumerate(layers)]
    try:
        logits = model(input_ids)  # (b, l, vocab)
    finally:
        for handle in handles:
            handle.remove()
    deltas, norms, writes = [], [], []
    for layer, hid in zip(layers, hidden):
        mixer = layer.mixer
        x, _ = mixer.in_proj(hid).chunk(2, dim=-1)  # (b, l, d_inner)
        x, _ = causal_conv(x, mixer.conv1d)  # (b, l, d_inner), after SiLU
        x = x.to(hid.dtype)
        delta, B, C = mixer.ssm_inputs(x)  # (b, l, d_inner), B, C (b, l, N) or per channel (b, l, d_inner, N)
        A, _, bias = mixer.scan_params()  # (d_inner, N), _, (d_inner,)
        delta = F.softplus(delta.to(A.dtype) + bias)  # (b, l, d_inner)
        x, B = x.to(A.dtype), B.to(A.dtype)
        if B.dim() == 3:  # shared by the channels (selective, or LTI with bc="shared")
            B = B[:, :, None, :]  # (b, l, 1, N)
        h = torch.zeros(x.shape[0], x.shape[2], A.shape[1], dtype=A.dtype, device=x.device)  # (b, d_inner, N)
        norm, write = [], []
        for t in range(x.shape[1]):
            A_bar = torch.exp(delta[:, t, :, None] * A)  # (b, d_inner, N)
            B_bar_x = delta[:, t, :, None] * B[:, t] * x[:, t, :, None]  # (b, d_inner, N)
            h = A_bar * h + B_bar_x  # (b, d_inner, N)
            norm.append(h.norm(dim=-1))  # (b, d_inner)
            write.append(B_bar_x.norm(dim=-1))  # (b, d_inner)
        deltas.append(delta)
        norms.append(torch.stack(norm, dim=1))  # (b, l, d_inner)
        writes.append(torch.stack(write, dim=1))  # (b, l, d_inner)
    return dict(delta=deltas, h_norm=norms, write=writes, logits=logits, pred=logits.argmax(-1), input_ids=input_ids)


def token_groups(task: str, input_ids: torch.Tensor, vocab_size: int) -> dict:
    """Boolean masks ``(b, l)`` naming the kinds of token in a task's input (``training/tasks.py``).

    ``selective_copying``: ``data`` (ids ``1 .. V-2``), ``noise`` (id 0), ``marker`` (id ``V-1``).
    ``induction_heads``: ``trigger`` (id ``V-1``), ``key`` (the token right after the first
    trigger: the one to remember), ``other`` (everything else).

    Raises ValueError: an unknown ``task``.
    """
    check_choice("task", task, TASK_NAMES)
    marker = input_ids == vocab_size - 1  # (b, l)
    if task == "selective_copying":
        return dict(data=(input_ids > 0) & ~marker, noise=input_ids == 0, marker=marker)
    first = marker.int().cumsum(dim=1) == 1  # (b, l): from the first trigger to before the second
    key = torch.zeros_like(marker)
    key[:, 1:] = marker[:, :-1] & first[:, :-1]  # the token after the first trigger
    return dict(trigger=marker, key=key, other=~marker & ~key)


def plot_selection_trace(trace: dict, groups: dict, targets: torch.Tensor | None = None,
                         layer: int = 0, channel: int = -1, row: int = 0):
    """``delta_t``, ``|h_t|`` and the prediction along one sequence of a :func:`selection_trace`.

    Top: ``delta_t`` of ``channel`` (``-1``: the mean over channels) of ``layer``, each token
    coloured by its group in ``groups`` (:func:`token_groups`, one colour per group). Middle:
    ``|h_t|`` of the same channel (or mean). Bottom: the input ids, with the target and the
    prediction at the scored positions (``targets`` not ``-100``).

    Returns ``(fig, data)``; ``data``: ``delta``, ``h_norm`` ``(l,)`` drawn, ``mean_delta``
    (dict group -> mean ``delta`` of the drawn curve on that group), ``asked`` (scored
    positions), ``pred``, ``target`` at them, ``correct`` (bool array).

    Raises ValueError: ``layer``, ``channel`` or ``row`` out of range.
    """
    n_layer, (b, l, d_inner) = len(trace["delta"]), trace["delta"][0].shape
    check_int("layer", layer, 0, n_layer - 1)
    check_int("channel", channel, -1, d_inner - 1)
    check_int("row", row, 0, b - 1)
    pick = (lambda v: v[row].mean(-1)) if channel == -1 else (lambda v: v[row, :, channel])
    delta = pick(trace["delta"][layer]).cpu().numpy()  # (l,)
    h_norm = pick(trace["h_norm"][layer]).cpu().numpy()  # (l,)
    masks = {name: m[row].cpu().numpy() for name, m in groups.items()}
    ids = trace["input_ids"][row].cpu().numpy()
    pred = trace["pred"][row].cpu().numpy()
    asked = np.flatnonzero(targets[row].cpu().numpy() != -100) if targets is not None else np.array([], int)
    target = targets[row].cpu().numpy()[asked] if targets is not None else np.array([], int)
    data = dict(delta=delta, h_norm=h_norm, asked=asked, pred=pred[asked], target=target,
                correct=pred[asked] == target,
                mean_delta={n: float(delta[m].mean()) for n, m in masks.items() if m.any()})

    t = np.arange(l)
    which = "mean over channels" if channel == -1 else f"channel {channel}"
    fig, axes = plt.subplots(3, 1, figsize=(10, 6.4), sharex=True, height_ratios=[1.3, 1, 0.8])
    axes[0].plot(t, delta, color="0.7", lw=1)
    for j, (name, m) in enumerate(masks.items()):
        axes[0].plot(t[m], delta[m], "o", ms=4, color=f"C{j}", label=f"{name} ({m.sum()})")
    axes[0].set_ylabel(r"$\Delta_t$")
    axes[0].legend(fontsize=8, loc="upper right", ncol=len(masks))
    axes[0].set_title(f"layer {layer}, {which}")
    axes[1].plot(t, h_norm, color="C4")
    axes[1].set_ylabel(r"$\|h_t\|$")
    axes[2].plot(t, ids, ".", color="0.5", ms=4, label="input")
    if len(asked):
        axes[2].plot(asked, target, "s", mfc="none", mec="k", ms=8, label="target")
        axes[2].plot(asked, pred[asked], "x", color="C3", ms=7, label="prediction")
    axes[2].set_ylabel("token id")
    axes[2].set_xlabel("position t")
    axes[2].legend(fontsize=8, loc="upper left", ncol=3)
    fig.tight_layout()
    return fig, data


def delta_ratio(delta: torch.Tensor, tokens: torch.Tensor, baseline: torch.Tensor, lags: int = 4,
                channels: list[int] | None = None) -> list[float]:
    """How much larger the step is after ``tokens`` than on ``baseline`` tokens, at each lag.

    ``delta (b, l, d_inner)`` (one layer of :func:`selection_trace`) is averaged over
    ``channels`` (all when ``None``);
    for lag ``s`` in ``0 .. lags-1`` the result is the mean ``delta_{t+s}`` over the positions
    ``t`` where ``tokens (b, l)`` (bool) holds, divided by the mean ``delta`` on ``baseline (b, l)``
    (bool). Lags matter because the mixer's causal convolution (``d_conv = 4``) lets a token
    reach ``delta`` at its own position and the next ``d_conv - 1``.

    Raises ValueError: masks not of shape ``(b, l)`` or ``lags`` not in ``[1, l]``.
    """
    b, l, _ = delta.shape
    if tokens.shape != (b, l) or baseline.shape != (b, l):
        raise ValueError(f"tokens and baseline must have shape {(b, l)}, got {tuple(tokens.shape)}, "
                         f"{tuple(baseline.shape)}")
    check_int("lags", lags, 1, l)
    if channels is not None:
        delta = delta[:, :, list(channels)]  # (b, l, len(channels))
    mean = delta.mean(-1)  # (b, l)
    base = mean[baseline].mean()
    return [float(mean[:, s:][tokens[:, :l - s]].mean() / base) for s in range(lags)]


# -- 08: selection in the Tiny Shakespeare model ---------------------------------------------------

CHAR_GROUPS = ("newline", "space", "punctuation", "capital", "vowel", "consonant", "word start", "inside word")


def char_groups(input_ids: torch.Tensor, chars) -> dict:
    """Boolean masks ``(b, l)`` naming the kind of each character of a character-level text.

    ``chars``: the vocabulary, ``chars[i]`` the character of id ``i``. Groups (:data:`CHAR_GROUPS`):
    ``newline``, ``space``, ``punctuation`` (every other non-letter: punctuation marks and the
    odd digit), ``capital``, ``vowel`` (lower-case ``aeiou``), ``consonant`` (the other lower-case
    letters); and, by position in a word, ``word start`` (a letter after a non-letter that is not
    an apostrophe, or first in its row) and ``inside word`` (a letter after a letter or an
    apostrophe). Capital, vowel and consonant split the letters; so do word start and inside word.

    Raises ValueError: ``input_ids`` not of shape ``(b, l)``.
    """
    if input_ids.dim() != 2:
        raise ValueError(f"input_ids must have shape (b, l), got {tuple(input_ids.shape)}")
    table = np.array(list(chars))
    c = table[input_ids.cpu().numpy()]  # (b, l) characters
    letter = np.char.isalpha(c)
    prev = np.full_like(c, " ")
    prev[:, 1:] = c[:, :-1]
    joined = np.char.isalpha(prev) | (prev == "'")  # the previous character continues a word
    groups = {"newline": c == "\n", "space": c == " ", "punctuation": ~letter & (c != " ") & (c != "\n"),
              "capital": np.char.isupper(c), "vowel": np.isin(c, list("aeiou")),
              "consonant": np.char.islower(c) & ~np.isin(c, list("aeiou")),
              "word start": letter & ~joined, "inside word": letter & joined}
    return {name: torch.from_numpy(m) for name, m in groups.items()}


def plot_delta_by_group(series: dict, groups: dict):
    """Mean step per kind of character, relative to the mean step over all characters.

    ``series``: name -> ``delta (b, l)`` (one value per position, e.g. a layer's ``delta``
    averaged over some channels); ``groups``: :func:`char_groups` masks ``(b, l)``. For each
    series and group the bar is ``mean(delta[group]) / mean(delta)``: 1 is an ordinary step.

    Returns ``(fig, data)``; ``data``: ``relative`` (dict series -> dict group -> float),
    ``counts`` (dict group -> number of positions).

    Raises ValueError: a series or mask not of the shape of the first series.
    """
    shape = next(iter(series.values())).shape
    if any(s.shape != shape for s in series.values()) or any(m.shape != shape for m in groups.values()):
        raise ValueError(f"every series and mask must have shape {tuple(shape)}")
    relative = {name: {g: float(d[m].mean() / d.mean()) for g, m in groups.items()} for name, d in series.items()}
    counts = {g: int(m.sum()) for g, m in groups.items()}
    fig, ax = plt.subplots(figsize=(9, 3.4))
    width = 0.8 / len(series)
    pos = np.arange(len(groups))
    for j, (name, rel) in enumerate(relative.items()):
        ax.bar(pos + (j - (len(series) - 1) / 2) * width, list(rel.values()), width, color=f"C{j}", label=name)
    ax.axhline(1.0, color="k", lw=0.8, ls=":")
    ax.set_xticks(pos)
    ax.set_xticklabels([f"{g}\n({counts[g]})" for g in groups], fontsize=8)
    ax.set_ylabel(r"mean $\Delta$ / mean over all")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig, dict(relative=relative, counts=counts)


def plot_text_delta(text: str, delta, width: int = 64, cmap: str = "magma_r"):
    """A passage with every character on a background coloured by the step taken on it.

    ``text`` (``l`` characters) and ``delta (l,)`` (array or tensor, ``> 0``); the colour scale is
    logarithmic between the smallest and the largest step. Lines break at newlines (drawn as
    ``⏎``) and after ``width`` characters.

    Returns ``(fig, data)``; ``data``: ``delta (l,)``, ``cells`` (list of ``(row, column)`` per
    character), ``level (l,)`` (the colour scale's value in ``[0, 1]`` of each character).

    Raises ValueError: ``delta`` not of shape ``(len(text),)``, not positive, or ``width < 1``.
    """
    delta = np.asarray(delta.cpu() if isinstance(delta, torch.Tensor) else delta, dtype=np.float64)
    if delta.shape != (len(text),) or not (delta > 0).all():
        raise ValueError(f"delta must be positive, of shape ({len(text)},), got shape {delta.shape}")
    check_int("width", width, 1, 10_000)
    cells, row, col = [], 0, 0
    for ch in text:
        if col >= width:
            row, col = row + 1, 0
        cells.append((row, col))
        row, col = (row + 1, 0) if ch == "\n" else (row, col + 1)
    lo, hi = np.log(delta.min()), np.log(delta.max())
    level = (np.log(delta) - lo) / max(hi - lo, 1e-12)  # (l,) in [0, 1]
    colours = plt.get_cmap(cmap)(0.85 * level)  # (l, 4): the darkest 15% left out, for the text
    n_rows, n_cols = cells[-1][0] + 1, max(c for _, c in cells) + 1
    fig, ax = plt.subplots(figsize=(0.13 * n_cols + 1.4, 0.24 * n_rows + 0.5))
    for (r, c), ch, colour, v in zip(cells, text, colours, level):
        ax.add_patch(plt.Rectangle((c, -r - 1), 1, 1, fc=colour, ec="none"))
        ax.text(c + 0.5, -r - 0.5, "⏎" if ch == "\n" else ch, ha="center", va="center", fontsize=9,
                family="monospace", color="white" if v > 0.55 else "black")
    ax.set_xlim(0, n_cols)
    ax.set_ylim(-n_rows, 0)
    ax.axis("off")
    shown = matplotlib.colors.ListedColormap(plt.get_cmap(cmap)(np.linspace(0, 0.85, 256)))  # as the cells
    mappable = plt.cm.ScalarMappable(norm=matplotlib.colors.LogNorm(delta.min(), delta.max()), cmap=shown)
    fig.colorbar(mappable, ax=ax, fraction=0.03, pad=0.01, label=r"$\Delta_t$")
    fig.tight_layout()
    return fig, dict(delta=delta, cells=cells, level=level)

"""Plots of generation (notebook 10): the sampling controls side by side, and the temperature /
top-p widget.

Each measures what it draws with :func:`~minimamba_core.sample_next_token` and
:func:`~minimamba_core.generate`; tests/test_viz_lm.py checks the numbers.
"""

from __future__ import annotations

import textwrap
from typing import Callable

import matplotlib.pyplot as plt
import numpy as np
import torch

from ..generate import generate, sample_next_token
from ..model import MambaLM

_CONTROLS = ("temperature", "top_k", "top_p", "min_p", "repetition_penalty")


def _token_label(decode: Callable[[list], str], token_id: int) -> str:
    text = decode([int(token_id)])
    return {"\n": r"\n", " ": "␣", "": f"#{token_id}"}.get(text, text.replace("\n", r"\n"))


@torch.no_grad()
def _measure_controls(model, prompt_ids, logits, controls: dict, draws: int, seed: int,
                      max_new_tokens: int):
    """Empirical next-token distribution of ``sample_next_token`` and one generated continuation."""
    unknown = sorted(set(controls) - set(_CONTROLS))
    if unknown:
        raise ValueError(f"unknown sampling control(s) {unknown}; known: {list(_CONTROLS)}")
    vocab = model.config.vocab_size
    device = logits.device
    rows = logits[None].expand(draws, -1)  # (draws, V_padded), one row per draw
    previous = prompt_ids.expand(draws, -1)  # (draws, l): what the repetition penalty sees
    gen = torch.Generator(device=device).manual_seed(seed)
    ids = sample_next_token(rows, vocab, previous_ids=previous, generator=gen, **controls)  # (draws,)
    empirical = (torch.bincount(ids, minlength=vocab).double() / draws).cpu().numpy()  # (V,)
    gen = torch.Generator(device=device).manual_seed(seed)
    out = generate(model, prompt_ids, max_new_tokens, generator=gen, **controls)
    return empirical, out[0, prompt_ids.shape[1]:].tolist()


def _check_prompt(model, prompt_ids) -> None:
    if not isinstance(model, MambaLM):
        raise TypeError(f"model must be a MambaLM, got {type(model).__name__}")
    if not isinstance(prompt_ids, torch.Tensor) or prompt_ids.dim() != 2 or prompt_ids.shape[0] != 1:
        shape = tuple(prompt_ids.shape) if isinstance(prompt_ids, torch.Tensor) else type(prompt_ids).__name__
        raise ValueError(f"prompt_ids must be a tensor of shape (1, l), got {shape}")


def _next_token(model, prompt_ids, decode, top: int):
    """The model's next-token ``logits (V_padded,)`` float32 after the prompt, their softmax over
    the real vocabulary ``probs (V,)`` float64, the ``top`` likeliest ids and their labels."""
    with torch.no_grad():
        logits = model(prompt_ids, num_last_tokens=1)[0, -1].float()  # (V_padded,)
    vocab = model.config.vocab_size
    probs = torch.softmax(logits[:vocab].double(), dim=-1).cpu().numpy()  # (V,)
    top_ids = np.argsort(-probs, kind="stable")[:top]
    labels = [_token_label(decode, i) for i in top_ids]
    return logits, probs, top_ids, labels


def _draw_controls(ax_bar, ax_text, name, probs, empirical, top_ids, labels, text, width=34, max_lines=9):
    x = np.arange(len(top_ids))
    ax_bar.bar(x, probs[top_ids], color="0.8", label="softmax(logits)")
    ax_bar.bar(x, empirical[top_ids], width=0.5, color="C0", label="sampled (frequency)")
    ax_bar.set_xticks(x, labels, fontsize=8)
    ax_bar.set_ylim(0, min(1.0, 1.15 * max(probs[top_ids].max(), empirical[top_ids].max())))
    kept = int((empirical > 0).sum())
    ax_bar.set_title(f"{name}\n{kept} token(s) ever drawn", fontsize=9)
    ax_text.axis("off")
    lines = []
    for line in text.split("\n"):  # a newline is drawn as a visible mark, then broken
        lines.extend(textwrap.wrap(line, width, replace_whitespace=False, drop_whitespace=False) or [""])
        lines[-1] += "\u21b5"
    lines[-1] = lines[-1][:-1]
    shown = "\n".join(lines[:max_lines]) + ("\n..." if len(lines) > max_lines else "")
    label = ax_text.text(0, 1, shown, family="monospace", fontsize=7, va="top", clip_on=True,
                         parse_math=False)  # generated text may hold '$': never read it as TeX
    label.set_in_layout(False)


def plot_generation_controls(model, prompt_ids, decode, settings: dict, max_new_tokens: int = 80,
                             draws: int = 20000, seed: int = 0, top: int = 10, columns: int = 4):
    """The sampling controls side by side: next-token distribution and a continuation for each.

    For the prompt, the model's next-token logits are sampled ``draws`` times by
    :func:`~minimamba_core.sample_next_token` under each setting (the repetition penalty sees the
    prompt), and the frequencies are drawn over the unfiltered softmax for the ``top`` likeliest
    tokens. Below each, :func:`~minimamba_core.generate` continues the prompt by
    ``max_new_tokens`` tokens with the same controls and seed.

    Args:
        model: a :class:`~minimamba_core.MambaLM` in eval mode.
        prompt_ids: ``(1, l)`` long token ids on the model's device.
        decode: ``list[int] -> str`` (e.g. ``tokenizer.decode``).
        settings: ``{title: {control: value}}``, controls among ``temperature, top_k, top_p,
            min_p, repetition_penalty``.
        draws: samples per setting for the frequencies. seed: seed of every sampler.

    Returns:
        ``(fig, data)``; ``data`` holds ``names``, ``probs (V,)`` (softmax of the real-vocabulary
        logits, float64), ``empirical (len(settings), V)``, ``top_ids (top,)``,
        ``continuations`` (lists of ids) and ``texts`` (decoded continuations).

    Raises:
        ValueError: an empty ``settings``, an unknown control, a prompt not of shape ``(1, l)``;
        a control outside its range (as :func:`~minimamba_core.generate`).
    """
    _check_prompt(model, prompt_ids)
    if not settings:
        raise ValueError("settings must hold at least one {title: {control: value}} entry")
    logits, probs, top_ids, labels = _next_token(model, prompt_ids, decode, top)
    names = list(settings)
    rows = -(-len(names) // columns)
    cols = min(columns, len(names))
    fig, axes = plt.subplots(2 * rows, cols, figsize=(3.4 * cols, 3.4 * rows), squeeze=False,
                             gridspec_kw={"height_ratios": [1, 0.7] * rows})
    empirical, continuations, texts = [], [], []
    for j, name in enumerate(names):
        emp, cont = _measure_controls(model, prompt_ids, logits, dict(settings[name]), draws, seed,
                                      max_new_tokens)
        empirical.append(emp)
        continuations.append(cont)
        texts.append(decode(cont))
        r, c = divmod(j, columns)
        _draw_controls(axes[2 * r, c], axes[2 * r + 1, c], name, probs, emp, top_ids, labels, texts[-1])
    for j in range(len(names), rows * cols):
        r, c = divmod(j, columns)
        axes[2 * r, c].axis("off")
        axes[2 * r + 1, c].axis("off")
    axes[0, 0].legend(fontsize=7, loc="upper right")
    fig.suptitle(f"next token after {decode(prompt_ids[0].tolist())[-30:]!r}, then "
                 f"{max_new_tokens} generated tokens (seed {seed})", fontsize=10)
    fig.tight_layout()
    return fig, {"names": names, "probs": probs, "empirical": np.stack(empirical), "top_ids": top_ids,
                 "continuations": continuations, "texts": texts}


def plot_sampling(model, prompt_ids, decode, temperature: float = 1.0, top_p: float = 1.0,
                  seed: int = 0, max_new_tokens: int = 200, draws: int = 20000, top: int = 15):
    """Temperature and top-p on one prompt with a fixed seed: the widget of notebook 10.

    Left, the frequencies with which :func:`~minimamba_core.sample_next_token` picks each of
    the ``top`` likeliest next tokens (``draws`` draws) over the unfiltered softmax; right,
    the continuation :func:`~minimamba_core.generate` writes with these controls and ``seed``.
    ``temperature == 0`` is greedy decoding.

    Returns:
        ``(fig, data)``; ``data`` as :func:`plot_generation_controls` for one setting, plus
        ``text`` (the continuation) and ``kept`` (how many tokens were ever drawn).
    """
    _check_prompt(model, prompt_ids)
    controls = {"temperature": temperature, "top_p": top_p}
    logits, probs, top_ids, labels = _next_token(model, prompt_ids, decode, top)
    empirical, cont = _measure_controls(model, prompt_ids, logits, controls, draws, seed, max_new_tokens)
    text = decode(cont)
    fig, (ax_bar, ax_text) = plt.subplots(1, 2, figsize=(11, 3.6), gridspec_kw={"width_ratios": [1, 1.3]})
    _draw_controls(ax_bar, ax_text, f"temperature {temperature:g}, top-p {top_p:g}", probs, empirical,
                   top_ids, labels, text, width=72, max_lines=20)
    ax_bar.legend(fontsize=7, loc="upper right")
    ax_text.set_title(f"{max_new_tokens} tokens, seed {seed}", fontsize=9)
    fig.tight_layout()
    return fig, {"names": ["sampling"], "probs": probs, "empirical": empirical[None], "top_ids": top_ids,
                 "continuations": [cont], "texts": [text], "text": text, "kept": int((empirical > 0).sum())}

"""Figure of notebook 05: the Mamba block as the merge of the H3 block and a gated MLP.

Our own drawing, in the layout of the Mamba paper's Figure 3 (Gu & Dao 2023, Section 3.4):
three block diagrams side by side, input at the bottom, output at the top.

- **H3** (Fu et al. 2023, "Hungry Hungry Hippos"): three projections (the paper's ``Q, K, V``); ``K``
  passes a *shift SSM* (a short convolution over the last few tokens), is multiplied by ``V``,
  passes a diagonal SSM, and is multiplied by ``Q``; a last projection.
- **Gated MLP** (GLU family, Shazeer 2020): two projections, one through a nonlinearity
  ``sigma``; their product; a last projection.
- **Mamba**: H3 with its first multiplicative gate replaced by ``sigma`` (SiLU), and the
  selective SSM; seen from the other side, a gated MLP with a convolution and an SSM on its
  main branch. Each box carries the name of the :class:`~minimamba_core.mixer.MambaMixer`
  parameters it holds.

:func:`plot_block_diagram` returns ``(fig, data)``; tests/test_viz_diagram.py asserts on ``data``
and on the texts drawn. No official counterpart (a figure).
"""

from __future__ import annotations

import matplotlib.pyplot as plt
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch

# Colours by kind of box: projections, the sequence mixers, nonlinearities, products.
KIND_COLOURS = {"linear": "#cfe2f3", "conv": "#fce5cd", "ssm": "#f4cccc", "act": "#d9ead3", "mul": "white"}

# node: (name, label, kind, x, y, parameters); edges: (from, to). x in [0, 2], y upwards.
_H3 = dict(
    nodes=[("in", "input", None, 1.9, 0.0, ""),
           ("k", "Linear (K)", "linear", 0.7, 1.0, ""), ("v", "Linear (V)", "linear", 1.9, 1.0, ""),
           ("q", "Linear (Q)", "linear", 3.1, 1.0, ""),
           ("conv", "Conv\n(shift SSM)", "conv", 0.7, 2.0, ""), ("kv", "×", "mul", 0.7, 3.0, ""),
           ("ssm", "SSM\n(diagonal)", "ssm", 0.7, 4.0, ""), ("gate", "×", "mul", 0.7, 5.0, ""),
           ("out_proj", "Linear", "linear", 0.7, 6.0, ""), ("out", "output", None, 0.7, 7.0, "")],
    edges=[("in", "q"), ("in", "k"), ("in", "v"), ("k", "conv"), ("conv", "kv"), ("v", "kv"),
           ("kv", "ssm"), ("ssm", "gate"), ("q", "gate"), ("gate", "out_proj"), ("out_proj", "out")])
_GATED_MLP = dict(
    nodes=[("in", "input", None, 1.9, 0.0, ""),
           ("x", "Linear", "linear", 1.2, 1.0, ""), ("z", "Linear", "linear", 2.6, 1.0, ""),
           ("act", "σ", "act", 2.6, 3.0, ""), ("gate", "×", "mul", 1.2, 5.0, ""),
           ("out_proj", "Linear", "linear", 1.2, 6.0, ""), ("out", "output", None, 1.2, 7.0, "")],
    edges=[("in", "x"), ("in", "z"), ("z", "act"), ("x", "gate"), ("act", "gate"), ("gate", "out_proj"),
           ("out_proj", "out")])
_MAMBA = dict(
    nodes=[("in", "input", None, 1.9, 0.0, ""),
           ("x", "Linear (x)", "linear", 1.2, 1.0, "in_proj"), ("z", "Linear (z)", "linear", 2.6, 1.0, "in_proj"),
           ("conv", "Conv", "conv", 1.2, 2.0, "conv1d"), ("act_x", "σ", "act", 1.2, 3.0, ""),
           ("ssm", "SSM\n(selective)", "ssm", 1.2, 4.0, "x_proj, dt_proj,\nA_log, D"),
           ("act_z", "σ", "act", 2.6, 3.0, ""), ("gate", "×", "mul", 1.2, 5.0, ""),
           ("out_proj", "Linear", "linear", 1.2, 6.0, "out_proj"), ("out", "output", None, 1.2, 7.0, "")],
    edges=[("in", "x"), ("in", "z"), ("x", "conv"), ("conv", "act_x"), ("act_x", "ssm"), ("ssm", "gate"),
           ("z", "act_z"), ("act_z", "gate"), ("gate", "out_proj"), ("out_proj", "out")])
BLOCKS = {"H3": _H3, "Gated MLP": _GATED_MLP, "Mamba": _MAMBA}


def _draw(ax, spec: dict, title: str) -> None:
    """Boxes, circles for products, arrows for ``spec`` on ``ax``."""
    where = {name: (x, y) for name, _, _, x, y, _ in spec["nodes"]}
    kinds = {name: kind for name, _, kind, _, _, _ in spec["nodes"]}
    for name, label, kind, x, y, params in spec["nodes"]:
        if kind is None:  # input / output: plain text
            ax.text(x, y, label, ha="center", va="center", fontsize=9, style="italic")
        elif kind == "mul":
            ax.plot([x], [y], "o", ms=18, mfc="white", mec="k", mew=1.2)
            ax.text(x, y, label, ha="center", va="center", fontsize=12)
        else:
            w, h = (1.05, 0.7) if "\n" in label else (1.05, 0.5)
            ax.add_patch(FancyBboxPatch((x - w / 2, y - h / 2), w, h, boxstyle="round,pad=0.03",
                                        fc=KIND_COLOURS[kind], ec="k", lw=1.0))
            ax.text(x, y, label, ha="center", va="center", fontsize=9)
        if params:  # the mixer's parameter names: left of the main branch, right of the side one
            side = -1 if x < 1.9 else 1
            ax.text(x + side * 0.6, y, params, ha="right" if side < 0 else "left", va="center", fontsize=7.5,
                    family="monospace", color="0.3")
    for a, b in spec["edges"]:
        (xa, ya), (xb, yb) = where[a], where[b]
        shrink_a = 12 if kinds[a] in ("mul", None) else 16
        shrink_b = 12 if kinds[b] in ("mul", None) else 16
        if xa != xb and ya + 1.5 < yb:  # a side branch joining higher up: go up, then across
            style = "angle,angleA=90,angleB=0,rad=0"
        else:
            style = "arc3,rad=0"
        ax.add_patch(FancyArrowPatch((xa, ya), (xb, yb), connectionstyle=style, arrowstyle="-|>",
                                     mutation_scale=10, lw=1.0, color="0.2", shrinkA=shrink_a, shrinkB=shrink_b))
    ax.set_xlim(-0.5, 3.8)
    ax.set_ylim(-0.4, 7.4)
    ax.axis("off")
    ax.set_title(title, fontsize=11)


def plot_block_diagram():
    """The H3 block, a gated MLP, and the Mamba block that merges them (paper Figure 3's layout).

    Returns ``(fig, data)``; ``data``: ``labels`` (dict block name -> list of box labels, bottom
    to top as listed), ``edges`` (dict block name -> list of ``(from, to)`` node names) and
    ``parameters`` (the :class:`~minimamba_core.mixer.MambaMixer` parameter names written next to
    the Mamba block's boxes, each once).
    """
    fig, axes = plt.subplots(1, 3, figsize=(12, 6.4))
    for ax, (title, spec) in zip(axes, BLOCKS.items()):
        _draw(ax, spec, title)
    fig.text(0.5, 0.02, "blue: linear projections   orange: convolution   red: SSM   green: σ (SiLU)   "
             "×: elementwise product (the gate)", ha="center", fontsize=8, color="0.3")
    fig.tight_layout(rect=(0, 0.05, 1, 1))
    params = []
    for *_, p in _MAMBA["nodes"]:
        for name in p.replace("\n", " ").split(","):
            if name.strip() and name.strip() not in params:
                params.append(name.strip())
    data = dict(labels={t: [n[1] for n in s["nodes"] if n[2] is not None] for t, s in BLOCKS.items()},
                edges={t: list(s["edges"]) for t, s in BLOCKS.items()}, parameters=params)
    return fig, data

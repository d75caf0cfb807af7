"""The block diagram of notebook 05 (``minimamba_core/viz/diagram.py``): it draws the three blocks
of the Mamba paper's Figure 3 layout, and the Mamba block's boxes name every mixer parameter."""

import matplotlib

matplotlib.use("agg")

import matplotlib.pyplot as plt  # noqa: E402

import minimamba_core as mm  # noqa: E402
from minimamba_core import viz  # noqa: E402


def _texts(fig):
    return [t.get_text() for ax in fig.axes for t in ax.texts] + [ax.get_title() for ax in fig.axes]


def test_draws_three_blocks_with_their_boxes():
    fig, data = viz.plot_block_diagram()
    try:
        assert [ax.get_title() for ax in fig.axes] == ["H3", "Gated MLP", "Mamba"]
        drawn = _texts(fig)
        for block, labels in data["labels"].items():
            assert all(label in drawn for label in labels), block
        # The blocks as the paper describes them (Section 3.4, Figure 3): H3 has two products and a
        # convolution before its SSM; the gated MLP one product and no SSM; Mamba one product,
        # a convolution, an SSM, and a nonlinearity where H3 has its first product.
        count = {b: {k: sum(k in lab for lab in labels) for k in ("×", "SSM", "Conv", "σ", "Linear")}
                 for b, labels in data["labels"].items()}
        assert count["H3"] == {"×": 2, "SSM": 2, "Conv": 1, "σ": 0, "Linear": 4}  # 'shift SSM' in the Conv box
        assert count["Gated MLP"] == {"×": 1, "SSM": 0, "Conv": 0, "σ": 1, "Linear": 3}
        assert count["Mamba"] == {"×": 1, "SSM": 1, "Conv": 1, "σ": 2, "Linear": 3}
    finally:
        plt.close(fig)


def test_edges_join_drawn_nodes_and_reach_the_output():
    fig, data = viz.plot_block_diagram()
    plt.close(fig)
    for block, edges in data["edges"].items():
        reach, grew = {"in"}, True
        while grew:  # everything reachable from the input
            new = {b for a, b in edges if a in reach} - reach
            reach |= new
            grew = bool(new)
        assert "out" in reach, block
        nodes = {n for e in edges for n in e}
        assert nodes == reach, f"{block}: a node not fed by the input"


def test_mamba_boxes_name_every_mixer_parameter():
    config = mm.MambaConfig(d_model=8, n_layer=1, vocab_size=16)
    mixer = mm.MambaMixer(config)
    top_level = {name.split(".")[0] for name, _ in mixer.named_parameters()}
    fig, data = viz.plot_block_diagram()
    plt.close(fig)
    assert set(data["parameters"]) == top_level  # in_proj, conv1d, x_proj, dt_proj, A_log, D, out_proj
    drawn = " ".join(_texts(fig))
    assert all(name in drawn for name in top_level)

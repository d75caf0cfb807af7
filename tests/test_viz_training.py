"""The training plots of notebooks 08 and 09 (``minimamba_core/viz/training.py``): the data
behind each figure."""

import matplotlib

matplotlib.use("agg")

import matplotlib.container  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from minimamba_core import viz  # noqa: E402


def test_plot_bigram_and_loss_curves():
    counts = torch.tensor([[0.0, 3.0, 1.0], [2.0, 0.0, 0.0], [1.0, 1.0, 0.0]])  # row sums 4, 2, 2
    fig, data = viz.plot_bigram(counts, ["a", " ", "\n"], top=2)
    assert list(data["ids"]) == [0, 1] and data["labels"] == ["a", "␣"]
    assert data["probs"][0, 1] == pytest.approx(1.0) and data["probs"][1, 0] == pytest.approx(1.0)
    plt.close(fig)
    with pytest.raises(ValueError, match="top must be"):
        viz.plot_bigram(counts, ["a", "b", "c"], top=4)
    fig, data = viz.plot_loss_curves([0, 1, 2, 3], [4.0, 2.0, 2.0, 0.0], [2, 4], [3.0, 1.5],
                                     baselines={"bigram": 2.48}, smooth=2)
    assert data["smoothed"].tolist() == [4.0, 3.0, 2.0, 1.0] and data["final_val"] == 1.5
    plt.close(fig)
    with pytest.raises(ValueError, match="pair up"):
        viz.plot_loss_curves([0, 1], [1.0], [1], [1.0])


def test_task_plots():
    x = torch.tensor([0, 3, 0, 5, 15, 15])
    y = torch.tensor([-100, -100, -100, -100, 3, 5])
    fig, data = viz.plot_task_example(x, y, {"S6": torch.tensor([0, 0, 0, 0, 3, 5]),
                                             "LTI": torch.tensor([0, 0, 0, 0, 3, 4])},
                                      special=(15,), noise=0)
    assert data["asked"].tolist() == [4, 5]
    assert data["S6"]["correct"].tolist() == [True, True] and data["LTI"]["correct"].tolist() == [True, False]
    plt.close(fig)
    fig, final = viz.plot_accuracy_curves({"a": ([1, 2], [0.1, 0.5])}, chance=0.07)
    assert final == {"a": 0.5}
    plt.close(fig)
    fig, data = viz.plot_length_generalization({"S6": {"1024": 0.9, "256": 1.0}}, 256, threshold=0.9)
    assert data["S6"] == ([256, 1024], [1.0, 0.9])
    plt.close(fig)
    fig, data = viz.plot_length_generalization({"S6": {"1024": 0.9, "256": 1.0}, "LTI": {256: 0.1}}, 256,
                                               stderr={"S6": {1024: 0.02, 256: 0.0}})
    assert data["stderr"] == {"S6": [0.0, 0.02]} and data["LTI"] == ([256], [0.1])
    bars = [c for c in fig.axes[0].containers if isinstance(c, matplotlib.container.ErrorbarContainer)]
    assert len(bars) == 1  # S6 only
    segments = bars[0].lines[2][0].get_segments()  # one vertical bar per length: (x, acc -+ s.e.)
    assert [tuple(map(tuple, seg)) for seg in segments] == [((256, 1.0), (256, 1.0)), ((1024, 0.88), (1024, 0.92))]
    plt.close(fig)

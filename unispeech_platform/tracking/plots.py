"""Plots logged as run artifacts (matplotlib, headless)."""

from __future__ import annotations

import tempfile

PLOTTED = ("loss", "ctc_loss", "contrastive_loss", "dev_loss")
"""The curves of a training run's loss plot."""


def loss_plot(curves: dict[str, list[tuple[int, float]]]) -> str | None:
    """PNG path of the given (step, value) curves on one axis, or None when there is nothing to plot."""
    if not curves:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for name, points in curves.items():
        points = sorted(points)
        ax.plot([s for s, _ in points], [v for _, v in points], label=name)
    ax.set_xlabel("update")
    ax.set_ylabel("loss")
    ax.legend()
    ax.grid(alpha=0.3)
    path = tempfile.mkdtemp(prefix="unispeech-plot-") + "/loss.png"
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)
    return path

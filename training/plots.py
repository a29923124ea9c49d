"""Training curves written as PNG (people look at curves, they do not read logs)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np


def plot_curve(history: Sequence[tuple[int, float]], path: Path, ylabel: str, *,
               smooth: bool = False, log_y: bool = False) -> None:
    """``history`` of (step, value); ``smooth`` averages over ~1% of the run."""
    if not history:
        return
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps, values = (np.asarray(v) for v in zip(*history))
    if smooth:
        window = max(1, len(values) // 100)
        values = np.convolve(values, np.ones(window) / window, mode="valid")
        steps = steps[: len(values)]
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot(steps, values)
    ax.set_xlabel("step")
    ax.set_ylabel(ylabel)
    if log_y:
        ax.set_yscale("log")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)

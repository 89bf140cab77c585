"""The figure notebook 02 shows for the augmentation: a confusion matrix of filled vs true values."""
from __future__ import annotations

import matplotlib.pyplot as plt
import pandas as pd


def confusion_plot(matrix: pd.DataFrame, title: str, ax: plt.Axes | None = None) -> plt.Axes:
    """Counts (lib.augment.confusion_matrix) as a heat map with the numbers written in; rows are the
    true values, so a good fill is a bright diagonal."""
    if ax is None:
        size = 1.2 + 0.45 * max(len(matrix.columns), 2)
        _, ax = plt.subplots(figsize=(size + 1, size))
    image = ax.imshow(matrix.to_numpy(), cmap="Blues")
    ax.set_xticks(range(len(matrix.columns)), [str(c) for c in matrix.columns], rotation=45, ha="right")
    ax.set_yticks(range(len(matrix.index)), [str(i) for i in matrix.index])
    ax.set_xlabel(matrix.columns.name or "filled")
    ax.set_ylabel(matrix.index.name or "true")
    top = matrix.to_numpy().max() if matrix.size else 0
    for (r, c), count in pd.DataFrame(matrix.to_numpy()).stack().items():
        if count:
            ax.text(c, r, str(count), ha="center", va="center", fontsize=7,
                    color="white" if count > top / 2 else "black")
    ax.set_title(title)
    ax.figure.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
    return ax

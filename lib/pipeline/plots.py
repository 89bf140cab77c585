"""Figures the notebooks show (image grids, counts, confusion matrices, training curves), kept out of
the notebooks so that every cell is one call and a look.
"""
from __future__ import annotations

import textwrap
from collections.abc import Sequence
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd

from lib.augment import agreement
from lib.data import images
from lib.files import atomic_write


def image_grid(paths: Sequence[Path], captions: Sequence[str], ncols: int = 6,
               width: float = 2.2) -> plt.Figure:
    """Images with their captions above them, `ncols` a row."""
    n = len(paths)
    if n == 0:  # e.g. augmentation switched off: say so instead of failing
        fig, ax = plt.subplots(figsize=(width * 2, width / 2))
        ax.axis("off")
        ax.text(0.5, 0.5, "no images to show", ha="center", va="center")
        return fig
    nrows = max(1, -(-n // ncols))
    fig, axes = plt.subplots(nrows, ncols, figsize=(width * ncols, width * 1.45 * nrows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, path, caption in zip(axes.flat, paths, captions):
        ax.imshow(images.read_image(path))
        ax.set_title("\n".join(textwrap.wrap(caption, 28)[:5]), fontsize=7, loc="left")
    fig.tight_layout()
    return fig


def raw_vs_padded(paths: Sequence[Path], captions: Sequence[str], width: float = 2.4) -> plt.Figure:
    """Each image as stored and as padded to a square: why padding matters for wide cars."""
    fig, axes = plt.subplots(2, len(paths), figsize=(width * len(paths), width * 2.4), squeeze=False)
    for col, (path, caption) in enumerate(zip(paths, captions)):
        img = images.read_image(path)
        axes[0, col].imshow(img)
        axes[0, col].set_title("\n".join(textwrap.wrap(caption, 30)[:4]), fontsize=7, loc="left")
        axes[1, col].imshow(images.pad_to_square(img))
        axes[1, col].set_title(f"padded {max(img.shape[:2])}²", fontsize=7)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    axes[0, 0].set_ylabel("raw")
    axes[1, 0].set_ylabel("padded")
    fig.tight_layout()
    return fig


def counts_bar(table: pd.DataFrame, column: str, title: str, ax: plt.Axes | None = None) -> plt.Axes:
    """Horizontal bars of a column's value counts (missing values shown as '(missing)')."""
    counts = table[column].replace("", "(missing)").fillna("(missing)").value_counts().sort_values()
    ax = ax or plt.subplots(figsize=(5, 0.22 * len(counts) + 1))[1]
    if counts.empty:
        ax.text(0.5, 0.5, "no rows", ha="center", va="center", transform=ax.transAxes)
    else:
        counts.plot.barh(ax=ax, color="#4c72b0")
    ax.set_title(title)
    ax.set_xlabel("lines")
    return ax


def confusion_plot(matrix: pd.DataFrame, title: str, ax: plt.Axes | None = None) -> plt.Axes:
    """Counts as a heat map, numbers written in; rows are the truth, so a good fill is a bright diagonal."""
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


def filled_fields(changed: pd.DataFrame, fields: Sequence[str]) -> plt.Figure:
    """What attribute augmentation filled: one bar chart per field it fills (`attribute_fields`)."""
    fig, axes = plt.subplots(1, max(len(fields), 1), figsize=(5 * max(len(fields), 1), 4), squeeze=False)
    for ax, field in zip(axes.flat, fields):
        filled = changed[changed[f"filled_{field}"].astype(str).str.strip() != ""]
        counts_bar(filled, f"filled_{field}", f"filled {field} ({len(filled):,} captions)", ax=ax)
    fig.tight_layout()
    return fig


def fill_confusions(augmented: pd.DataFrame, truth: pd.DataFrame, fields: Sequence[str]) -> plt.Figure:
    """The true value against the filled one, one heat map per field that was filled."""
    fig, axes = plt.subplots(1, max(len(fields), 1), figsize=(6.5 * max(len(fields), 1), 5.5), squeeze=False)
    for ax, field in zip(axes.flat, fields):
        confusion_plot(agreement.confusion_matrix(augmented, truth, field), field, ax=ax)
    fig.tight_layout()
    return fig


def topk_grid(queries: Sequence[str], ranked: Sequence[Sequence[str]], paths: dict[str, Path],
              relevant: Sequence[set[str]] | None = None, k: int = 5, width: float = 1.6) -> plt.Figure:
    """One row per query: its text, then its k best images (green frame: relevant, red: not)."""
    fig, axes = plt.subplots(len(queries), k + 1, figsize=(width * (k + 2), width * 1.15 * len(queries)),
                             squeeze=False, gridspec_kw={"width_ratios": [2] + [1] * k})
    for row, (query, names) in enumerate(zip(queries, ranked)):
        axes[row, 0].text(0, 0.5, "\n".join(textwrap.wrap(query, 34)[:6]), fontsize=7, va="center")
        for col, name in enumerate(names[:k], start=1):
            ax = axes[row, col]
            ax.imshow(images.pad_to_square(images.read_image(paths[name])))
            if relevant is not None:
                colour = "#2ca02c" if name in relevant[row] else "#d62728"
                for side in ax.spines.values():
                    side.set_edgecolor(colour)
                    side.set_linewidth(3)
            ax.set_title(name, fontsize=6)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    for ax in axes[:, 0]:
        ax.axis("off")
    fig.tight_layout()
    return fig


def training_curves(rows: Sequence[dict], title: str = "") -> plt.Figure:
    """Loss, learning rate and val mAP@10 by epoch, from metrics.jsonl rows (epoch 0 = start)."""
    table = pd.DataFrame(rows).set_index("epoch")
    panels = [("loss", ["train_loss", "val_loss"]), ("learning rate", ["lr"]),
              ("val mAP@10", ["val_map10_official", "val_map10_standard", "val_car_map10_official",
                              "val_person_map10_official"])]
    fig, axes = plt.subplots(1, 3, figsize=(15, 3.6))
    for ax, (name, columns) in zip(axes, panels):
        present = [c for c in columns if c in table and table[c].notna().any()]
        for column in present:
            ax.plot(table.index, table[column], marker="o", label=column)
        ax.set_title(name)
        ax.set_xlabel("epoch")
        if present:
            ax.legend(fontsize=7)
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def keep(fig: plt.Figure | plt.Axes, folder: str | Path, name: str) -> plt.Figure:
    """Save the figure as `<folder>/figures/<name>.png` too, and return it closed, so that only the
    cell's result displays it (exactly once, as nbval expects)."""
    fig = fig.figure if isinstance(fig, plt.Axes) else fig
    path = Path(folder) / "figures" / f"{name}.png"
    atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=100, bbox_inches="tight"))
    plt.close(fig)
    return fig

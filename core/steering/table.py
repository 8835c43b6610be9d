"""The steering table (one row per method x strength x split) and its plots."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pandas as pd

from core.steering.sweep import ROW_COLUMNS


def steering_table(rows: Sequence[dict[str, Any]]) -> pd.DataFrame:
    """Rows as a DataFrame with the fixed columns first."""
    df = pd.DataFrame(list(rows))
    for c in ROW_COLUMNS:
        if c not in df.columns:
            df[c] = None
    return df[list(ROW_COLUMNS) + [c for c in df.columns if c not in ROW_COLUMNS]]


def chosen_rows(rows: Sequence[dict[str, Any]]) -> pd.DataFrame:
    """The held-out (score half) rows: each method at its chosen strength, plus the unsteered model."""
    df = steering_table(rows)
    return df[df["split"] == "score"].drop_duplicates(subset=["method", "layer", "strength"])


def plot_sweep(rows: Sequence[dict[str, Any]], *, behaviour_label: str = "behaviour", title: str = ""):
    """Behaviour and fluency against strength on the select half, one line per method.

    The unsteered model is drawn as a horizontal line; the chosen strength is marked.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    df = steering_table(rows)
    sel = df[df["split"] == "select"]
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    for method, g in sel[sel["method"] != "none"].groupby("method", sort=False):
        g = g.sort_values("strength")
        for ax, col in zip(axes, ("behaviour", "fluency"), strict=True):
            line, = ax.plot(g["strength"], g[col], marker="o", label=str(method))
            ch = g[g["chosen"].astype(bool)]
            ax.scatter(ch["strength"], ch[col], s=120, facecolors="none", edgecolors=line.get_color())
    base = sel[sel["method"] == "none"]
    for ax, col, lab in zip(axes, ("behaviour", "fluency"), (behaviour_label, "perplexity (unsteered scorer)"), strict=True):
        if len(base):
            ax.axhline(float(base[col].iloc[0]), color="grey", ls="--", label="unsteered")
        ax.set_xlabel("strength")
        ax.set_ylabel(lab)
    axes[0].legend(fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig

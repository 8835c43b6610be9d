"""Figures of a comparison (matplotlib, Agg): returned as figures for ``core.report.html.Report``."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402


def max_cosine_hist(best_ab: np.ndarray, best_ba: np.ndarray, chance: tuple[float, float],
                    labels: tuple[str, str] = ("a", "b")):
    """Distribution of each feature's best decoder cosine in the other dictionary, with the
    level random unit vectors would reach."""
    fig, ax = plt.subplots(figsize=(6, 3.4))
    bins = np.linspace(-0.1, 1.0, 56)
    ax.hist(best_ab, bins=bins, alpha=0.6, label=f"{labels[0]} -> {labels[1]}")
    ax.hist(best_ba, bins=bins, alpha=0.6, label=f"{labels[1]} -> {labels[0]}")
    for c, ls in zip(chance, ("--", ":"), strict=True):
        ax.axvline(c, color="k", ls=ls, lw=1)
    ax.set_xlabel("max decoder cosine with the other dictionary (dashed: random unit vectors)")
    ax.set_ylabel("features")
    ax.legend(fontsize=8)
    return fig


def stitching_curve(family: pd.DataFrame, originals: Mapping[str, Mapping[str, float]], *, y: str = "fvu"):
    """The stitched family's error against L0, beside the original dictionaries."""
    fig, ax = plt.subplots(figsize=(6, 3.8))
    for stage, marker in (("small", "o"), ("add_novel", "o"), ("swap", "s")):
        part = family[family["stage"] == stage]
        if len(part):
            ax.plot(part["l0"], part[y], marker=marker, ms=4, lw=1, label=f"stitched: {stage}")
    for name, point in originals.items():
        ax.scatter([point["l0"]], [point[y]], marker="*", s=140, zorder=5, label=name)
    ax.set_xlabel("L0 (active latents per token, held-out)")
    ax.set_ylabel(y.upper() if y == "fvu" else y)
    ax.legend(fontsize=7)
    return fig


def lifecycle_curve(table: pd.DataFrame, title: str = ""):
    """Share of the final features present at each snapshot, and the median drift angle."""
    fig, ax = plt.subplots(figsize=(6, 3.6))
    for col in [c for c in table.columns if c.startswith("present_")]:
        ax.plot(table["fraction"], table[col], marker="o", ms=4, label=f"final features present (cos > {col[8:]})")
    ax.set_xlabel("fraction of training")
    ax.set_ylabel("share of final features")
    ax.set_ylim(0, 1.02)
    ax2 = ax.twinx()
    ax2.plot(table["fraction"], table["median_angle_deg"], color="grey", ls="--", marker=".",
             label="median angle to final (deg)")
    ax2.set_ylabel("median angle to final direction (deg)")
    lines = ax.get_legend_handles_labels()
    more = ax2.get_legend_handles_labels()
    ax.legend(lines[0] + more[0], lines[1] + more[1], fontsize=7, loc="center right")
    if title:
        ax.set_title(title, fontsize=9)
    return fig


def splitting_bars(counts: Mapping[str, Mapping[str, int]]):
    """Per width step, the small features kept 1-to-1, split 1-to-many, or orphaned."""
    names = list(counts)
    fig, ax = plt.subplots(figsize=(max(6.0, 1.1 * len(names)), 3.6))
    bottom = np.zeros(len(names))
    for key in ("one_to_one", "one_to_many", "orphan"):
        vals = np.array([counts[n][key] / max(counts[n]["n_small"], 1) for n in names])
        ax.bar(names, vals, bottom=bottom, label=key.replace("_", " "))
        bottom += vals
    ax.set_ylabel("share of the smaller dictionary's features")
    ax.legend(fontsize=8)
    ax.tick_params(axis="x", labelsize=7)
    return fig


def line_by(xs: Sequence, series: Mapping[str, Sequence[float]], *, xlabel: str, ylabel: str,
            chance: Sequence[float] | None = None, logx: bool = False):
    """Several named series over the same x values (e.g. seed agreement against width)."""
    fig, ax = plt.subplots(figsize=(6, 3.4))
    for name, ys in series.items():
        ax.plot(xs, ys, marker="o", ms=4, label=name)
    if chance is not None:
        ax.plot(xs, chance, color="k", ls="--", lw=1, label="random unit vectors")
    if logx:
        ax.set_xscale("log", base=2)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_ylim(0, 1.02)
    ax.legend(fontsize=8)
    return fig

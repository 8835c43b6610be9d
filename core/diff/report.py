"""Figures of a model diff: the relative-norm histogram with its cut-offs, Latent Scaling's
two ratios for the exclusive latents, and a multi-layer crosscoder's depth profile."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from core.diff.norms import Cutoffs


def histogram_figure(r: np.ndarray, cut: Cutoffs, names: Sequence[str] = ("A", "B")):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 3.2))
    ax.hist(r[~np.isnan(r)], bins=50, range=(0, 1), color="#4477aa")
    for x in (cut.a_only, cut.shared_low, cut.shared_high, cut.b_only):
        ax.axvline(x, color="#aa3377", lw=0.8, ls="--")
    ax.set_xlabel(f"relative decoder norm (0 = only {names[0]}, 1 = only {names[1]})")
    ax.set_ylabel("latents")
    ax.set_yscale("log")
    return fig


def scaling_figure(nu, classes: Sequence[str], tau: float):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    c = np.asarray(classes, dtype=object)
    fig, ax = plt.subplots(figsize=(5, 4))
    for name, color in (("a_only", "#228833"), ("b_only", "#ee6677")):
        m = c == name
        ax.scatter(nu["nu_r"][m], nu["nu_eps"][m], s=8, alpha=0.6, color=color, label=name)
    ax.axvline(tau, color="grey", lw=0.8, ls="--")
    ax.axhline(tau, color="grey", lw=0.8, ls="--")
    ax.set_xlabel("nu_r (other model's reconstruction without the latent)")
    ax.set_ylabel("nu_eps (other model's error)")
    ax.set_xscale("symlog", linthresh=0.05)
    ax.set_yscale("symlog", linthresh=0.05)
    ax.legend()
    return fig


def depth_figure(shares: np.ndarray, names: Sequence[str], classes: Sequence[str]):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    c = np.asarray(classes, dtype=object)
    fig, ax = plt.subplots(figsize=(6, 3.2))
    for name in sorted(set(c) - {"dead"}):
        m = c == name
        ax.plot(range(len(names)), np.nanmean(shares[m], axis=0), marker="o", label=f"{name} ({int(m.sum())})")
    ax.set_xticks(range(len(names)), list(names))
    ax.set_ylabel("mean decoder-norm share")
    ax.legend(fontsize=7)
    return fig

"""Per-residue activation tracks: a feature's activation along a sequence, its annotation beneath.

The picture a reader checks first: does the "CDR3 feature" light up on the CDR3 and
nowhere else? One panel per sequence, one line per feature (scaled to its maximum over
the shown sequences), and a coloured bar of the annotated regions under the residues.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

REGION_COLOURS = {"FR1": "#c7d7ea", "CDR1": "#e4572e", "FR2": "#9fbbd9", "CDR2": "#f3a712",
                  "FR3": "#76a0c8", "CDR3": "#a8201a", "FR4": "#4d7fb0"}


def track_figure(sequences: Sequence[str], names: Sequence[str], tracks: Sequence[dict[str, np.ndarray]],
                 regions: Sequence[Sequence[str | None]], *, colours: dict[str, str] | None = None,
                 title: str = ""):
    """A matplotlib figure: for sequence ``i``, ``tracks[i]`` maps a label to per-residue values
    and ``regions[i]`` gives each residue's region (or None)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import ListedColormap
    from matplotlib.patches import Patch

    colours = colours or REGION_COLOURS
    labels = list(dict.fromkeys(k for t in tracks for k in t))
    peak = {k: max((float(np.max(t[k])) for t in tracks if k in t and len(t[k])), default=1.0) or 1.0
            for k in labels}
    names_reg = list(colours)
    cmap = ListedColormap(["#ffffff"] + [colours[r] for r in names_reg])
    n = len(sequences)
    fig, axes = plt.subplots(2 * n, 1, figsize=(12, 2.3 * n),
                             gridspec_kw={"height_ratios": [4, 0.6] * n}, squeeze=False)
    line_colours = plt.get_cmap("tab10")
    for i, (seq, nm) in enumerate(zip(sequences, names, strict=True)):
        ax, bar = axes[2 * i, 0], axes[2 * i + 1, 0]
        x = np.arange(len(seq))
        for j, k in enumerate(labels):
            if k in tracks[i]:
                ax.plot(x, tracks[i][k] / peak[k], label=k, color=line_colours(j % 10), lw=1.3)
        ax.set_xlim(-0.5, len(seq) - 0.5)
        ax.set_ylim(-0.05, 1.1)
        ax.set_ylabel("act / max", fontsize=8)
        ax.set_title(nm, fontsize=9, loc="left")
        ax.set_xticks([])
        codes = np.array([[names_reg.index(r) + 1 if r in names_reg else 0 for r in regions[i]]])
        bar.imshow(codes, aspect="auto", cmap=cmap, vmin=0, vmax=len(names_reg), interpolation="nearest",
                   extent=(-0.5, len(seq) - 0.5, 0, 1))
        bar.set_yticks([])
        step = max(1, len(seq) // 60)
        bar.set_xticks(x[::step])
        bar.set_xticklabels(list(seq[::step]), fontsize=6, family="monospace")
    axes[0, 0].legend(fontsize=7, ncol=min(6, len(labels)), loc="upper right")
    handles = [Patch(color=colours[r], label=r) for r in names_reg]
    fig.legend(handles=handles, loc="lower center", ncol=len(handles), fontsize=7, frameon=False)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout(rect=(0, 0.03, 1, 0.97))
    return fig


def pick_track_samples(splits: dict[int, str], n: int, seed: int = 0) -> list[int]:
    """``n`` test-split samples to draw tracks for: held-out chains, drawn at random so the
    figure shows typical chains rather than the ones a feature was chosen on."""
    test = sorted(i for i, s in splits.items() if s == "test")
    rng = np.random.default_rng(seed)
    return sorted(rng.choice(test, size=min(n, len(test)), replace=False).tolist()) if test else []


def feature_tracks(sae, store, sample: int, features: dict[str, int]) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Positions and SAE activations of ``features`` (label -> latent index) for one sample."""
    import torch

    acts, pos = [], []
    for shard in store.iter_shards(columns=("acts", "sample", "position")):
        m = shard["sample"] == sample
        if bool(m.any()):
            acts.append(shard["acts"][m])
            pos.append(shard["position"][m])
    if not acts:
        return np.zeros(0, dtype=np.int64), {k: np.zeros(0) for k in features}
    x = torch.cat(acts).float()
    p = torch.cat(pos).numpy()
    order = np.argsort(p)
    with torch.no_grad():
        f = sae.encode(x)
    idx = list(features.values())
    vals = f[:, idx].numpy()[order]
    return p[order], {k: vals[:, j] for j, k in enumerate(features)}

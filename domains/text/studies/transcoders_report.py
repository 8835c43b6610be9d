"""``report.html`` of the ``transcoders`` case study: the per-layer table, the all-layers splice,
CE recovered against L0 and reconstruction against interpretability (Paulo et al.'s axes)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

COLORS = {"sae": "#1f77b4", "plt": "#ff7f0e", "skip": "#2ca02c", "clt": "#d62728"}
MARKERS = "osD^v<>"
COLUMNS = ["layer", "kind", "fvu", "l0", "dead_frac", "ce_recovered", "ce_recovered_mean", "kl", "interp_f1",
           "neuron_f1"]


def _scatter(rows: list[dict[str, Any]], x: str, y: str, xlabel: str, ylabel: str):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.0, 4.2))
    layers = sorted({r["layer"] for r in rows})
    for r in rows:
        if r.get(x) is None or r.get(y) is None:
            continue
        ax.scatter(r[x], r[y], color=COLORS[r["kind"]], marker=MARKERS[layers.index(r["layer"]) % len(MARKERS)], s=46)
    for kind, c in COLORS.items():
        ax.scatter([], [], color=c, label=kind)
    for i, layer in enumerate(layers):
        ax.scatter([], [], color="grey", marker=MARKERS[i % len(MARKERS)], label=f"layer {layer}")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.legend(fontsize=8, ncol=2)
    ax.grid(alpha=0.3)
    return fig


def write_report(run_dir: Path, results: dict[str, Any]) -> Path:
    from core.report.html import Report

    rows = results["transcoders"]
    rep = Report("Transcoders vs SAEs on SmolLM2-135M's MLPs", run_dir)
    rep.text(f"Layers {results['layers']}; {results['tokens']['harvested']:,} harvested tokens (Python "
             f"standard-library docstrings, first token of each left out), "
             f"{results['tokens']['trained_per_dictionary']:,} training tokens per dictionary, "
             f"{results['tokens']['spliced_scored']:,} held-out tokens scored in the splice "
             f"(clean CE {results['clean_ce']:.3f} nats).")
    rep.text(f"L0 matching: {results['l0_matching']}.", muted=True)
    rep.heading("Per layer")
    rep.table([{c: r.get(c) for c in COLUMNS} for r in rows], floatfmt="{:.4g}",
              caption="fvu: of the MLP output on held-out tokens; ce_recovered: against zero-ablating the MLP, "
                      "ce_recovered_mean: against mean-ablating it; kl: KL(clean || spliced) per token; "
                      "interp_f1: " + results["interpretability_measure"] + "; neuron_f1: the same for the "
                      "MLP output's dimensions (both signs)")
    rep.heading("Every layer spliced at once")
    rep.table([{k: v for k, v in r.items() if k != "layers"} for r in results["transcoders_all_layers"]],
              floatfmt="{:.4g}", caption="the PLTs (or skip transcoders, or SAEs) of every layer together, and the "
                                         "CLT's replacement model; ablations: every layer's MLP at once")
    rep.figure(_scatter(rows, "l0", "ce_recovered", "L0 (held-out, per layer)", "CE loss recovered (vs zero-ablation)"),
               "ce_recovered_vs_l0", "Spliced CE loss recovered against L0, one layer at a time.")
    rep.figure(_scatter(rows, "fvu", "interp_f1", "FVU of the MLP output (held-out)", "mean best-feature F1 (test)"),
               "fvu_vs_interpretability", "Reconstruction error against interpretability (Paulo et al. 2025 plot "
                                          "these axes: skip transcoders reach lower error at equal interpretability).")
    timings = results.get("training") or {}
    rep.heading("Training")
    rep.table([{"dictionary": k, **v} for k, v in timings.items()], floatfmt="{:.4g}")
    return rep.write("report.html")

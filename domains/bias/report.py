"""The gender-bias case study page: bias profile, gender features, SCR, debiasing table."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from core.report.html import Report


def _profile_figure(prof: pd.DataFrame):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    per = prof.groupby("occupation").agg(diff=("diff", "mean"), sd=("diff", "std"),
                                         stereotype=("stereotype", "first")).sort_values("diff")
    fig, ax = plt.subplots(figsize=(7, 0.28 * len(per) + 1.2))
    colors = ["#d9534f" if s == "female" else "#337ab7" for s in per["stereotype"]]
    ax.barh(per.index, per["diff"], xerr=per["sd"].fillna(0), color=colors, alpha=0.85)
    ax.axvline(0, color="k", lw=0.8)
    ax.set_xlabel("log P(male pronoun) - log P(female pronoun)")
    ax.set_title("Pronoun preference per occupation (red: female-majority, blue: male-majority)")
    return fig


def _scr_figure(rows: list[dict[str, Any]]):
    import matplotlib.pyplot as plt

    df = pd.DataFrame(rows)
    fig, ax = plt.subplots(figsize=(6, 3.6))
    for (direction, method), sub in df[df["method"] != "diffmean_projection"].groupby(["direction", "method"]):
        ax.plot(sub["n"], sub["scr"].astype(float), marker="o", label=f"{direction}: {method}",
                ls="-" if direction == "ablate_gender" else ":")
    for _direction, dm in df[df["method"] == "diffmean_projection"].groupby("direction"):
        if dm["scr"].notna().any():
            ax.axhline(float(dm["scr"].iloc[0]), ls="--", color="gray", lw=0.8)
    ax.set_xscale("log")
    ns = sorted(int(n) for n in df["n"].dropna().unique() if n and n > 1)
    ax.minorticks_off()
    ax.set_xticks(ns, [str(n) for n in ns])
    ax.set_xlabel("ablated units (N)")
    ax.set_ylabel("normalised SCR")
    ax.axhline(0, color="k", lw=0.6)
    ax.legend(fontsize=8)
    return fig


def write_report(run_dir: Path, results: dict[str, Any], *, prof: pd.DataFrame, scr_rows: list[dict[str, Any]],
                 steer_rows: list[dict[str, Any]], contexts: dict[int, list[dict[str, Any]]],
                 model_name: str) -> Path:
    rep = Report(f"Gender-occupation bias in {model_name}", run_dir)
    o = results["bias"]["overall"]
    rep.text(f"Hook {results['hook']}. Bias metric: mean over {o['n_occupations']} occupations of "
             f"|log P(he) - log P(she)| (and him/her, his/her) after occupation prompts = {o['mean_abs_diff']:.3f}; "
             f"signed mean {o['mean_diff']:.3f}; stereotype gap (male- minus female-majority occupations) "
             f"{o['stereotype_gap']:.3f}.")

    rep.heading("Bias profile per occupation")
    rep.figure(_profile_figure(prof), "bias_profile", "Mean over prompt templates; bars show one standard deviation.")
    per = pd.DataFrame([{"occupation": k, **v} for k, v in results["bias"]["per_occupation"].items()])
    rep.table(per.sort_values("diff"))
    if results.get("benchmarks"):
        rep.heading("Published benchmarks (local files)")
        for name, res in results["benchmarks"].items():
            flat = {k: v for k, v in res.items() if not isinstance(v, dict)}
            rep.text(f"{name}: {flat}")

    rep.heading("Gender features")
    rep.text("Latents ranked by the male-minus-female difference of their mean activation on counterfactual "
             "pairs times their decoder's alignment with the DiffMean gender direction (training pairs only). "
             "Readouts separate male from female sentences of held-out pairs.")
    rep.table(results["gender_features"]["readouts"], caption="Held-out AUROC of single readouts")
    for j, items in contexts.items():
        rep.raw(f"<div class='card'><b>latent {j}</b>")
        for it in items:
            rep.highlighted_tokens(it["tokens"], it["values"], label=f"{it['max']:.2f}")
        rep.raw("</div>")
    enr = results.get("enrichment") or {}
    if enr:
        rep.heading("Concept enrichment (shared engine)")
        rep.text("Per-concept best latent and best neuron on held-out texts; the full table is enrich/enrichment.tsv.",
                 muted=True)
        if enr.get("gender_concepts"):
            rep.table(enr["gender_concepts"], caption="Gender concepts: best SAE latent and best neuron (test split)")

    rep.heading("Spurious correlation removal (SCR)")
    b = results["scr"]["base"]
    rep.text(f"Biased occupation probe on the balanced test set: {b['biased_probe_occupation_acc']:.3f}; "
             f"oracle probe: {b['oracle_occupation_acc']:.3f}; gender probe: {b['gender_probe_acc']:.3f}. "
             "SCR = (A_ablated - A_base) / (A_oracle - A_base). Direction ablate_gender scores the biased "
             "probe on occupation after ablating gender units; ablate_occupation scores it on gender after "
             f"ablating occupation units; SAEBench reports the direction where the probe starts worse: "
             f"{b.get('chosen_direction')}. SCR is undefined (blank) where A_oracle = A_base.")
    rep.figure(_scr_figure(scr_rows), "scr", "Normalised SCR against the number of ablated units.")
    rep.table([{k: v for k, v in r.items() if k != "features"} for r in scr_rows])

    rep.heading("Debiasing: feature ablation against DiffMean and prompting")
    rep.text("Strengths (for SAE ablation, the number of top gender latents) chosen on one half of the prompts "
             "within a fluency limit, reported on the other half. Behaviour = bias metric (lower is less biased); "
             "fluency = perplexity, under the unsteered model, of the steered model's greedy continuations "
             "(lower is better).")
    chosen = [r for r in steer_rows if r["split"] == "score"]
    rep.table([{k: r.get(k) for k in ("method", "strength", "behaviour", "stereotype_gap", "mean_diff", "fluency",
                                       "n", "example")} for r in chosen])
    try:
        from core.steering import plot_sweep

        rep.figure(plot_sweep([r for r in steer_rows if r["method"] != "prompt"], behaviour_label="bias metric"),
                   "steering_sweep", "Select half: bias metric and fluency against strength.")
    except (KeyError, ValueError, TypeError):
        pass
    rep.heading("Timings (s)")
    rep.table([{"step": k, "seconds": v} for k, v in results["timings_s"].items()])
    return rep.write("report.html")

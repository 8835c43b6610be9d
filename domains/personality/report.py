"""The personality case study's report: profile, personas, persona vectors, monitor, features, steering."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from core.report.html import Report
from core.samples import Sample
from domains.personality.inventory import TRAITS


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def profile_figure(bias: pd.DataFrame):
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 3.2))
    x = np.arange(len(bias))
    ax.bar(x - 0.2, bias["original"], 0.4, label="options A=Very Accurate ... E")
    ax.bar(x + 0.2, bias["reversed"], 0.4, label="options reversed")
    ax.axhline(3.0, color="grey", ls="--", lw=0.8)
    ax.set_xticks(x, [TRAITS[t] for t in bias["trait"]], rotation=20)
    ax.set_ylim(1, 5)
    ax.set_ylabel("mean inventory score (1-5)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def persona_heatmap(inv: pd.DataFrame):
    plt = _plt()
    piv = inv.pivot_table(index="persona", columns="trait", values="mean")
    piv = piv[[t for t in TRAITS if t in piv.columns]]
    fig, ax = plt.subplots(figsize=(5.5, 0.28 * len(piv) + 1.2))
    im = ax.imshow(piv.to_numpy() - 3.0, cmap="RdBu_r", vmin=-1, vmax=1, aspect="auto")
    ax.set_xticks(range(piv.shape[1]), list(piv.columns))
    ax.set_yticks(range(len(piv)), list(piv.index), fontsize=7)
    fig.colorbar(im, ax=ax, label="score - 3")
    fig.tight_layout()
    return fig


def separation_figure(sep: pd.DataFrame, layer: int):
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 3.2))
    for t, g in sep.groupby("trait", sort=False):
        ax.plot(g["layer"], g["cohens_d"], marker=".", label=TRAITS[t])
    ax.axvline(layer, color="grey", ls="--", lw=0.8)
    ax.set_xlabel("layer (resid_post)")
    ax.set_ylabel("Cohen's d, high vs low answers")
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def monitor_figure(mon: pd.DataFrame, corr: dict[str, Any]):
    plt = _plt()
    traits = list(dict.fromkeys(mon["trait"]))
    fig, axes = plt.subplots(1, len(traits), figsize=(3 * len(traits), 2.9), squeeze=False)
    for ax, t in zip(axes[0], traits, strict=True):
        g = mon[mon["trait"] == t]
        own = g["persona_trait"] == t
        colors = np.where(~own, "lightgrey", np.where(g["persona_pole"] == "high", "tab:red", "tab:blue"))
        ax.scatter(g["projection"], g["score"], c=list(colors), s=18)
        r = corr["per_trait"].get(t, {}).get("pearson", float("nan"))
        ax.set_title(f"{TRAITS[t]} (r={r:.2f})", fontsize=9)
        ax.set_xlabel("last-prompt projection", fontsize=8)
    axes[0][0].set_ylabel("inventory score")
    fig.tight_layout()
    return fig


def steering_figure(summary: pd.DataFrame):
    plt = _plt()
    methods = list(dict.fromkeys(summary["method"]))
    traits = [t for t in TRAITS if t in set(summary["trait"])]
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.2))
    w = 0.8 / max(1, len(methods))
    for i, m in enumerate(methods):
        g = summary[summary["method"] == m].set_index("trait").reindex(traits)
        x = np.arange(len(traits)) + (i - (len(methods) - 1) / 2) * w
        axes[0].bar(x, g["shift"], w, label=m)
        axes[1].bar(x, g["off_target"], w, label=m)
    for ax, lab in zip(axes, ("target trait shift", "mean |shift| of the other traits"), strict=True):
        ax.set_xticks(range(len(traits)), traits)
        ax.set_ylabel(lab)
        ax.axhline(0, color="grey", lw=0.8)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    return fig


def write_report(run_dir: Path, results: dict[str, Any], *, profile: pd.DataFrame, bias: pd.DataFrame,
                 inv_personas: pd.DataFrame, separation: pd.DataFrame, monitor: pd.DataFrame,
                 steering_rows: pd.DataFrame, steer_summary: pd.DataFrame, contexts: dict[int, list[dict[str, Any]]],
                 features: dict[str, dict[str, list[int]]], samples: list[Sample]) -> Path:
    from domains.personality.scoring import trait_profile

    rep = Report("Personality: Big Five profile, persona vectors and steering", run_dir)
    layer = results["monitor"]["layer"]
    rep.heading("1. The model's own inventory profile")
    rep.text("Each statement is asked as a five-option question; the score is the expectation of the option "
             "value (Very Accurate 5 ... Very Inaccurate 1, reversed for reverse-keyed items) under the model's "
             "renormalised probabilities of the option letters. The same items are asked again with the options "
             "in reverse order: a model that reads the options gives the same score both ways.")
    tab = profile[profile["order"] == "original"][["trait", "trait_name", "mean", "std", "argmax_mean", "argmax_std",
                                                   "option_mass", "n"]]
    tab = tab.merge(bias[["trait", "reversed", "gap", "item_abs_gap"]], on="trait")
    rep.table(tab, caption="Per trait: mean and standard deviation over items (expected score), the argmax "
                           "score, probability mass on the five letters, and the position-bias check")
    rep.figure(profile_figure(bias), "inventory_profile", "Mean score per trait in both option orders")
    pref = results["inventory_overall"]["letter_preference"]
    rep.text("Mean probability of each letter (original order): "
             + ", ".join(f"{k} {v:.2f}" for k, v in pref.items()))

    rep.heading("2. The inventory under persona instructions")
    prof = trait_profile(inv_personas)
    rep.figure(persona_heatmap(prof), "persona_heatmap",
               "Mean trait score (minus 3) under each persona; rows are personas, columns traits")
    own = []
    for t in TRAITS:
        hi = prof[(prof["persona"].str.startswith(f"{t}_high")) & (prof["trait"] == t)]["mean"]
        lo = prof[(prof["persona"].str.startswith(f"{t}_low")) & (prof["trait"] == t)]["mean"]
        base = prof[(prof["persona"] == "default") & (prof["trait"] == t)]["mean"]
        if len(hi) and len(lo):
            own.append({"trait": t, "default": float(base.mean()) if len(base) else np.nan,
                        "high personas": float(hi.mean()), "low personas": float(lo.mean()),
                        "high - low": float(hi.mean() - lo.mean())})
    if own:
        rep.table(own, caption="The steered trait's own score under its high and low personas")

    rep.heading("3. Persona vectors")
    rep.text("Mean residual stream over the answer tokens under the high persona minus under the low persona "
             "(Chen et al. 2025), per layer. Separation: Cohen's d of the high and low answers projected on "
             f"the vector. The analysis layer is {layer}.")
    rep.figure(separation_figure(separation, layer), "persona_separation", "High/low separation along the persona vector")

    rep.heading("4. Monitor: prompt-time projection vs inventory score")
    rep.text("For every persona (and the default prompt), the hidden state of the last prompt token of each "
             "neutral question, projected on the trait's persona vector and averaged over questions, against "
             "the trait's inventory score under that persona. Red: the trait's high personas, blue: its low "
             "personas, grey: personas of other traits.")
    rep.figure(monitor_figure(monitor, results["monitor"]), "monitor", "Projection vs score, one point per persona")
    rep.table([{"trait": t, **v} for t, v in results["monitor"]["per_trait"].items()],
              caption="Pearson and Spearman correlation across personas")
    pole = results["monitor"].get("vs_instructed_pole", {})
    if pole:
        rep.table([{"trait": t, **v} for t, v in pole.items()],
                  caption="The same projection against the instructed pole (+1 high, -1 low, 0 other personas)")

    rep.heading("5. Trait features (SAE) and the neuron baseline")
    f = results["features"]
    rep.text(f"Concepts are '<trait>_<pole>@response' (the answer tokens of each persona) and response/prompt "
             f"tokens; the shared enrichment engine picks a feature and threshold per concept on the validation "
             f"questions and scores it on held-out questions. Mean best test F1: SAE "
             f"{f.get('sae_mean_best_f1_test')}, neurons {f.get('neuron_mean_best_f1_test')}.")
    best_path = run_dir / "enrich" / "enrichment_best.tsv"
    if best_path.exists():
        best = pd.read_csv(best_path, sep="\t")
        rep.table(best, caption="Validation-selected feature per concept and basis, with its test scores")
    rep.table([{"trait": t, "pole": p, "features": ", ".join(map(str, fs))}
               for t, d in features.items() for p, fs in d.items()],
              caption="SAE features whose decoder rows form each trait's steering direction")
    for j, items in contexts.items():
        rep.raw(f"<div class='card'><b>SAE feature {j}</b>")
        for it in items:
            rep.highlighted_tokens(it["tokens"], it["values"], label=f"{it['persona']} (max {it['max']:.2f})")
        rep.raw("</div>")

    rep.heading("6. Steering a trait")
    rep.text("Adding the persona vector (or the SAE trait direction, rescaled to the persona vector's norm) at "
             f"layer {layer} at every position, the strength chosen on one half of the items and reported on "
             "the other; the prompting baseline asks the same held-out items under the trait's high persona. "
             "Shift: change of the steered trait's score; off-target: mean absolute change of the other four; "
             "fluency: perplexity of answers to neutral questions under the unsteered model.")
    if len(steer_summary):
        rep.figure(steering_figure(steer_summary), "steering", "Held-out target and off-target shifts")
        rep.table(steer_summary, caption="Held-out steering results per trait and method")
    cols = [c for c in steering_rows.columns if c != "example"]
    rep.table(steering_rows[cols], caption="All sweep rows (select and score halves)", max_rows=400)

    rep.heading("7. Example answers")
    seen = set()
    shown = []
    for s in samples:
        if s.meta["question_index"] == 0 and s.meta["persona"] not in seen:
            seen.add(s.meta["persona"])
            shown.append({"persona": s.meta["persona"], "question": s.meta["question"], "answer": s.meta["response"]})
    rep.table(shown, caption="Greedy answers to the first neutral question")
    return rep.write("report.html")

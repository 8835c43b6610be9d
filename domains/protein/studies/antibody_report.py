"""``report.html`` for the antibody_regions case study: tables per layer, tracks along sequences."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from core.report.html import Report
from domains.protein.imgt import REGION_NAMES

REGIONS = (*REGION_NAMES, "CDR_any", "FR_any")


def _cell(*values) -> str:
    return " / ".join("-" if v is None else f"{v:.2f}" for v in values)


def _region_table(per_layer: dict[str, Any]) -> pd.DataFrame:
    rows = []
    for layer, res in per_layer.items():
        row = {"layer": layer, "SAE / neuron / position F1>0.5": f"{res['sae_concepts_f1_gt_0_5']} / "
               f"{res['neuron_concepts_f1_gt_0_5']} / {res.get('position_concepts_f1_gt_0_5')}"}
        for reg in REGIONS:
            row[reg] = _cell(res["best_f1_per_region"]["sae"].get(reg), res["best_f1_per_region"]["neuron"].get(reg),
                             (res.get("positional_f1") or {}).get(reg))
        rows.append(row)
    return pd.DataFrame(rows)


def _token_table(per_layer: dict[str, Any]) -> pd.DataFrame:
    rows = []
    for layer, res in per_layer.items():
        tf = res.get("token_f1") or {}
        row = {"layer": layer}
        for reg in REGIONS:
            row[reg] = _cell(*(tf.get(b, {}).get(reg) for b in ("sae", "neuron", "position")))
        rows.append(row)
    return pd.DataFrame(rows)


def _shifted_table(per_layer: dict[str, Any]) -> pd.DataFrame:
    rows = []
    for layer, res in per_layer.items():
        for reg, d in (res.get("shifted") or {}).items():
            if not d.get("n_chains"):
                continue
            rows.append({"layer": layer, "region": reg, "shifted test chains": d["n_chains"],
                         "F1 SAE / neuron / position": _cell(*(d.get(b, {}).get("f1") for b in ("sae", "neuron", "position"))),
                         "per-token F1 SAE / neuron / position":
                             _cell(*(d.get(b, {}).get("token_f1") for b in ("sae", "neuron", "position")))})
    return pd.DataFrame(rows)


def _kinds_table(per_layer: dict[str, Any]) -> pd.DataFrame:
    rows = []
    for layer, res in per_layer.items():
        for basis, chosen in (res.get("chosen") or {}).items():
            row = {"layer": layer, "basis": basis, **{f"{k}s": v for k, v in res["markers_spans"][basis].items()}}
            for reg in REGIONS:
                c = chosen.get(reg) or {}
                row[reg] = "-" if c.get("coverage") is None else f"{c['kind'][0]} {c['coverage']:.2f}"
            rows.append(row)
    return pd.DataFrame(rows)


def _sequence_table(per_layer: dict[str, Any]) -> pd.DataFrame:
    rows = []
    for layer, res in per_layer.items():
        for label, d in (res.get("sequence_labels") or {}).items():
            if not isinstance(d, dict):
                continue
            rows.append({"layer": layer, "label": label, "SAE": d.get("sae"),
                         "SAE latent (pooling)": f"{d.get('sae_feature')} ({d.get('sae_pooling')})",
                         "neuron": d.get("neuron"),
                         "neuron (pooling)": f"{d.get('neuron_feature')} ({d.get('neuron_pooling')})",
                         "linear probe": d.get("neuron_probe"), "chain length": d.get("chain_length")})
    return pd.DataFrame(rows)


def write_report(run_dir: Path, cs, records, nums, splits: dict[int, str], stores, saes, per_layer,
                 hooks) -> Path:
    from domains.protein.tracks import feature_tracks, pick_track_samples, track_figure

    rep = Report("antibody_regions: AntiBERTy SAE features vs IMGT regions", run_dir)
    counts = pd.Series(splits).value_counts().to_dict()
    chains = pd.Series([r.meta.get("chain") for r in records]).value_counts().to_dict()
    rep.text(f"{len(records)} antibody chains ({chains}) from paired repertoire sequencing "
             f"(abnativ test sets, CC BY-NC-SA 4.0); IMGT regions by ANARCII; homology-aware splits "
             f"{counts}. Per layer a TopK SAE was trained on the residue activations; for each region "
             "the latent (SAE) or single neuron (baseline) and activation threshold with the best "
             "validation F1 were chosen and scored on the test split.")
    rep.heading("Regions per layer: InterPLM F1 on the test chains (SAE / neuron / position only)")
    rep.text("Per region and basis the (feature, threshold) with the best validation F1 (per-token precision, "
             "per-instance recall; each feature divided by its maximum over the training chains) scored on the "
             "test chains. 'position' is the positional control: windows of residues counted from the chain's "
             "start or end and a classifier of (distance from start, distance from end) fitted on the training "
             "chains; it knows nothing but the residue index.")
    rep.table(_region_table(per_layer))
    rep.heading("What position does not give")
    rep.text("Per-token F1 (per-token precision and coverage; a one-residue marker of a long region scores low "
             "here), SAE / neuron / position, each basis's own selection on validation:")
    rep.table(_token_table(per_layer))
    shifted = _shifted_table(per_layer)
    if len(shifted):
        rep.text("The same selections scored on the test chains whose region starts or ends at another residue "
                 "index than the most common one among training chains of the same type:")
        rep.table(shifted)
    beyond = [{"layer": k, **{b: ", ".join(v.get("beyond_position", {}).get(b) or []) or "none"
                              for b in ("sae", "neuron")}} for k, v in per_layer.items()]
    rep.text(f"Regions captured beyond position ({next(iter(per_layer.values()))['beyond_position']['rule']}):")
    rep.table(pd.DataFrame(beyond))
    rep.heading("Markers and spans")
    rep.text("Kind (m = marker: the chosen feature fires on under 30 % of the region's residues; s = span) and "
             "coverage of each region's chosen feature.")
    rep.table(_kinds_table(per_layer))
    aa_rows = [{"layer": k, "SAE amino acids F1>0.5": v["amino_acids"]["sae_f1_gt_0_5"],
                "neuron amino acids F1>0.5": v["amino_acids"]["neuron_f1_gt_0_5"],
                "amino acids scored": v["amino_acids"]["n"]} for k, v in per_layer.items()]
    rep.heading("Amino-acid identity (reported apart)")
    rep.table(pd.DataFrame(aa_rows))
    seq = _sequence_table(per_layer)
    if len(seq):
        rep.heading("Sequence-level labels (test AUROC)")
        rep.text("Per label, the single SAE latent and the single neuron (+x or -x), each with its pooling (max or "
                 "mean over the chain), chosen by AUROC on the validation chains and scored on the test chains; "
                 "the linear probe (logistic regression on the mean-pooled residual stream, fitted on the training "
                 "chains) is the ceiling; the chain's length is the baseline for CDR3 length.", muted=True)
        rep.table(seq)

    best_hook = max(hooks, key=lambda h: sum(v or 0 for v in
                                             per_layer[f"layer{h.split('.')[1]}"]["best_f1_per_region"]["sae"].values()))
    layer = f"layer{best_hook.split('.')[1]}"
    import json

    summary_path = run_dir / layer / "enrichment" / "summary.json"
    per_concept = json.loads(summary_path.read_text()).get("sae", {}).get("per_concept", {}) \
        if summary_path.exists() else {}
    feats = {reg: int(per_concept[f"IMGT:{reg}"]["feature"]) for reg in ("CDR1", "CDR2", "CDR3", "FR2")
             if f"IMGT:{reg}" in per_concept}
    samples = pick_track_samples(splits, int(cs.report.track_sequences), seed=int(cs.data.seed))
    if feats and samples:
        seqs, names, tracks, regions = [], [], [], []
        for s in samples:
            pos, vals = feature_tracks(saes[best_hook], stores[best_hook], s, {f"{k} (#{v})": v for k, v in feats.items()})
            seq = records[s].sequence
            full = {k: _place(pos, v, len(seq)) for k, v in vals.items()}
            reg = [None] * len(seq)
            for idx, _pos, _ins in nums[s].residues:
                from domains.protein.imgt import region_of

                reg[idx] = region_of(_pos)
            seqs.append(seq)
            names.append(f"{records[s].id} ({records[s].meta.get('chain')}, test split)")
            tracks.append(full)
            regions.append(reg)
        fig = track_figure(seqs, names, tracks, regions,
                           title=f"{layer}: best SAE latent per region along test chains")
        rep.heading(f"Activation tracks ({layer}, the layer with the highest summed region F1)")
        rep.figure(fig, "activation_tracks", caption="Each line is one SAE latent (chosen on the validation "
                   "split for the named region), scaled to its maximum over the shown chains; the bar "
                   "under each chain is its IMGT annotation.")
    for h in hooks:
        lay = f"layer{h.split('.')[1]}"
        frag = run_dir / lay / "enrichment" / "report.html"
        if frag.exists():
            rep.raw(f'<p><a href="{lay}/enrichment/report.html">{lay}: full enrichment report</a></p>')
    return rep.write("report.html")


def _place(pos, values, n: int):
    import numpy as np

    out = np.zeros(n)
    ok = (pos >= 0) & (pos < n)
    out[pos[ok]] = values[ok]
    return out

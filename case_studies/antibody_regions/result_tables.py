"""Print this case study's README result tables from a run's results.json.

The README's numbers are regenerated from a run rather than typed, so they cannot drift from
what the code measures:  python case_studies/antibody_regions/result_tables.py RUN/results.json
(or RUN: a run stopped before its report prints the layers it finished)
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

REGIONS = ["FR1", "CDR1", "FR2", "CDR2", "FR3", "CDR3", "FR4", "CDR_any", "FR_any"]
LABEL_GROUPS = ["chain=", "v_family=", "isotype=", "cdr3_long"]


def _row(cells: list[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def region_table(layers: dict) -> str:
    """Instance F1 (InterPLM's metric) per region: SAE / neuron / positional control."""
    lines = [_row(["layer", "SAE / neuron / position F1>0.5"] + REGIONS),
             _row(["---"] * (len(REGIONS) + 2))]
    for name, lay in layers.items():
        best = lay["best_f1_per_region"]
        cells = [f"{best['sae'][r]:.2f} / {best['neuron'][r]:.2f} / {lay['positional_f1'][r]:.2f}"
                 for r in REGIONS]
        counts = (f"{lay['sae_concepts_f1_gt_0_5']} / {lay['neuron_concepts_f1_gt_0_5']} / "
                  f"{lay['position_concepts_f1_gt_0_5']}")
        lines.append(_row([name, counts] + cells))
    return "\n".join(lines)


def token_table(layers: dict) -> str:
    """Per-token F1 of the same chosen features, and each SAE feature's region coverage."""
    lines = [_row(["layer", "SAE kinds"] + REGIONS), _row(["---"] * (len(REGIONS) + 2))]
    for name, lay in layers.items():
        tok, chosen = lay["token_f1"], lay["chosen"]["sae"]
        cells = []
        for r in REGIONS:
            cov = chosen.get(r, {}).get("coverage")
            cov_txt = f" (cov {cov:.2f})" if cov is not None else ""
            cells.append(f"{tok['sae'][r]:.2f} / {tok['neuron'][r]:.2f} / {tok['position'][r]:.2f}"
                         + cov_txt)
        kinds = ", ".join(f"{n} {k}" for k, n in sorted(lay["markers_spans"]["sae"].items()))
        lines.append(_row([name, kinds] + cells))
    return "\n".join(lines)


def shifted_table(layers: dict) -> str:
    """Instance F1 on the test chains whose region starts away from its most common place."""
    regions = [r for r in REGIONS if next(iter(layers.values()))["shifted"][r]["n_chains"] > 1]
    first = next(iter(layers.values()))["shifted"]
    lines = [_row(["layer"] + [f"{r} (n={first[r]['n_chains']})" for r in regions]),
             _row(["---"] * (len(regions) + 1))]
    for name, lay in layers.items():
        sh = lay["shifted"]
        lines.append(_row([name] + [f"{sh[r]['sae']['f1']:.2f} / {sh[r]['neuron']['f1']:.2f} / "
                                    f"{sh[r]['position']['f1']:.2f}" for r in regions]))
    return "\n".join(lines)


def _span(rows: list[dict], key: str) -> str:
    vals = [v[key] for v in rows if v.get(key) is not None]
    if not vals:
        return "-"
    lo, hi = min(vals), max(vals)
    return f"{lo:.2f}" if len(vals) == 1 or abs(hi - lo) < 0.005 else f"{lo:.2f}-{hi:.2f}"


def label_table(layers: dict) -> str:
    """Sequence-level AUROC (chosen on valid, reported on test), ranges over each label group."""
    lines = [_row(["layer", "label", "SAE", "best neuron", "linear probe", "chain length"]),
             _row(["---"] * 6)]
    for name, lay in layers.items():
        labels = {k: v for k, v in lay["sequence_labels"].items() if isinstance(v, dict)}
        for group in LABEL_GROUPS:
            rows = [v for k, v in labels.items() if k.startswith(group)]
            if not rows:
                continue

            title = group.rstrip("=") + (f" ({len(rows)} labels)" if len(rows) > 1 else "")
            lines.append(_row([name, title] + [_span(rows, k) for k in ("sae", "neuron", "neuron_probe",
                                                                          "chain_length")]))
    return "\n".join(lines)


def beyond_position(layers: dict) -> str:
    rule = next(iter(layers.values()))["beyond_position"]["rule"]
    found = {n: (lay["beyond_position"]["sae"], lay["beyond_position"]["neuron"])
             for n, lay in layers.items()}
    parts = [f"{n}: SAE {', '.join(s) or 'none'}; neurons {', '.join(u) or 'none'}"
             for n, (s, u) in found.items()]
    return f"Beyond position ({rule}): " + "; ".join(parts) + "."


def load_layers(path: str) -> tuple[dict, dict | None]:
    """``RUN/results.json``, or a run folder: its results.json, else the per-layer
    ``layer<i>/results.json`` files a run writes as each layer finishes (a run stopped
    before its report still prints its finished layers)."""
    p = Path(path)
    if p.is_dir() and (p / "results.json").exists():
        p = p / "results.json"
    if p.is_file():
        res = json.loads(p.read_text())
        return res["layers"], res
    found = sorted(p.glob("layer*/results.json"), key=lambda f: int(f.parent.name[len("layer"):]))
    if not found:
        sys.exit(f"result_tables: no results.json and no layer*/results.json under {p}")
    return {f.parent.name: json.loads(f.read_text()) for f in found}, None


def main(path: str) -> None:
    layers, res = load_layers(path)
    print(region_table(layers), "\n")
    print(token_table(layers), "\n")
    print(shifted_table(layers), "\n")
    print(label_table(layers), "\n")
    print(beyond_position(layers), "\n")
    if res is None:
        print(f"(per-layer results of a run without its final results.json: {', '.join(layers)})")
        return
    secs = res["seconds"]
    print("Time: " + ", ".join(f"{k} {v:.0f} s" for k, v in secs.items())
          + f" (run {res['run']['seconds']:.0f} s wall)")


if __name__ == "__main__":
    main(sys.argv[1])

"""The four questions of a feature-universality study, asked of any family of dictionaries.

Same features across seeds? (``seeds``) Wider = more features or the same ones split finer?
(``widths``, ``matryoshka``) What does a larger SAE add that a smaller lacks? (``stitching``)
Do features form abruptly or gradually, and do their directions drift? (``lifecycle``)
Each function returns JSON-ready results and adds its table and figure to a
``core.report.html.Report``; domain runners add what only they know (planted truth,
concepts) beside them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch

from core.compare import plots
from core.compare.activations import coactivation, encode_sparse
from core.compare.lifecycle import births, lifecycle_table
from core.compare.matching import cosine_matrix, decoder_directions, expected_max_cosine, unit_rows
from core.compare.pairwise import compare
from core.compare.splitting import split_tree
from core.compare.stitching import StitchResult, stitch

DECODER_KEYS = ("mmcs_a_to_b", "mmcs_b_to_a", "chance_mmcs_a_to_b", "a_to_b_frac_above_0.9",
                "a_to_b_frac_above_0.7", "a_to_b_frac_above_0.5", "assigned_mean_cos", "assigned_frac_above_0.9",
                "assigned_frac_above_0.7", "assigned_shared_frac_enc_and_dec_0.7")
ACTIVATION_KEYS = ("mean_max_corr_a_to_b", "assigned_mean_corr", "assigned_pairs_mean_corr", "best_match_agreement")


class Codes:
    """The shared held-out token sample and each dictionary's sparse code of it, computed once."""

    def __init__(self, x: torch.Tensor, batch_tokens: int = 4096) -> None:
        self.x = x
        self.batch_tokens = batch_tokens
        self._codes: dict[str, Any] = {}

    def __call__(self, name: str, sae: torch.nn.Module):
        if name not in self._codes:
            self._codes[name] = encode_sparse(sae, self.x, batch_tokens=self.batch_tokens)
        return self._codes[name]


def records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """Rows for JSON: NaN becomes null."""
    return frame.astype(object).where(frame.notna(), None).to_dict(orient="records")


def data_baseline(sae: torch.nn.Module, x: torch.Tensor, n: int, seed: int = 0) -> float:
    """MMCS of ``sae``'s decoder against ``n`` held-out activations (minus their mean) taken as
    directions: what agreement the data's own anisotropy gives, a harder control than random vectors."""
    g = torch.Generator().manual_seed(seed)
    idx = torch.randperm(x.shape[0], generator=g)[: min(n, x.shape[0])]
    rows = x[idx].float() - x.float().mean(dim=0)
    return round(float(cosine_matrix(decoder_directions(sae), rows).max(axis=1).mean()), 4)


def seeds(pairs: Mapping[str, tuple[str, torch.nn.Module, str, torch.nn.Module]], codes: Codes | None,
          report: Any = None, tag: str = "") -> dict[str, Any]:
    """Per label (e.g. a width): dictionary ``a`` (seed 0) against ``b`` (seed 1)."""
    out: dict[str, Any] = {}
    for label, (name_a, a, name_b, b) in pairs.items():
        comp = compare(a, b, codes_a=codes(name_a, a) if codes else None, codes_b=codes(name_b, b) if codes else None)
        row = {k: comp.summary["decoder"][k] for k in DECODER_KEYS}
        if codes is not None:
            row["data_baseline_mmcs"] = data_baseline(a, codes.x, b.cfg.d_sae)
        if "activations" in comp.summary:
            row.update({f"act_{k}": comp.summary["activations"][k] for k in ACTIVATION_KEYS})
        out[label] = row
    if report is not None and out:
        labels = list(out)
        report.heading("Seeds: does training twice give the same features?", level=3)
        report.table(pd.DataFrame([{"pair": k, **v} for k, v in out.items()]))
        series = {"MMCS seed 0 -> seed 1": [out[k]["mmcs_a_to_b"] for k in labels],
                  "share matched at cos > 0.9": [out[k]["a_to_b_frac_above_0.9"] for k in labels],
                  "assigned pairs at cos > 0.7": [out[k]["assigned_frac_above_0.7"] for k in labels]}
        report.figure(plots.line_by(labels, series, xlabel="dictionary", ylabel="agreement between seeds",
                                    chance=[out[k]["chance_mmcs_a_to_b"] for k in labels]),
                      f"{tag}seeds", "decoder agreement between two seeds (dashed: random unit vectors)")
    return out


BEHAVIOUR_COSINE = 0.0  # the co-activation view only excludes children pointing away from their parent


def two_trees(small_dec, large_dec, codes_small, codes_large, *, min_cosine: float, min_coactivation: float,
              child_offset: int = 0, similarity: np.ndarray | None = None) -> dict[str, Any]:
    """The splitting tree by decoder direction (cosine parent) and, with a token sample, by
    behaviour (the parent that fires on most of the child's tokens)."""
    co = coactivation(codes_small, codes_large) if codes_small is not None else None
    out = {"by_decoder": split_tree(small_dec, large_dec, coact=co, min_cosine=min_cosine,
                                    min_coactivation=min_coactivation, child_offset=child_offset,
                                    similarity=similarity)}
    if co is not None:
        out["by_coactivation"] = split_tree(small_dec, large_dec, coact=co, min_cosine=BEHAVIOUR_COSINE,
                                            min_coactivation=min_coactivation, child_offset=child_offset,
                                            similarity=similarity, parent_by="coactivation",
                                            child_fires=np.diff(codes_large.tocsc().indptr))
    return out


def tree_rule(min_cosine: float, min_coactivation: float, with_codes: bool) -> str:
    text = (f"By decoder: each feature of the wider dictionary takes the narrower feature with the closest decoder "
            f"direction as parent when their cosine is >= {min_cosine:g}")
    if not with_codes:
        return text + "."
    return (text + f" and the parent fires on >= {min_coactivation:g} of the child's tokens. By co-activation: the "
            f"parent is the narrower feature firing on the largest share of the child's tokens, kept at >= "
            f"{min_coactivation:g} (children firing on >= 5 sample tokens, cosine > {BEHAVIOUR_COSINE:g}).")


def tree_bars(out: Mapping[str, Any], key: str | None = None) -> dict[str, Any]:
    rows = out if key is None else {k: v[key] for k, v in out.items()}
    return {f"{k}\n{view.split('_')[1]}": counts for k, views in rows.items() for view, counts in views.items()
            if view.startswith("by_")}


def widths(saes: Mapping[int, tuple[str, torch.nn.Module]], codes: Codes | None, *, min_cosine: float = 0.7,
           min_coactivation: float = 0.5, report: Any = None, tag: str = "") -> dict[str, Any]:
    """Consecutive widths ``w -> w'``: both splitting trees and MMCS each way."""
    out: dict[str, Any] = {}
    sizes = sorted(saes)
    for w, w2 in zip(sizes[:-1], sizes[1:], strict=True):
        (na, a), (nb, b) = saes[w], saes[w2]
        da, db = decoder_directions(a), decoder_directions(b)
        sim = cosine_matrix(da, db)
        trees = two_trees(da, db, codes(na, a) if codes else None, codes(nb, b) if codes else None,
                          min_cosine=min_cosine, min_coactivation=min_coactivation, similarity=sim)
        out[f"{w}->{w2}"] = {**{k: t.counts() for k, t in trees.items()},
                             "mmcs_small_to_large": round(float(sim.max(axis=1).mean()), 4),
                             "mmcs_large_to_small": round(float(sim.max(axis=0).mean()), 4),
                             "large_with_small_match_0.7": round(float((sim.max(axis=0) >= 0.7).mean()), 4),
                             "chance_mmcs_large_to_small": round(expected_max_cosine(da.shape[1], w), 4)}
    if report is not None and out:
        report.heading("Widths: more features, or the same ones split finer?", level=3)
        report.text(tree_rule(min_cosine, min_coactivation, codes is not None))
        report.table(pd.DataFrame([{"widths": k, "view": view, **c} for k, v in out.items()
                                   for view, c in v.items() if view.startswith("by_")]))
        report.table(pd.DataFrame([{"widths": k, **{m: x for m, x in v.items() if not m.startswith("by_")}}
                                   for k, v in out.items()]))
        report.figure(plots.splitting_bars(tree_bars(out)), f"{tag}splitting_widths",
                      "narrower features kept one-to-one, split or orphaned, by decoder and by co-activation")
    return out


def matryoshka(name: str, sae: torch.nn.Module, standalone: Mapping[int, tuple[str, torch.nn.Module]],
               codes: Codes | None, *, min_cosine: float = 0.7, min_coactivation: float = 0.5,
               report: Any = None, tag: str = "") -> dict[str, Any]:
    """Nested prefixes: refinements among each prefix's new latents (both views), and each
    prefix against the standalone dictionary of the same width."""
    prefixes = sorted(int(p) for p in (getattr(sae, "prefixes", []) or []))
    full = codes(name, sae) if codes else None
    dec = unit_rows(sae.W_dec)
    nested = {}
    for p, q in zip(prefixes[:-1], prefixes[1:], strict=True):
        trees = two_trees(dec[:p], dec[p:q], None if full is None else full[:, :p], None if full is None else full[:, p:q],
                          min_cosine=min_cosine, min_coactivation=min_coactivation, child_offset=p)
        nested[f"{p}->{q}"] = {k: t.counts() for k, t in trees.items()}
    out: dict[str, Any] = {"prefixes": prefixes, "nested": nested}
    if full is not None:
        fires = np.diff(full.tocsc().indptr)
        out["never_fire_on_sample_per_block"] = {f"{lo}-{hi}": round(float((fires[lo:hi] == 0).mean()), 4)
                                                 for lo, hi in zip([0, *prefixes[:-1]], prefixes, strict=True)}
    vs = {}
    for p in prefixes:
        if p in standalone:
            sim = cosine_matrix(dec[:p], decoder_directions(standalone[p][1]))
            vs[str(p)] = {"mmcs_prefix_to_standalone": round(float(sim.max(axis=1).mean()), 4),
                          "mmcs_standalone_to_prefix": round(float(sim.max(axis=0).mean()), 4),
                          "prefix_frac_above_0.7": round(float((sim.max(axis=1) > 0.7).mean()), 4)}
    out["prefix_vs_standalone"] = vs
    if report is not None:
        report.heading("Matryoshka: nested prefixes", level=3)
        report.text("Children of each prefix's features among the latents the next prefix adds. "
                    + tree_rule(min_cosine, min_coactivation, codes is not None))
        report.table(pd.DataFrame([{"prefixes": k, "view": view, **c} for k, v in nested.items() for view, c in v.items()]))
        if vs:
            report.table(pd.DataFrame([{"prefix": k, **v} for k, v in vs.items()]),
                         caption="each prefix against the standalone TopK SAE of that width")
        report.figure(plots.splitting_bars(tree_bars(nested)), f"{tag}splitting_matryoshka",
                      "prefix features refined (one or more children among the next prefix's latents) or not")
    return out


def stitching(pairs: Sequence[tuple[str, torch.nn.Module, str, torch.nn.Module]], codes: Codes, *,
              tolerance: float = 0.0, swap_cosine: float = 0.7, n_groups: int = 8,
              report: Any = None, tag: str = "") -> tuple[dict[str, Any], dict[str, StitchResult]]:
    """Each (small, large) pair stitched; the results objects come back for domain scoring."""
    out, objs = {}, {}
    for ns, small, nl, large in pairs:
        res = stitch(small, large, codes.x, codes_small=codes(ns, small), codes_large=codes(nl, large),
                     tolerance=tolerance, swap_cosine=swap_cosine, n_groups=n_groups)
        key = f"{small.cfg.d_sae}->{large.cfg.d_sae}"
        objs[key] = res
        out[key] = {**{k: v for k, v in res.summary.items() if k != "rule"}, "originals": res.originals,
                    "family": records(res.family.round(6))}
    if report is not None and objs:
        report.heading("Stitching: novel and reconstruction features", level=3)
        report.text(next(iter(objs.values())).summary["rule"] + f"; swaps join latents at decoder cosine >= {swap_cosine:g}.")
        report.table(pd.DataFrame([{"pair": k, **{c: v[c] for c in ("n_novel", "n_reconstruction", "n_dead",
                                                                      "novel_frac_of_live", "cosine_proxy_agreement",
                                                                      "n_swaps_made", "mse_small", "mse_large")}}
                                   for k, v in out.items()]))
        report.figure(family_figure(objs), f"{tag}stitching", "stitched families: error against L0, with the originals")
    return out, objs


def family_figure(objs: Mapping[str, StitchResult]):
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4))
    seen = {}
    for key, res in objs.items():
        fam = res.family
        line, = ax.plot(fam["l0"], fam["fvu"], lw=1, label=f"stitched {key}")
        for stage, marker in (("add_novel", "o"), ("swap", "s")):
            part = fam[fam["stage"] == stage]
            ax.plot(part["l0"], part["fvu"], ls="none", marker=marker, ms=3, color=line.get_color())
        seen.update(res.originals)
    widths = {name.split("(")[-1].rstrip(")"): pt for name, pt in seen.items()}  # "small (1024)" -> "1024"
    for width, pt in sorted(widths.items(), key=lambda kv: int(kv[0]) if kv[0].isdigit() else 0):
        ax.scatter([pt["l0"]], [pt["fvu"]], marker="*", s=120, zorder=5, label=f"SAE {width} (original)")
    ax.set_xlabel("L0 (held-out); circles: novel latents added, squares: reconstruction latents swapped in")
    ax.set_ylabel("FVU (held-out)")
    ax.legend(fontsize=7)
    return fig


def lifecycle(snapshots: Mapping[float, torch.nn.Module], final: torch.nn.Module, *, label: str = "",
              report: Any = None, tag: str = "") -> dict[str, Any]:
    """Presence and drift of the final features at each snapshot; when each feature is born."""
    table = lifecycle_table(dict(snapshots), final)
    born = births(dict(snapshots), final)
    fractions = sorted(snapshots)
    hist = {f"{f:g}": int((born == f).sum()) for f in fractions}
    out = {"table": records(table), "births": hist,
           "never_present": int(np.isnan(born).sum()),
           "median_birth_fraction": float(np.nanmedian(born)) if np.isfinite(born).any() else None}
    if report is not None:
        report.heading(f"Life cycle{': ' + label if label else ''}", level=3)
        report.table(table)
        report.text("Births: the first snapshot from which a final feature stays present (cosine > 0.9): "
                    + ", ".join(f"{k}: {v}" for k, v in hist.items()) + f"; never: {out['never_present']}.")
        report.figure(plots.lifecycle_curve(table, label), f"{tag}lifecycle",
                      "share of the final features present at each snapshot, and median drift")
    return out

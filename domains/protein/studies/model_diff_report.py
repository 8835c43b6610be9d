"""report.html of ``antibody_model_diff``: the relative-norm histogram, class counts before and
after Latent Scaling, the concepts per class, and the multi-layer crosscoder's depth profile."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from omegaconf import DictConfig


def write_report(run_dir: Path, cs: DictConfig, diff: dict[str, Any], latents: pd.DataFrame,
                 depth: dict[str, Any] | None, shares: np.ndarray | None, dclasses: np.ndarray | None) -> Path:
    from core.diff import Cutoffs
    from core.diff.concepts import concept_table
    from core.diff.report import depth_figure, histogram_figure, scaling_figure
    from core.report.html import Report

    a, b = diff["sources"]
    rep = Report(f"Model diff: {a} vs {b} on antibody chains", run_dir)
    rep.text(f"A BatchTopK crosscoder over {a} layer {diff['layers'][a]} and {b} layer {diff['layers'][b]} "
             f"(aligned residues, special tokens dropped). Held-out FVU: "
             + ", ".join(f"{k} {v:.3f}" for k, v in diff["fvu"].items()) + ".")
    cut = Cutoffs(**cs.diff.cutoffs)
    rep.heading("Relative decoder norm")
    rep.figure(histogram_figure(latents["relative_norm"].to_numpy(), cut, (a, b)), "relative_norm",
               f"Per live latent; dashed: cut-offs {cut.a_only} / {cut.shared_low}-{cut.shared_high} / {cut.b_only}.")
    rows = [{"class": k, "before": diff["before_scaling"][f"{k}_n"], "before frac": diff["before_scaling"][f"{k}_frac"],
             "after Latent Scaling": diff["after_scaling"][f"{k}_n"],
             "after frac": diff["after_scaling"][f"{k}_frac"]} for k in ("shared", "a_only", "b_only", "other")]
    rep.table(rows, caption=f"a = {a}, b = {b}; {diff['n_latents']} live latents")
    ls = diff["latent_scaling"]
    rep.text(f"Latent Scaling: {ls['n_exclusive']} exclusive latents; moved to shared by complete shrinkage "
             f"{ls['moved_by_shrinkage']}, by decoupling {ls['moved_by_decoupling']}, by both {ls['moved_by_both']} "
             f"(tau {ls['tau']}, above {ls['noise_floor_factor']}x the shuffled floor; median nu_eps "
             f"{ls['median_nu_eps']}, nu_r {ls['median_nu_r']}; floors {ls['median_nu_eps_null']}, {ls['median_nu_r_null']}).")
    rep.figure(scaling_figure(latents, latents["class"], float(ls["tau"])), "latent_scaling",
               "Exclusive latents: the other model's error (nu_eps) and reconstruction without the latent (nu_r).")
    rep.heading("Concepts per class")
    rep.table(concept_table(diff["concepts_before_scaling"]), caption="relative-norm classes (test F1 / AUROC of the "
              "class's latent chosen on validation)")
    rep.table(concept_table(diff["concepts_after_scaling"]), caption="classes after Latent Scaling")
    if "by_side" in diff:
        c = diff["by_side"]["cutoffs"]
        rep.table(concept_table(diff["by_side"]["concepts"]),
                  caption=f"descriptive split: leaning to {a} (r < {c['a_only']}), shared ({c['shared_low']}-"
                          f"{c['shared_high']}), leaning to {b} (r > {c['b_only']})")
    if depth is not None and shares is not None:
        names = [f"L{x}" for x in depth["layers"]]
        rep.heading(f"Across {a}'s layers")
        rep.figure(depth_figure(shares, names, dclasses), "depth", "Mean decoder-norm share per layer, per depth class.")
        rep.table([{"class": k, "latents": v} for k, v in sorted(depth["classes"].items())])
        rep.table(concept_table(depth["concepts"]), caption="concepts per depth class")
    return rep.write()

"""The compare stage's report.html: the summary tables and the figures of whatever was computed."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from core.compare import plots
from core.compare.matching import expected_max_cosine


def summary_rows(summary: dict[str, Any]) -> list[dict[str, Any]]:
    return [{"measure": k, "value": v} for k, v in summary.items() if not isinstance(v, (dict, list))]


def comparison_report(parts: dict[str, Any], run_dir: Path, *, title: str) -> Path:
    from core.report.html import Report

    rep = Report(title, run_dir)
    comp = parts["comparison"]
    m = comp.matching
    rep.heading("Decoder matching")
    rep.text("Each feature's best signed decoder cosine in the other dictionary, and a one-to-one "
             "assignment (scipy.optimize.linear_sum_assignment). Chance: the expected best cosine of a "
             "unit vector against as many random unit vectors in the same dimension.")
    rep.table(summary_rows(comp.summary["decoder"]))
    rep.figure(plots.max_cosine_hist(m.best_ab_cos, m.best_ba_cos,
                                     (expected_max_cosine(m.d, m.n_b), expected_max_cosine(m.d, m.n_a))),
               "max_cosine", "best decoder cosine per feature, each way")
    if "activations" in comp.summary:
        rep.heading("Activation matching")
        rep.table(summary_rows(comp.summary["activations"]))
    tree = parts.get("splitting")
    if tree is not None:
        rep.heading("Feature splitting (small -> large)")
        counts = tree.counts()
        rep.table(summary_rows(counts))
        rep.figure(plots.splitting_bars({f"{tree.n_small}->{tree.n_large}": counts}), "splitting",
                   "small features kept one-to-one, split, or orphaned")
    res = parts.get("stitching")
    if res is not None:
        rep.heading("Stitching")
        rep.text(res.summary["rule"])
        rep.table(summary_rows(res.summary))
        rep.table(res.family, caption="stitched family (held-out)")
        rep.figure(plots.stitching_curve(res.family, res.originals), "stitching", "FVU against L0")
    table = parts.get("lifecycle")
    if isinstance(table, pd.DataFrame):
        rep.heading("Feature life cycle")
        rep.table(table)
        rep.figure(plots.lifecycle_curve(table), "lifecycle", "final features present at each snapshot")
    return rep.write()

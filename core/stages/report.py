"""Stage ``report``: one page over everything a run directory holds.

Finds the artefacts other stages wrote (``metrics.json`` from evaluate, enrichment folders
with ``enrichment_summary.json``, ``steering_chosen.tsv``) and writes
``<run_dir>/report.html`` with their tables and figures embedded, linking each stage's own
detailed page. Missing artefacts are simply absent sections; a run with none is an error.
"""

from __future__ import annotations

import base64
import html
import os
from pathlib import Path
from typing import Any

import pandas as pd
from omegaconf import DictConfig

from core.errors import DataError
from core.io import read_json
from core.report.html import Report


def _embed_png(rep: Report, png: Path, caption: str) -> None:
    data = base64.b64encode(png.read_bytes()).decode()
    rep.raw(f'<figure><img alt="{html.escape(png.stem)}" style="max-width:100%" src="data:image/png;base64,{data}">'
            f"<figcaption>{html.escape(caption)}</figcaption></figure>")


def _link(rep: Report, target: Path, base: Path, text: str) -> None:
    rel = os.path.relpath(target, base)
    rep.raw(f'<p><a href="{html.escape(rel)}">{html.escape(text)}</a></p>')


def _metrics(rep: Report, run_dir: Path, found: list[str]) -> None:
    for path in sorted(run_dir.glob("**/metrics.json")):
        data = read_json(path)
        flat = {k: v for k, v in data.items() if isinstance(v, (int, float, str))}
        for section, values in data.items():  # one section per evaluation (core, spliced, ...)
            if isinstance(values, dict):
                flat.update({f"{section}.{k}": v for k, v in values.items() if isinstance(v, (int, float, str))})
        if not flat:
            continue
        rep.heading(f"Dictionary metrics ({path.parent.relative_to(run_dir) or '.'})")
        rep.table([{"metric": k, "value": v} for k, v in flat.items()])
        found.append(str(path.relative_to(run_dir)))


def _enrichment(rep: Report, run_dir: Path, found: list[str]) -> None:
    for path in sorted(run_dir.glob("**/enrichment_summary.json")):
        folder = path.parent
        s = read_json(path)
        rep.heading(f"Concept enrichment ({folder.relative_to(run_dir)})")
        rep.text(f"{s.get('n_concepts_scored')} of {s.get('n_concepts')} concepts scored; "
                 f"{s.get('n_concepts_skipped')} skipped ({s.get('skip_reasons')}).")
        rows = [{"basis": b, "features": s[b].get("n_features"), "mean best F1 (test)": s[b].get("mean_best_f1_test"),
                 "concepts with F1 > 0.5": s[b].get("n_concepts_f1_gt_0.5")} for b in ("sae", "neuron") if b in s]
        if rows:
            rep.table(rows)
        best = folder / "enrichment_best.tsv"
        if best.exists():
            rep.table(pd.read_csv(best, sep="\t"), max_rows=60, caption="selected feature per concept")
        for name, cap in (("best_f1_per_concept", "Best F1 per concept"), ("feature_density", "Feature density"),
                          ("decoder_umap", "Decoder directions")):
            png = folder / "figures" / f"{name}.png"
            if png.exists():
                _embed_png(rep, png, cap)
        if (folder / "report.html").exists():
            _link(rep, folder / "report.html", run_dir, "detailed enrichment report with feature cards")
        found.append(str(path.relative_to(run_dir)))


def _steering(rep: Report, run_dir: Path, found: list[str]) -> None:
    for path in sorted(run_dir.glob("**/*_chosen.tsv")):
        rep.heading(f"Steering ({path.relative_to(run_dir)})")
        rep.table(pd.read_csv(path, sep="\t"))
        png = path.parent / "figures" / f"{path.stem.removesuffix('_chosen')}_sweep.png"
        if png.exists():
            _embed_png(rep, png, "strength sweep")
        found.append(str(path.relative_to(run_dir)))


def run(cfg: DictConfig, run_dir: Path) -> dict[str, Any]:
    run_dir = Path(run_dir)
    rep = Report(f"sparsescope run: {run_dir.name}", run_dir)
    found: list[str] = []
    _metrics(rep, run_dir, found)
    _enrichment(rep, run_dir, found)
    _steering(rep, run_dir, found)
    if not found:
        raise DataError("nothing to report: no metrics.json, enrichment_summary.json or steering table",
                        path=str(run_dir), fix="run stage=evaluate, stage=enrich or stage=steer in this run dir first")
    path = rep.write("report.html")
    return {"report": {"path": str(path), "sections": found}}

"""Stage ``steer``: sweep steering methods on a domain's behaviour and write the steering table.

Reads the model (``cfg.model``), an optional SAE folder (``cfg.steer.sae``) and a domain's
steering task (``cfg.steer.task``); writes ``steering.tsv`` (every row), ``steering_chosen.tsv``
(held-out rows at the chosen strengths), ``figures/steering_sweep.png`` and ``steering.html``.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from core.errors import ConfigError

log = logging.getLogger(__name__)


def write_outputs(rows: list[dict[str, Any]], run_dir: Path, *, title: str, behaviour_label: str,
                  prefix: str = "steering") -> dict[str, Any]:
    """Write the steering tables and the sweep figure; return the held-out summary per method."""
    from core.io import atomic_path
    from core.report.html import Report
    from core.steering import chosen_rows, plot_sweep, steering_table

    table = steering_table(rows)
    with atomic_path(run_dir / f"{prefix}.tsv") as tmp:
        table.to_csv(tmp, sep="\t", index=False)
    chosen = chosen_rows(rows)
    with atomic_path(run_dir / f"{prefix}_chosen.tsv") as tmp:
        chosen.to_csv(tmp, sep="\t", index=False)
    rep = Report(title, run_dir)
    rep.heading("Held-out results at the chosen strengths")
    rep.table(chosen)
    rep.figure(plot_sweep(rows, behaviour_label=behaviour_label), f"{prefix}_sweep",
               "Select half: behaviour and unsteered-model perplexity against strength; circles mark "
               "the chosen strength.")
    rep.heading("All rows")
    rep.table(table)
    rep.write(f"{prefix}.html")
    return {str(r["method"]): {k: r[k] for k in ("strength", "behaviour", "fluency", "n")}
            for r in chosen.to_dict("records")}


def run(cfg: DictConfig, run_dir: Path) -> dict[str, Any]:
    from core.adapters import load_adapter
    from core.cli import resolve_callable
    from core.steering import resolve_hook, run_steering

    sc = cfg.get("steer")
    if sc is None or not sc.get("task"):
        raise ConfigError("stage=steer needs a steering task",
                          fix="add +steer=default steer.task=<module:function> (or run a case study)")
    adapter = load_adapter(cfg.model)
    hook = resolve_hook(adapter, int(sc.layer), str(sc.get("site", "resid")))
    sae = None
    if sc.get("sae"):
        from core.checkpoint import load_sae

        sae = load_sae(sc.sae, plain=True).eval()
    task = resolve_callable(str(sc.task))(cfg, adapter)
    strengths = OmegaConf.to_container(sc.strengths, resolve=True)
    outcome = run_steering(adapter, task, hook=hook, layer=int(sc.layer), methods=list(sc.methods),
                           strengths=strengths, sae=sae, k_features=int(sc.get("k_features", 16)),
                           positions=str(sc.get("positions", "last")), seed=int(cfg.get("seed") or 0),
                           max_fluency_ratio=sc.get("max_fluency_ratio"),
                           batch_size=int(sc.get("batch_size", 16)), progress=log.info)
    summary = write_outputs(outcome.rows, Path(run_dir), title=f"Steering: {task.name}",
                            behaviour_label=task.behaviour_label)
    return {"steering": summary, "hook": hook,
            "features": outcome.features.as_dict() if outcome.features else None}

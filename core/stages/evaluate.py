"""Stage ``evaluate``: metrics of a trained dictionary on the held-out split of a store.

    sparsescope stage=evaluate evaluate.sae=DIR/train/sae data.root=STORE hydra.run.dir=DIR/eval

Writes ``run_dir/metrics.json``: one section per evaluator. ``reconstruction`` (MSE, FVU,
cosine, L0, dead/dense fractions, shrinkage) is always there; further evaluators (e.g.
spliced-in model loss, which needs the model) register in ``EVALUATORS``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from core.stages.train import datamodule_from, group

DEFAULTS: dict[str, Any] = {"sae": None, "split": "val", "max_tokens": None, "dense_threshold": 0.1,
                            "evaluators": ["reconstruction"]}


def reconstruction(cfg: DictConfig, ec: dict[str, Any], sae, dm) -> dict[str, Any]:
    from core.eval.metrics import evaluate_dictionary

    loader = dm.val_dataloader() if ec["split"] == "val" else dm.train_dataloader()
    return evaluate_dictionary(sae, loader, max_tokens=ec["max_tokens"], dense_threshold=ec["dense_threshold"])


def spliced(cfg: DictConfig, ec: dict[str, Any], sae, dm) -> dict[str, Any]:
    from core.eval.spliced import spliced_evaluator

    return spliced_evaluator(cfg, ec, sae, dm)


EVALUATORS: dict[str, Callable[..., dict[str, Any]]] = {"reconstruction": reconstruction, "spliced": spliced}


def run(cfg: DictConfig, run_dir: Path) -> dict[str, Any]:
    from core.checkpoint import load_sae
    from core.errors import ConfigError
    from core.eval.metrics import write_metrics

    run_dir = Path(run_dir)
    ec = {**DEFAULTS, **(OmegaConf.to_container(cfg.evaluate, resolve=True) if cfg.get("evaluate") else {})}
    sae = load_sae(ec["sae"] or run_dir / "sae")
    dm = datamodule_from(group(cfg, "data", "store"), run_dir)
    metrics: dict[str, Any] = {}
    for name in ec["evaluators"]:
        if name not in EVALUATORS:
            raise ConfigError(f"unknown evaluator {name!r}", fix=f"use evaluate.evaluators from {sorted(EVALUATORS)}")
        metrics[name] = EVALUATORS[name](cfg, ec, sae, dm)
    write_metrics(metrics, run_dir / "metrics.json")
    return {"metrics": metrics}

"""Stage ``harvest``: run samples through ``cfg.model`` and store activations at the hooks.

Samples come from ``cfg.harvest.samples`` (a ``_target_`` that returns a list of Sample:
a domain plugin's loader), or from a FASTA file (``harvest.fasta``) or a text file with one
prompt per line (``harvest.texts``). Stores go to ``<run_dir>/<harvest.out_dir>/<hook>/``;
re-running the same command resumes an interrupted harvest.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from core.errors import ConfigError


def run(cfg: DictConfig, run_dir: Path) -> dict[str, Any]:
    from core.adapters import load_adapter
    from core.harvest import harvest
    from core.harvest.inputs import DEFAULTS, hooks_of, load_samples

    if cfg.get("model") is None:
        raise ConfigError("stage=harvest needs a model", fix="add model=<antiberty|smollm2|esm2_fair|...>")
    hc = {**DEFAULTS, **(OmegaConf.to_container(cfg.harvest, resolve=True) if cfg.get("harvest") else {})}
    samples = load_samples(hc)
    adapter = load_adapter(cfg.model)
    hooks = hooks_of(hc, adapter)
    out = Path(run_dir) / hc["out_dir"]
    stores = harvest(adapter, samples, hooks, out, batch_tokens=int(hc["batch_tokens"]),
                     max_batch=int(hc["max_batch"]), positions=str(hc["positions"]),
                     drop_special=bool(hc["drop_special"]), dtype=str(hc["dtype"]),
                     shard_tokens=int(hc["shard_tokens"]), sort_window=int(hc["sort_window"]))
    return {"harvest": {h: {"path": str(s.root), "n_tokens": s.n_tokens, "n_samples": s.n_samples, "d": s.d,
                            "skipped": s.meta.get("skipped", {})} for h, s in stores.items()},
            "model": adapter.name, "n_samples": len(samples)}

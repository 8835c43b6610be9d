"""Stage ``harvest``: run samples through ``cfg.model`` and store activations at the hooks.

Samples come from ``cfg.harvest.samples`` (a ``_target_`` that returns a list of Sample:
a domain plugin's loader), or from a FASTA file (``harvest.fasta``) or a text file with one
prompt per line (``harvest.texts``). Stores go to ``<run_dir>/<harvest.out_dir>/<hook>/``;
re-running the same command resumes an interrupted harvest. ``harvest.parallel.devices=N``
runs it on N processes (Lightning's predict loop under DDP; ``core.harvest.parallel``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from core.errors import ConfigError, DataError


def run(cfg: DictConfig, run_dir: Path) -> dict[str, Any]:
    from core.adapters import load_adapter
    from core.harvest import harvest
    from core.harvest.inputs import harvest_options, hooks_of, load_samples

    if cfg.get("model") is None:
        raise ConfigError("stage=harvest needs a model", fix="add model=<antiberty|smollm2|esm2_fair|...>")
    hc = harvest_options(OmegaConf.to_container(cfg.harvest, resolve=True) if cfg.get("harvest") else {})
    samples, reader_skipped = load_samples(hc)
    adapter = load_adapter(cfg.model)
    hooks = hooks_of(hc, adapter)
    out = Path(run_dir) / hc["out_dir"]
    try:
        stores = harvest(adapter, samples, hooks, out, batch_tokens=int(hc["batch_tokens"]),
                         max_batch=int(hc["max_batch"]), positions=str(hc["positions"]),
                         drop_special=bool(hc["drop_special"]), dtype=str(hc["dtype"]),
                         shard_tokens=int(hc["shard_tokens"]), sort_window=int(hc["sort_window"]),
                         parallel=hc.get("parallel"))
    except DataError as err:
        source = hc.get("fasta") or hc.get("texts")
        if err.path or not source:
            raise
        raise DataError(err.message, path=str(source), record=err.record, fix=err.fix) from None
    return {"harvest": {h: {"path": str(s.root), "n_tokens": s.n_tokens, "n_samples": s.n_samples, "d": s.d,
                            "skipped": s.meta.get("skipped", {}), "skipped_ids": s.meta.get("skipped_ids", {}),
                            "chunked": s.meta.get("chunked", 0), "chunked_ids": s.meta.get("chunked_ids", {})}
                        for h, s in stores.items()},
            "model": adapter.name, "n_samples": len(samples), "reader_skipped": reader_skipped}

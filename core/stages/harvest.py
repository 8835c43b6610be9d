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

from core.errors import ConfigError, DataError
from core.samples import Sample

DEFAULTS: dict[str, Any] = {"samples": None, "fasta": None, "texts": None, "limit": None,
                            "hooks": None, "layers": None, "site": "hook_resid_post", "out_dir": "activations",
                            "batch_tokens": 8192, "max_batch": 256, "positions": "all", "drop_special": True,
                            "dtype": "float32", "shard_tokens": 65536, "sort_window": 2048}


def read_fasta(path: str | Path) -> list[Sample]:
    from Bio import SeqIO

    p = Path(path)
    if not p.exists():
        raise DataError("FASTA file does not exist", path=str(p), fix="set harvest.fasta to an existing file")
    samples = [Sample(rec.id, str(rec.seq), {"description": rec.description}) for rec in SeqIO.parse(str(p), "fasta")]
    if not samples:
        raise DataError("no FASTA records found", path=str(p), fix="check that the file is FASTA ('>id' lines)")
    return samples


def read_texts(path: str | Path) -> list[Sample]:
    p = Path(path)
    if not p.exists():
        raise DataError("text file does not exist", path=str(p), fix="set harvest.texts to an existing file")
    lines = [line for line in p.read_text().splitlines() if line.strip()]
    return [Sample(f"line{i + 1}", line) for i, line in enumerate(lines)]


def load_samples(hc: dict[str, Any]) -> list[Sample]:
    if hc.get("samples"):
        from hydra.utils import instantiate

        samples = list(instantiate(hc["samples"], _convert_="all"))
    elif hc.get("fasta"):
        samples = read_fasta(hc["fasta"])
    elif hc.get("texts"):
        samples = read_texts(hc["texts"])
    else:
        raise ConfigError("stage=harvest has no samples",
                          fix="set harvest.fasta=FILE, harvest.texts=FILE or harvest.samples._target_=<loader>")
    return samples[: int(hc["limit"])] if hc.get("limit") else samples


def hooks_of(hc: dict[str, Any], adapter: Any) -> list[str]:
    if hc.get("hooks"):
        return list(hc["hooks"])
    layers = hc.get("layers")
    if layers is None:
        layers = [adapter.n_layers // 2]
    return [f"blocks.{int(i) % adapter.n_layers}.{hc['site']}" for i in layers]


def run(cfg: DictConfig, run_dir: Path) -> dict[str, Any]:
    from core.adapters import load_adapter
    from core.harvest import harvest

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

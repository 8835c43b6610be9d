"""What the harvest stage harvests: samples from the config (a domain loader, a FASTA file or
a text file of prompts) and the hook names (explicit, or a site at chosen layers)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

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
    """The samples ``hc`` names, cut to ``hc["limit"]``."""
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
    """``hc["hooks"]``, or ``hc["site"]`` at ``hc["layers"]`` (default: the middle block);
    ``site: mlp_pair`` gives each layer's MLP input and output (a transcoder's pair)."""
    from core.harvest.pairs import PAIR_SITE, check_layers, mlp_pair_hooks

    if hc.get("hooks"):
        return list(hc["hooks"])
    layers = hc.get("layers")
    if layers is None:
        layers = [adapter.n_layers // 2]
    if hc["site"] == PAIR_SITE:
        return mlp_pair_hooks(layers, adapter.n_layers)
    return [f"blocks.{i}.{hc['site']}" for i in check_layers(layers, adapter.n_layers)]

"""What the harvest stage harvests: samples from the config (a domain loader, a sequence file
read by the domain's reader, or a text file of prompts) and the hook names (explicit, or a
site at chosen layers)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from core.errors import ConfigError, DataError
from core.samples import Sample, read_sample_file

DEFAULTS: dict[str, Any] = {"samples": None, "fasta": None, "reader": None, "on_error": None, "texts": None,
                            "limit": None,
                            "hooks": None, "layers": None, "site": "hook_resid_post", "out_dir": "activations",
                            "batch_tokens": 8192, "max_batch": 256, "positions": "all", "drop_special": True,
                            "dtype": "bfloat16", "shard_tokens": 65536, "sort_window": 2048}


CONF_DEFAULTS = Path(__file__).resolve().parents[2] / "conf" / "harvest" / "default.yaml"


def harvest_options(given: dict[str, Any]) -> dict[str, Any]:
    """``given`` over the documented defaults (``conf/harvest/default.yaml``, which also names the
    reader for ``fasta``), so a harvest block that sets only ``fasta`` reads it as ``+harvest=default`` does."""
    from omegaconf import OmegaConf

    documented = OmegaConf.to_container(OmegaConf.load(CONF_DEFAULTS), resolve=True) if CONF_DEFAULTS.exists() else {}
    return {**DEFAULTS, **documented, **given}


def read_texts(path: str | Path) -> list[Sample]:
    p = Path(path)
    if not p.exists():
        raise DataError("text file does not exist", path=str(p), fix="set harvest.texts to an existing file")
    lines = [line for line in p.read_text().splitlines() if line.strip()]
    return [Sample(f"line{i + 1}", line) for i, line in enumerate(lines)]


def load_samples(hc: dict[str, Any]) -> tuple[list[Sample], dict[str, int]]:
    """The samples ``hc`` names, cut to ``hc["limit"]``, and what the reader skipped (counts)."""
    skipped: dict[str, int] = {}
    if hc.get("samples"):
        from hydra.utils import instantiate

        samples = list(instantiate(hc["samples"], _convert_="all"))
    elif hc.get("fasta"):
        samples, skipped = read_sample_file(hc.get("reader"), hc["fasta"], on_error=hc.get("on_error"))
    elif hc.get("texts"):
        samples = read_texts(hc["texts"])
    else:
        raise ConfigError("stage=harvest has no samples",
                          fix="set harvest.fasta=FILE, harvest.texts=FILE or harvest.samples._target_=<loader>")
    return (samples[: int(hc["limit"])] if hc.get("limit") else samples), skipped


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

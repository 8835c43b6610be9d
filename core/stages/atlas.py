"""Stage ``atlas``: the static feature atlas of a run (``<hydra.run.dir>/<atlas.out_dir>/index.html``).

``sparsescope stage=atlas hydra.run.dir=RUN`` builds it inside the run; ``atlas.run=RUN`` reads
another run and writes under this stage's own folder. Options (``+atlas.<key>=...``): ``saes``
(dictionary names, null = all with an enrichment folder), ``top_n`` and ``n_quantiles``
(examples per feature), ``n_neighbours``, ``window`` (tokens each side of an example's peak),
``bins`` (histogram), ``store`` (the activation store, when the run has several for one hook).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from core.errors import ConfigError

DEFAULTS: dict[str, Any] = {"run": None, "out_dir": "atlas", "saes": None, "top_n": 6, "n_quantiles": 4,
                            "n_neighbours": 8, "window": 40, "bins": 24, "store": None}


def atlas_options(cfg: DictConfig) -> dict[str, Any]:
    given = OmegaConf.to_container(cfg.atlas, resolve=True) if cfg.get("atlas") else {}
    unknown = sorted(set(given) - set(DEFAULTS))
    if unknown:
        raise ConfigError(f"unknown atlas options {unknown}", fix=f"valid options are {sorted(DEFAULTS)}")
    return {**DEFAULTS, **given}


def run(cfg: DictConfig, run_dir: Path) -> dict[str, Any]:
    from core.atlas import build_atlas

    opts = atlas_options(cfg)
    source = Path(str(opts["run"])).expanduser() if opts["run"] else Path(run_dir)
    summary = build_atlas(source, Path(run_dir) / str(opts["out_dir"]), saes=opts["saes"], top_n=int(opts["top_n"]),
                          n_quantiles=int(opts["n_quantiles"]), n_neighbours=int(opts["n_neighbours"]),
                          window=int(opts["window"]), bins=int(opts["bins"]), store=opts["store"])
    return {"atlas": summary}

"""Stage ``atlas``: the static feature atlas of a run (``<hydra.run.dir>/<atlas.out_dir>/index.html``).

``sparsescope stage=atlas +atlas.run=RUN hydra.run.dir=OUT`` reads the run and writes
``OUT/atlas/`` (a case study builds ``RUN/atlas/`` itself). Without ``atlas.run`` the stage's own
folder is the run; a folder whose ``results.json`` another job wrote is refused, since the CLI
would replace it. Options (``+atlas.<key>=...``): ``saes``
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
    if source.resolve() == Path(run_dir).resolve():
        _refuse_foreign_results(Path(run_dir))
    summary = build_atlas(source, Path(run_dir) / str(opts["out_dir"]), saes=opts["saes"], top_n=int(opts["top_n"]),
                          n_quantiles=int(opts["n_quantiles"]), n_neighbours=int(opts["n_neighbours"]),
                          window=int(opts["window"]), bins=int(opts["bins"]), store=opts["store"])
    return {"atlas": summary}


def _refuse_foreign_results(run_dir: Path) -> None:
    from core.io import read_json

    done = run_dir / "results.json"
    if not done.exists():
        return
    try:
        name = str((read_json(done).get("run") or {}).get("name", ""))
    except (OSError, ValueError, AttributeError):
        name = "another job"
    if name != "stage=atlas":
        raise ConfigError(f"this folder's results.json is the record of {name or 'another job'}; "
                          "the atlas stage would replace it", path=str(done),
                          fix="sparsescope stage=atlas +atlas.run=<this folder> hydra.run.dir=<a new folder>")

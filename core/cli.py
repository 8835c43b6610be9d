"""The ``sparsescope`` command: Hydra composes the config, this dispatches to a case study or one stage.

``sparsescope case_study=<name> hydra.run.dir=DIR`` runs a whole case study;
``sparsescope stage=<name> ...`` runs one stage on the composed config;
``sparsescope annotate annotate.fasta=FILE annotate.run=RUN ...`` is ``stage=annotate_sequences``. Every run writes
``DIR/results.json``. A ``UserError`` (bad input, bad config) prints one message and exits
non-zero without a traceback.
"""

from __future__ import annotations

import importlib
import logging
import sys
import time
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig, OmegaConf

from core.errors import UserError
from core.io import write_json

log = logging.getLogger("sparsescope")

CONF_DIR = str(Path(__file__).resolve().parent.parent / "conf")


def resolve_callable(spec: str):
    """``"package.module:function"`` -> the function."""
    module, _, name = spec.partition(":")
    return getattr(importlib.import_module(module), name)


def run_dir_of(cfg: DictConfig) -> Path:
    from hydra.core.hydra_config import HydraConfig

    try:
        return Path(HydraConfig.get().runtime.output_dir)
    except ValueError:
        return Path(cfg.get("run_dir") or ".").resolve()


def record_config(cfg: DictConfig, run_dir: Path, *, replace: bool) -> None:
    """Keep the run's ``.hydra/config.yaml`` and ``overrides.yaml`` (what ``annotate`` and a
    reader of the run rely on). Hydra itself would rewrite them at every start, so a failed
    command in a finished run's folder would replace the record of what produced it; here a
    start writes them only into a folder that has none, and a success replaces them."""
    from hydra.core.hydra_config import HydraConfig

    from core.io import write_text

    target = run_dir / ".hydra"
    if not replace and (target / "config.yaml").exists():
        return
    target.mkdir(parents=True, exist_ok=True)
    write_text(target / "config.yaml", OmegaConf.to_yaml(cfg))
    try:
        overrides = list(HydraConfig.get().overrides.task)
    except ValueError:
        return
    write_text(target / "overrides.yaml", OmegaConf.to_yaml(OmegaConf.create(overrides)))


def execute(cfg: DictConfig, run_dir: Path) -> dict[str, Any]:
    """Run the stage named by ``cfg.stage`` or, when it is null, the whole case study."""
    from core.runtime import configure_runtime, is_global_zero

    configure_runtime(cfg)
    t0 = time.time()
    if cfg.get("stage"):
        stage = str(cfg.stage)
        try:
            module = importlib.import_module(f"core.stages.{stage}")
        except ModuleNotFoundError:
            known = sorted(p.stem for p in (Path(__file__).parent / "stages").glob("*.py")
                           if not p.stem.startswith("_"))
            raise UserError(f"unknown stage {stage!r}", fix=f"use stage=<one of {known}>") from None
        results = module.run(cfg, run_dir)
        name = f"stage={stage}"
    else:
        runner = resolve_callable(cfg.case_study.runner)
        results = runner(cfg, run_dir)
        name = f"case_study={cfg.case_study.name}"
    results = dict(results or {})
    results.setdefault("run", {})
    results["run"].update({"name": name, "seconds": round(time.time() - t0, 1)})
    if is_global_zero():  # the other processes of a DDP run return the same results without writing them
        write_json(run_dir / "results.json", results)
        log.info("wrote %s", run_dir / "results.json")
    return results


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="config")
def _hydra_main(cfg: DictConfig) -> None:
    run_dir = run_dir_of(cfg)
    run_dir.mkdir(parents=True, exist_ok=True)
    OmegaConf.set_struct(cfg, True)
    record_config(cfg, run_dir, replace=False)
    try:
        execute(cfg, run_dir)
        record_config(cfg, run_dir, replace=True)
    except UserError as err:
        print(f"sparsescope: error: {err}", file=sys.stderr)
        sys.exit(err.exit_code)
    except KeyboardInterrupt:
        print("sparsescope: interrupted; finished artefacts are kept and the run resumes "
              "where it stopped when started again with the same hydra.run.dir", file=sys.stderr)
        sys.exit(130)


# Sub-commands: a first argument without "=" that names one expands into the overrides it stands for.
SUBCOMMANDS = {"annotate": ["stage=annotate_sequences", "+annotate=default"]}


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] in SUBCOMMANDS:
        sys.argv[1:2] = SUBCOMMANDS[sys.argv[1]]
    _hydra_main()


if __name__ == "__main__":
    main()

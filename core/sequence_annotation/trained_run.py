"""A trained run directory as the annotator and the atlas see it: its dictionaries, the model
config they were harvested with, and the labels the run found for their features.

A run is any folder a case study or ``stage=train`` wrote: dictionary folders (``sae/`` in
the SAELens layout, e.g. ``layer3/sae``), Hydra's saved config (``.hydra/config.yaml``,
whose ``model`` block names the adapter), and per dictionary, when present, the enrichment
folder beside it (``layer3/enrichment/features.h5ad``) and explanations
(``explanations/explanations.tsv``: columns ``feature`` and ``explanation``, optionally a
``score``). Nothing here writes; every problem is a ``UserError`` naming the folder.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
from omegaconf import DictConfig, OmegaConf

from core.enrich.readback import has_enrichment, read_feature_summary
from core.errors import ConfigError, DataError

log = logging.getLogger(__name__)

CONF_MODEL = Path(__file__).resolve().parents[2] / "conf" / "model"
EXPLANATION_FILES = ("explanations/explanations.tsv", "explanations/explanations.parquet",
                     "explanations.tsv", "explanations.parquet")
SCORE_COLUMNS = ("score", "detection", "fuzz", "concept_auroc", "auroc")


@dataclass
class RunDictionary:
    """One dictionary of a run, its hook and the files that label its features."""

    name: str
    folder: Path
    hook: str | None
    model_name: str | None
    d_in: int
    d_sae: int
    enrichment: Path | None = None
    explanation_file: Path | None = None
    _sae: Any = field(default=None, repr=False)
    _features: pd.DataFrame | None = field(default=None, repr=False)

    @property
    def sae(self):
        if self._sae is None:
            from core.checkpoint import load_sae

            self._sae = load_sae(self.folder).eval()
        return self._sae

    def feature_labels(self) -> pd.DataFrame:
        """Per feature (integer index): the enrichment summary (when the run has one) joined with
        the explanations (``explanation``, ``explanation_score``); empty columns otherwise."""
        if self._features is None:
            table = read_feature_summary(self.enrichment) if has_enrichment(self.enrichment) else \
                pd.DataFrame(index=pd.RangeIndex(self.d_sae, name="feature"))
            if self.explanation_file is not None:
                table = table.join(read_explanations(self.explanation_file), how="left")
            for col in ("best_concept", "explanation"):
                if col not in table.columns:
                    table[col] = ""
                table[col] = table[col].fillna("").astype(str)
            for col in ("max_activation", "f1_test", "explanation_score", "density"):
                if col not in table.columns:
                    table[col] = float("nan")
            self._features = table
        return self._features


def read_explanations(path: Path) -> pd.DataFrame:
    """``feature`` (int or ``f<int>``), ``explanation`` and an optional score column, indexed by feature."""
    path = Path(path)
    try:
        table = pd.read_parquet(path) if path.suffix == ".parquet" else pd.read_csv(path, sep="\t")
    except (OSError, ValueError) as err:
        raise DataError(f"cannot read the explanations ({err})", path=str(path),
                        fix="write a TSV with columns feature, explanation (and optionally score)") from None
    if not {"feature", "explanation"} <= set(table.columns):
        raise DataError(f"explanations have columns {list(table.columns)}", path=str(path),
                        fix="use columns feature, explanation (and optionally score)")
    table["feature"] = table["feature"].astype(str).str.lstrip("f").astype(int)
    score = next((c for c in SCORE_COLUMNS if c in table.columns), None)
    out = pd.DataFrame({"explanation": table["explanation"].fillna("").astype(str).to_numpy(),
                        "explanation_score": table[score].to_numpy(float) if score else float("nan")},
                       index=pd.Index(table["feature"].to_numpy(), name="feature"))
    return out[~out.index.duplicated(keep="first")]


def _is_dictionary(folder: Path) -> bool:
    return (folder / "cfg.json").exists() and (folder / "sae_weights.safetensors").exists()


def _name(run: Path, folder: Path) -> str:
    rel = folder.parent.relative_to(run) if folder.parent != run else Path(folder.name)
    return "_".join(rel.parts) or folder.name


def find_dictionaries(run: str | Path, names: Sequence[str] | None = None) -> list[RunDictionary]:
    """Every dictionary folder under ``run`` (Lightning checkpoint folders and hidden ones
    skipped), or the ones ``names`` selects."""
    from core.checkpoint import read_cfg

    run = Path(run)
    if not run.is_dir():
        raise DataError("run directory does not exist", path=str(run),
                        fix="point annotate.run (or atlas.run) at a folder a case study or stage=train wrote")
    folders = [run] if _is_dictionary(run) else sorted(
        p.parent for p in run.rglob("cfg.json")
        if _is_dictionary(p.parent) and not any(part.startswith(".") or part == "checkpoints"
                                                for part in p.parent.relative_to(run).parts))
    if not folders:
        raise DataError("no dictionary in this run directory (no folder holds cfg.json and "
                        "sae_weights.safetensors)", path=str(run),
                        fix="train one first (a case study, or stage=train) or point at the run that has it")
    found = []
    for folder in folders:
        cfg = read_cfg(folder)
        meta = dict(cfg.get("metadata") or {})
        found.append(RunDictionary(
            name=_name(run, folder) if folder != run else folder.name, folder=folder,
            hook=cfg.get("hook_name") or meta.get("hook_name") or meta.get("hook"),
            model_name=cfg.get("model_name") or meta.get("model_name") or meta.get("model"),
            d_in=int(cfg["d_in"]), d_sae=int(cfg["d_sae"]),
            enrichment=folder.parent / "enrichment" if has_enrichment(folder.parent / "enrichment") else None,
            explanation_file=next((folder.parent / f for f in EXPLANATION_FILES if (folder.parent / f).exists()),
                                  None)))
    if names:
        by_name = {d.name: d for d in found}
        unknown = [n for n in names if str(n) not in by_name]
        if unknown:
            raise ConfigError(f"no dictionary named {unknown[0]!r} in this run", path=str(run),
                              fix=f"choose from {sorted(by_name)}")
        found = [by_name[str(n)] for n in names]
    return found


def model_config(run: str | Path, dictionaries: Sequence[RunDictionary],
                 override: str | Path | dict | None = None) -> tuple[DictConfig, str]:
    """The model config to rebuild the run's adapter, and where it came from.

    ``override`` (a YAML path or a dict) wins; then the run's saved ``.hydra/config.yaml``
    when its model is the one the dictionaries were trained on; then ``conf/model/<name>.yaml``
    for the model the dictionaries' cfg.json names."""
    if override:
        if isinstance(override, (str, Path)):
            path = Path(str(override)).expanduser()
            if not path.exists():
                raise DataError("model config file does not exist", path=str(path),
                                fix="pass a YAML like conf/model/antiberty.yaml")
            return OmegaConf.load(path), str(path)
        return OmegaConf.create(override), "annotate.model"
    names = {d.model_name for d in dictionaries if d.model_name}
    saved = Path(run) / ".hydra" / "config.yaml"
    if saved.exists():
        model = OmegaConf.load(saved).get("model")
        if model is not None and "_target_" in model and (not names or model.get("name") in names):
            return model, str(saved)
    for name in sorted(names):
        path = CONF_MODEL / f"{name}.yaml"
        if path.exists():
            log.warning("using %s: the run has no saved model config for %r", path, name)
            return OmegaConf.load(path), str(path)
    raise ConfigError("cannot tell which model this run's dictionaries read (no .hydra/config.yaml with a "
                      "model block, and no conf/model/<name>.yaml for the model named in cfg.json)",
                      path=str(run), fix="pass the model config: annotate.model=conf/model/<name>.yaml")

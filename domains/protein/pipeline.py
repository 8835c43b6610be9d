"""The steps every protein case study shares: harvest layers, train one SAE per layer, enrich.

Each step writes into the run directory and is skipped when its output is already there,
so re-running a case study with the same ``hydra.run.dir`` picks up where it stopped
(harvest and training also resume inside themselves).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd
from omegaconf import DictConfig, OmegaConf

from core.errors import ConfigError, DataError
from core.io import read_json, write_json
from domains.protein.records import ProteinRecord

log = logging.getLogger(__name__)


class Timer:
    """Seconds per named step, for results.json (what a run costs, measured)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    def __call__(self, name: str):
        timer = self

        class _Block:
            def __enter__(self):
                self.t0 = time.perf_counter()

            def __exit__(self, *exc):
                timer.seconds[name] = round(timer.seconds.get(name, 0.0) + time.perf_counter() - self.t0, 1)

        return _Block()


def resolve_path(path: str | Path) -> Path:
    """A data path as given, or, when relative and absent from the working directory, relative to
    the project root (so configs can name files shipped in the repository)."""
    p = Path(str(path)).expanduser()
    if p.is_absolute() or p.exists():
        return p
    root = Path(__file__).resolve().parents[2]
    return root / p if (root / p).exists() else p


def layer_hooks(layers: Sequence[int], n_layers: int, site: str = "hook_resid_post") -> list[str]:
    bad = [x for x in layers if not 0 <= int(x) < n_layers]
    if bad:
        raise ConfigError(f"layers {bad} out of range for a model with {n_layers} layers",
                          fix=f"choose case_study.layers from 0..{n_layers - 1}")
    return [f"blocks.{int(x)}.{site}" for x in layers]


def harvest_layers(adapter: Any, records: Sequence[ProteinRecord], hooks: Sequence[str], out_dir: Path, *,
                   batch_tokens: int, dtype: str = "float32", shard_tokens: int = 65536) -> dict[str, Any]:
    """Residue activations at ``hooks`` (sample ``i`` = ``records[i]``; specials dropped), stored
    as ``dtype`` (readers always hand out float32)."""
    from core.harvest import harvest

    samples = [r.to_sample() for r in records]
    return harvest(adapter, samples, list(hooks), out_dir, batch_tokens=int(batch_tokens), positions="all",
                   drop_special=True, dtype=dtype, shard_tokens=int(shard_tokens))


def split_and_harvest(records: Sequence[ProteinRecord], split_cfg: Any, model_cfg: Any, study: Any,
                      run_dir: Path, timer: Timer) -> tuple[pd.DataFrame, dict[int, str], list[str], dict[str, Any]]:
    """What every protein study does once its records are read: sequence-identity splits (cached
    in ``run_dir``), the model, and its residue activations at ``study.layers``.

    Returns the split table, each record's split, the hooks and their stores."""
    from core.adapters import load_adapter
    from domains.protein.splits import cached_splits

    with timer("splits"):
        table = cached_splits(records, split_cfg, run_dir)
        splits = split_by_index(records, table)
    with timer("load_model"):
        adapter = load_adapter(model_cfg)
    hooks = layer_hooks(list(study.layers), adapter.n_layers)
    with timer("harvest"):
        stores = harvest_layers(adapter, records, hooks, Path(run_dir) / "activations",
                                batch_tokens=int(study.harvest_batch_tokens),
                                dtype=str(study.get("harvest_dtype") or "float32"),
                                shard_tokens=int(study.get("harvest_shard_tokens") or 65536))
    return table, splits, hooks, stores


def store_tokens(store: Any) -> pd.DataFrame:
    """The store's (sample, position) rows in store order: the concept matrix's token table."""
    cols = store.load(columns=("sample", "position"))
    return pd.DataFrame({"sample": cols["sample"].numpy(), "position": cols["position"].numpy()})


def train_layer(store: Any, out_dir: Path, sae_cfg: DictConfig | dict) -> tuple[Any, dict]:
    """A TopK (or any registered architecture) SAE on one layer's store; loads it when already trained."""
    from core.checkpoint import load_sae

    out_dir = Path(out_dir)
    done = out_dir / "training.json"
    if done.exists() and (out_dir / "sae" / "cfg.json").exists():
        return load_sae(out_dir / "sae"), read_json(done)
    from core.dictionaries.base import DictionaryConfig
    from core.store import ActivationDataModule
    from core.training import train_sae

    sc = OmegaConf.to_container(sae_cfg, resolve=True) if isinstance(sae_cfg, DictConfig) else dict(sae_cfg)
    d_sae = int(sc.get("d_sae") or int(sc.get("expansion", 8)) * store.d)
    import dataclasses

    fields = {f.name for f in dataclasses.fields(DictionaryConfig)} - {"d_in", "d_sae", "architecture"}
    extra = {k: v for k, v in sc.items() if k in fields and v is not None}
    cfg = DictionaryConfig(architecture=str(sc.get("architecture", "topk")), d_in=store.d, d_sae=d_sae,
                           **extra)
    dm = ActivationDataModule(store.root, batch_size=int(sc.get("batch_size", 1024)),
                              holdout_fraction=float(sc.get("holdout_fraction", 0.05)),
                              seed=int(sc.get("seed", 0)))
    trainer = dict(sc.get("trainer") or {"accelerator": "cpu", "logger": "csv"})
    total = int(sc.get("total_tokens") or int(sc.get("epochs", 4)) * store.n_tokens)
    sae, summary = train_sae(cfg, dm, out_dir, trainer_cfg=trainer, total_tokens=total,
                             lr=sc.get("lr"), init_encoder_scale=bool(sc.get("init_encoder_scale", True)),
                             batch_size=int(sc.get("batch_size", 1024)),
                             metadata={"hook": store.hook, "model": store.model})
    write_json(done, summary)
    return sae, summary


def enrich_layer(sae: Any, store: Any, concepts: Any, splits: dict[int, str], out_dir: Path,
                 enrich_cfg: DictConfig | dict, sample_labels: pd.DataFrame | None = None,
                 subsets: dict[str, Any] | None = None, position_classifiers: Sequence[str] = ()) -> dict:
    """SAE latents, neurons and (``enrich.positional_control``) position-only predictors against the
    concepts; reads back the summary when already done."""
    out_dir = Path(out_dir)
    done = out_dir / "summary.json"
    if done.exists():
        return read_json(done)
    from core.enrich import run_enrichment

    ec = OmegaConf.to_container(enrich_cfg, resolve=True) if isinstance(enrich_cfg, DictConfig) else dict(enrich_cfg)
    summary = run_enrichment(sae, store, concepts, splits, out_dir,
                             thresholds=tuple(ec.get("thresholds", (0.0, 0.15, 0.5, 0.6, 0.8))),
                             min_positives=int(ec.get("min_positives", 5)),
                             neuron_baseline=bool(ec.get("neuron_baseline", True)),
                             sample_labels=sample_labels, normalise=str(ec.get("normalise", "global")),
                             norm_split=str(ec.get("norm_split", "train")),
                             positional_control=bool(ec.get("positional_control", True)),
                             position_classifiers=list(position_classifiers), subsets=subsets)
    write_json(done, summary)
    return summary


def split_by_index(records: Sequence[ProteinRecord], table: pd.DataFrame) -> dict[int, str]:
    """Sample index -> split name, from a split table with ``id`` and ``split`` columns."""
    of = dict(zip(table["id"], table["split"], strict=True))
    missing = [r.id for r in records if r.id not in of]
    if missing:
        raise DataError(f"{len(missing)} proteins have no split (first {missing[0]})",
                        fix="delete the run's splits.tsv so it is rebuilt for these proteins")
    out = {i: of[r.id] for i, r in enumerate(records)}
    counts = pd.Series(out).value_counts()
    for s in ("valid", "test"):
        if counts.get(s, 0) == 0:
            raise DataError(f"the {s} split is empty ({dict(counts)})",
                            fix="use more sequences, a higher split.min_seq_id, or split.method=random")
    return out


def concept_f1(summary: dict, basis: str, prefix: str | None = None) -> dict[str, float]:
    """Best test F1 per concept for one basis (``"sae"`` / ``"neuron"``) from an enrichment summary."""
    per = (summary.get(basis) or {}).get("per_concept") or {}
    return {c: round(float(v["f1_test"]), 4) for c, v in per.items()
            if prefix is None or c.startswith(prefix)}


def count_f1(summary: dict, basis: str, cutoff: float = 0.5, exclude_groups: Sequence[str] = (),
             concept_groups: dict[str, str] | None = None) -> int:
    """Concepts whose best feature reaches test F1 > ``cutoff`` (optionally leaving groups out)."""
    f1 = concept_f1(summary, basis)
    groups = concept_groups or {}
    return sum(1 for c, v in f1.items() if v > cutoff and groups.get(c, "") not in exclude_groups)


def write_atlas(run_dir: Path, options: Any) -> dict[str, Any] | None:
    """The feature atlas of every dictionary of the run (``run_dir/atlas/index.html``) with the
    case study's ``atlas`` options; None when they are null. An atlas already built is kept, so
    a resumed case study does not rebuild it."""
    if options is None:
        return None
    done = run_dir / "atlas" / "atlas.json"
    if done.exists():
        return read_json(done)
    from core.atlas import build_atlas

    return build_atlas(run_dir, run_dir / "atlas", **OmegaConf.to_container(OmegaConf.create(options), resolve=True))

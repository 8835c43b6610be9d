"""Stage ``annotate``: build the token x concept matrix for the harvested tokens.

The domain's concept builder is named by ``cfg.domain.concepts._target_`` and called as
``builder(tokens=<DataFrame sample, position, token>, samples=<samples.tsv DataFrame or None>,
**its other config keys)``. It returns a ``ConceptMatrix`` (rows in the order of ``tokens``)
or a pair ``(ConceptMatrix, sample_labels)`` where ``sample_labels`` is indexed by sample.
Writes ``<run_dir>/<analysis.concepts>.npz/.concepts.tsv/.tokens.tsv`` (+ ``.labels.tsv``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from omegaconf import DictConfig

from core.enrich.concepts import ConceptMatrix
from core.enrich.stage_config import analysis_options, find_store, resolve
from core.errors import ConfigError, DataError
from core.io import atomic_path


def store_tokens(store: Any) -> pd.DataFrame:
    """(sample, position, token) of every stored token, in store order, without the activations."""
    parts = [{k: shard[k].numpy() for k in ("sample", "position", "token")}
             for shard in store.iter_shards(columns=("sample", "position", "token"))]
    if not parts:
        return pd.DataFrame({"sample": np.zeros(0, np.int64), "position": np.zeros(0, np.int64),
                             "token": np.zeros(0, np.int64)})
    return pd.DataFrame({k: np.concatenate([p[k] for p in parts]) for k in ("sample", "position", "token")})


def run(cfg: DictConfig, run_dir: Path) -> dict[str, Any]:
    from hydra.utils import instantiate

    from core.store import ActivationStore

    opts = analysis_options(cfg)
    builder_cfg = (cfg.get("domain") or {}).get("concepts") if cfg.get("domain") else None
    if builder_cfg is None or "_target_" not in builder_cfg:
        raise ConfigError("stage=annotate needs a concept builder at domain.concepts._target_",
                          fix="pick a domain whose config names one (domain=<name>), or add "
                              "+domain.concepts._target_=<module.function>")
    store = ActivationStore(find_store(run_dir, opts), verify=False)
    tokens = store_tokens(store)
    builder = instantiate(builder_cfg, _partial_=True)
    out = builder(tokens=tokens, samples=store.samples())
    cm, labels = (out if isinstance(out, tuple) else (out, None))
    if not isinstance(cm, ConceptMatrix):
        raise DataError(f"the concept builder {builder_cfg['_target_']} returned {type(cm).__name__}",
                        fix="return a core.enrich.concepts.ConceptMatrix (optionally with sample labels)")
    if cm.n_tokens != len(tokens):
        raise DataError(f"the concept builder returned {cm.n_tokens} token rows for {len(tokens)} stored tokens",
                        path=str(store.root), fix="build the matrix on the token table it is given")
    prefix = resolve(run_dir, opts["concepts"])
    cm.save(prefix)
    if labels is not None:
        with atomic_path(f"{prefix}.labels.tsv") as tmp:
            labels.to_csv(tmp, sep="\t", index_label="sample")
    sup = cm.support()
    return {"concepts": {"prefix": str(prefix), "n_tokens": cm.n_tokens, "n_concepts": cm.n_concepts,
                         "n_empty": int((sup["n_tokens"] == 0).sum()), "notes": dict(cm.notes),
                         "sample_labels": list(labels.columns) if labels is not None else []}}

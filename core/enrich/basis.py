"""What the enrichment passes share: the split names, one basis's accumulated results, and
the sample -> split lookup."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from core.enrich.counts import SplitCounts
from core.errors import ConfigError

if TYPE_CHECKING:
    from core.enrich.pools import Pools

SPLITS = ("train", "valid", "test")


@dataclass
class BasisResult:
    """Everything computed for one basis (``"sae"``, ``"neuron"``, ``"position"``).

    ``pools`` holds every pooling of the evaluation samples (rows as ``sample_ids``; a
    ``core.enrich.pools.Pools``, possibly spilled to disk), ``sample_act`` the one the AnnData
    export and the report cards use (``sample_reduce``: max, or the last token's),
    ``reference`` the reference pass (scale and training pools).
    """

    name: str
    feature_names: list[str]
    counts: dict[str, SplitCounts]
    f1: dict[str, np.ndarray] = field(default_factory=dict)
    precision: dict[str, np.ndarray] = field(default_factory=dict)
    recall: dict[str, np.ndarray] = field(default_factory=dict)
    token_f1: dict[str, np.ndarray] = field(default_factory=dict)
    token_best_t: np.ndarray | None = None
    token_best_f: np.ndarray | None = None
    pair_t: np.ndarray | None = None
    best_t: np.ndarray | None = None
    best_f: np.ndarray | None = None
    fmax: np.ndarray | None = None
    fmin: np.ndarray | None = None
    sample_ids: np.ndarray | None = None
    sample_split: np.ndarray | None = None
    pools: Pools | None = None
    sample_reduce: str = "max"
    reference: Any = None
    normalise: str = "global"
    contexts: dict[int, list[dict[str, Any]]] = field(default_factory=dict)

    @property
    def scale(self) -> np.ndarray | None:
        """The per-feature maximum firing is measured against (None: per-sample maxima)."""
        return None if self.reference is None or self.normalise != "global" else self.reference.scale

    @property
    def sample_act(self) -> Any:
        """The per-sample pooling the AnnData export and the report cards use (loaded when spilled)."""
        return self.pools[self.sample_reduce] if self.pools is not None and self.sample_reduce in self.pools else None

    @property
    def n_features(self) -> int:
        return len(self.feature_names)


def split_lookup(splits: Mapping[int, str] | pd.Series) -> Callable[[np.ndarray], np.ndarray]:
    """sample ids -> split codes (index into SPLITS; -1 for samples with no split)."""
    s = pd.Series(splits) if not isinstance(splits, pd.Series) else splits
    bad = sorted(set(s.astype(str)) - set(SPLITS))
    if bad:
        raise ConfigError(f"unknown split names {bad[:5]}", fix=f"use only {SPLITS}")
    keys = np.asarray(s.index, dtype=np.int64)
    codes = np.asarray([SPLITS.index(str(v)) for v in s.to_numpy()], dtype=np.int64)
    order = np.argsort(keys)
    keys, codes = keys[order], codes[order]

    def lookup(sample: np.ndarray) -> np.ndarray:
        sample = np.asarray(sample, dtype=np.int64)
        if not len(keys):
            return np.full(len(sample), -1, dtype=np.int64)
        i = np.minimum(np.searchsorted(keys, sample), len(keys) - 1)
        return np.where(keys[i] == sample, codes[i], -1)

    return lookup

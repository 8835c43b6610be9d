"""Read a sampled examples folder back, one feature at a time.

Each part file is sorted by (feature, role, bin, rank), so a feature's windows are one
contiguous slice per part; only that slice is read (``safe_open`` slices), and the random
pool (a few hundred windows shared by all features) is held in memory.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from safetensors import safe_open

from core.errors import DataError
from core.explain.examples import MANIFEST, ROLE_ACTIVATING, ROLE_HARD, ROLE_RANDOM, SamplerConfig
from core.io import read_json

COLUMNS = ("gid", "feature", "role", "bin", "rank", "sample", "position", "centre", "tokens", "acts")


@dataclass
class Window:
    """A context of one sample: token ids, the feature's activation on each, the chosen token."""

    tokens: np.ndarray
    acts: np.ndarray
    centre: int
    sample: int
    position: int
    bin: int = -1
    rank: int = 0

    @property
    def activation(self) -> float:
        return float(self.acts[self.centre])

    @property
    def active(self) -> np.ndarray:
        return self.acts > 0


@dataclass
class FeatureRecord:
    """What explainers and scorers get for one feature."""

    feature: int
    n_activating: int
    edges: np.ndarray
    train: list[Window] = field(default_factory=list)
    test: list[Window] = field(default_factory=list)
    random: list[Window] = field(default_factory=list)
    hard: list[Window] = field(default_factory=list)
    n_hard_dropped: int = 0

    @property
    def negatives(self) -> list[Window]:
        return self.hard + self.random


class ExampleSet:
    """An examples folder written by ``ExampleSampler``."""

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        path = self.folder / MANIFEST
        if not path.exists():
            raise DataError("no sampled examples here (examples.json is missing)", path=str(path),
                            fix="run stage=explain (it samples the examples first)")
        self.state = read_json(path)
        if not self.state.get("complete"):
            raise DataError("the examples folder is incomplete (sampling was interrupted)", path=str(path),
                            fix="re-run the same command; sampling resumes")
        self.cfg = SamplerConfig(**self.state["config"])
        sel = np.load(self.folder / "selection.npz")
        self.counts, self.edges, self.eligible = sel["counts"], sel["edges"], sel["eligible"]
        self._index: list[tuple[str, np.ndarray]] = []
        pool_windows: list[Window] = []
        pool_active: list[np.ndarray] = []
        for name in self.state["parts"]:
            with safe_open(str(self.folder / name), framework="numpy") as fh:
                feat = fh.get_tensor("feature")
                self._index.append((name, feat))
                ptr, feats = fh.get_tensor("pool_indptr"), fh.get_tensor("pool_features")
                pool_rows = np.flatnonzero(fh.get_tensor("role") == ROLE_RANDOM)
                if len(pool_rows):
                    a, b = int(pool_rows[0]), int(pool_rows[-1]) + 1
                    cols = {c: fh.get_slice(c)[a:b] for c in COLUMNS}
                    order = np.argsort(cols["gid"])
                    pool_gid = fh.get_tensor("pool_gid")
                    pos = np.searchsorted(pool_gid, cols["gid"][order])
                    for k, p in zip(order, pos, strict=True):
                        pool_windows.append(_window(cols, int(k)))
                        pool_active.append(feats[ptr[p]:ptr[p + 1]])
        self.pool, self.pool_active = pool_windows, pool_active

    @property
    def features(self) -> np.ndarray:
        """The features that had enough activating examples to be sampled."""
        return np.flatnonzero(self.eligible)

    @property
    def n_skipped_too_few(self) -> int:
        return int(self.state.get("n_skipped_too_few", 0))

    def record(self, feature: int) -> FeatureRecord:
        f = int(feature)
        rec = FeatureRecord(f, int(self.counts[f]), self.edges[f])
        acts: list[Window] = []
        hard: list[Window] = []
        for name, feat in self._index:
            a, b = np.searchsorted(feat, [f, f + 1])
            if b <= a:
                continue
            with safe_open(str(self.folder / name), framework="numpy") as fh:
                cols = {c: fh.get_slice(c)[int(a):int(b)] for c in COLUMNS}
            for k in range(b - a):
                w = _window(cols, k)
                role = int(cols["role"][k])
                if role == ROLE_ACTIVATING:
                    w.bin, w.rank = int(cols["bin"][k]), int(cols["rank"][k])
                    acts.append(w)
                elif role == ROLE_HARD:
                    hard.append(w)
        per = self.cfg.train_per_bin
        for w in sorted(acts, key=lambda w: (w.bin, w.rank)):
            (rec.train if w.rank < per else rec.test).append(w)
        clean = [w for w in hard if not w.active.any()]
        rec.n_hard_dropped = len(hard) - len(clean)
        rec.hard = clean[: self.cfg.n_hard]
        n_random = self.cfg.n_non_activating - len(rec.hard)
        rng = np.random.default_rng([self.cfg.seed, 2, f])
        seen = {(w.sample, w.position - w.centre) for w in rec.hard}
        for k in rng.permutation(len(self.pool)):
            if len(rec.random) >= n_random:
                break
            w = self.pool[k]
            if not np.isin(f, self.pool_active[k]) and (w.sample, w.position - w.centre) not in seen:
                rec.random.append(w)
                seen.add((w.sample, w.position - w.centre))
        return rec


def _window(cols: dict[str, np.ndarray], k: int) -> Window:
    tokens = cols["tokens"][k]
    n = int((tokens >= 0).sum())
    return Window(tokens=tokens[:n].astype(np.int64), acts=cols["acts"][k][:n].astype(np.float32),
                  centre=int(cols["centre"][k]), sample=int(cols["sample"][k]), position=int(cols["position"][k]))

"""The ``sparse_probing`` evaluation: can k latents (k = 1, 2, 5) predict the domain's labels,
and how do k of the model's own dimensions do with the same procedure?

After SAEBench's k-sparse probing (Karvonen et al. 2025, after Gurnee et al. 2023): per
binary task (one label value against the rest), the k features with the largest absolute
difference of class means on the training split are kept and a logistic regression on those
k is scored on the test split. Labels are per sample (``level: sample``; a TSV with a
``sample`` column, or the metadata columns of the store's ``samples.tsv``; features are
mean-pooled over the sample's tokens, as in SAEBench) or per token (``level: token``; the
columns of a concept matrix). The baseline runs the identical procedure on the raw
dimensions (selection by absolute mean difference covers both signs). Scores are balanced
accuracies, since one-vs-rest tasks are unbalanced (SAEBench balances its sets instead).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from core.errors import ConfigError, DataError
from core.eval.base import Eval, EvalContext, EvalResult


@dataclass
class SparseProbingConfig:
    level: str = "sample"
    labels: str | None = None
    columns: list[str] | None = None
    concepts: str | None = None
    ks: list[int] = field(default_factory=lambda: [1, 2, 5])
    test_fraction: float = 0.3
    min_per_class: int = 10
    max_classes: int = 20
    max_tasks: int = 40
    max_tokens: int = 100_000
    chunk_tokens: int = 32768
    seed: int = 0


@dataclass
class SparseProbingResult(EvalResult):
    level: str
    n_tasks: int
    ks: list[int]
    sae: dict[str, float]
    neuron: dict[str, float]
    tasks: list[dict[str, Any]]

    def headline(self) -> dict[str, float | None]:
        out: dict[str, float | None] = {}
        for k in self.ks:
            out[f"sae_k{k}"] = self.sae.get(str(k))
            out[f"neuron_k{k}"] = self.neuron.get(str(k))
        return out


def k_sparse_probe(Z_train: Any, y_train: np.ndarray, Z_test: Any, y_test: np.ndarray,
                   k: int) -> tuple[float, list[int]]:
    """Balanced test accuracy of a logistic regression on the top-k features by |mean difference|
    (``Z`` dense or sparse; only the k chosen columns are made dense)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import balanced_accuracy_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    diff = np.abs(np.asarray(Z_train[y_train == 1].mean(0)).ravel() - np.asarray(Z_train[y_train == 0].mean(0)).ravel())
    top = np.argsort(-diff, kind="stable")[:k]
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000, class_weight="balanced"))
    model.fit(_dense(Z_train[:, top]), y_train)
    return float(balanced_accuracy_score(y_test, model.predict(_dense(Z_test[:, top])))), [int(t) for t in top]


def _dense(Z: Any) -> np.ndarray:
    return Z.toarray() if sp.issparse(Z) else np.asarray(Z)


def pooled(ctx: EvalContext, chunk_tokens: int) -> tuple[np.ndarray, sp.csr_matrix, np.ndarray]:
    """Per sample: id, mean of the SAE latents (sparse) and mean of the raw activations."""
    from core.enrich.features import DictionaryFeatures, iter_sample_chunks

    src = DictionaryFeatures(ctx.sae, ctx.store, chunk_tokens=chunk_tokens)
    ids, lat, raw = [], [], []
    for ch in iter_sample_chunks(ctx.store.iter_shards(), chunk_tokens, str(ctx.store.root)):
        uniq, inv = np.unique(ch["sample"], return_inverse=True)
        counts = np.bincount(inv)
        S = sp.csr_matrix((1.0 / counts[inv], (inv, np.arange(len(inv)))), shape=(len(uniq), len(inv)),
                          dtype=np.float32)
        ids.append(uniq)
        lat.append(S @ src.encode(ch["acts"]))
        raw.append(S @ np.asarray(ch["acts"], np.float32))
    return np.concatenate(ids), sp.vstack(lat, format="csr"), np.concatenate(raw)


def token_level(ctx: EvalContext, c: SparseProbingConfig):
    """A token sample (at most ``max_tokens``) with latents, raw activations and concept labels."""
    from core.enrich.concepts import ConceptMatrix
    from core.enrich.features import DictionaryFeatures, iter_sample_chunks

    if not c.concepts:
        raise ConfigError("sparse_probing with level=token needs a concept matrix",
                          fix="set evaluate.sparse_probing.concepts=<prefix written by stage=annotate>")
    cm = ConceptMatrix.load(c.concepts)
    src = DictionaryFeatures(ctx.sae, ctx.store, chunk_tokens=c.chunk_tokens)
    rate = min(1.0, c.max_tokens / max(ctx.store.n_tokens, 1))
    rng = np.random.default_rng(c.seed)
    smp, lat, raw, lab = [], [], [], []
    for ch in iter_sample_chunks(ctx.store.iter_shards(), c.chunk_tokens, str(ctx.store.root)):
        rows = cm.row_index(ch["sample"], ch["position"])
        keep = (rows >= 0) & (rng.random(len(rows)) < rate)
        if not keep.any():
            continue
        smp.append(ch["sample"][keep])
        lat.append(src.encode(ch["acts"][keep]))
        raw.append(np.asarray(ch["acts"][keep], np.float32))
        lab.append(cm.values[rows[keep]] > 0)
    if not smp:
        raise DataError("no store token has a row in the concept matrix", path=str(c.concepts),
                        fix="use the concept matrix annotated from this store's samples")
    labels = sp.vstack(lab, format="csc")
    return np.concatenate(smp), sp.vstack(lat, format="csr"), np.concatenate(raw), labels, cm.names


def sample_labels(ctx: EvalContext, c: SparseProbingConfig) -> pd.DataFrame:
    if c.labels:
        table = pd.read_csv(c.labels, sep="\t")
        if "sample" not in table.columns:
            raise DataError("the labels table has no 'sample' column", path=str(c.labels),
                            fix="give a TSV with a 'sample' column (store sample index) and label columns")
        table = table.set_index("sample")
    else:
        table = ctx.store.samples()
        if table is None:
            raise DataError("the store has no samples.tsv to take labels from", path=str(ctx.store.root),
                            fix="set evaluate.sparse_probing.labels=<TSV with sample and label columns>")
    cols = c.columns or [k for k in table.columns if k not in ("id", "text", "description")]
    missing = [k for k in cols if k not in table.columns]
    if missing:
        raise ConfigError(f"label columns {missing} are not in the labels table",
                          fix=f"choose evaluate.sparse_probing.columns from {list(table.columns)}")
    return table[cols]


class SparseProbingEval(Eval):
    name = "sparse_probing"
    Config = SparseProbingConfig

    def tasks(self, ctx: EvalContext):
        """(name, sample ids or rows, binary labels, latents, raw) per task."""
        c = self.config
        if c.level == "sample":
            ids, lat, raw = pooled(ctx, c.chunk_tokens)
            table = sample_labels(ctx, c).reindex(ids)
            for col in table.columns:
                values = table[col].astype("string").replace("", pd.NA)
                for v in values.value_counts().index[: c.max_classes]:
                    y = (values == v).fillna(False).to_numpy(bool)
                    known = values.notna().to_numpy()
                    yield f"{col}={v}", ids[known], y[known], lat[known], raw[known]
        elif c.level == "token":
            smp, lat, raw, labels, names = token_level(ctx, c)
            for j, name in enumerate(names):
                yield name, smp, labels[:, j].toarray().ravel(), lat, raw
        else:
            raise ConfigError(f"sparse_probing level={c.level!r}", fix="use level=sample or level=token")

    def run(self, ctx: EvalContext) -> SparseProbingResult:
        from core.store import holdout_mask

        c = self.config
        rows: list[dict[str, Any]] = []
        for name, groups, y, lat, raw in self.tasks(ctx):
            test = holdout_mask(groups, c.test_fraction, c.seed + 101).numpy()
            if min(y[~test].sum(), (~y[~test]).sum(), y[test].sum(), (~y[test]).sum()) < c.min_per_class:
                continue
            if len({r["task"] for r in rows}) >= c.max_tasks:
                break
            for basis, Z in (("sae", lat), ("neuron", raw)):
                for k in c.ks:
                    acc, top = k_sparse_probe(Z[~test], y[~test], Z[test], y[test], int(k))
                    rows.append({"task": name, "basis": basis, "k": int(k), "balanced_accuracy": acc,
                                 "features": top, "n_train": int((~test).sum()), "n_test": int(test.sum()),
                                 "n_positive": int(y.sum())})
        if not rows:
            raise DataError("sparse_probing found no label with enough examples in both splits",
                            fix=f"give labels with at least {c.min_per_class} examples per class and split, "
                                "or lower evaluate.sparse_probing.min_per_class")
        df = pd.DataFrame(rows)
        means = df.groupby(["basis", "k"])["balanced_accuracy"].mean()
        per = {b: {str(k): float(means.get((b, k), np.nan)) for k in c.ks} for b in ("sae", "neuron")}
        return SparseProbingResult(c.level, int(df["task"].nunique()), [int(k) for k in c.ks], per["sae"],
                                   per["neuron"], rows)

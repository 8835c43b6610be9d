"""From sparse per-token features to what a reader asks of one sequence: which features fire,
where (contiguous spans), how strongly relative to the run, and what the run says they mean.

Ranking: a feature's peak in the sequence divided by its maximum over the run's evaluated
tokens (the enrichment table's ``max_activation``, InterPLM's per-feature scale; never the
sequence's own maximum, which would stretch a weak feature to 1). Without an enrichment
table features rank by raw peak. A span is a run of consecutive positions where the
activation exceeds ``span_threshold`` x that maximum (0: wherever the feature is non-zero).
Positions in the tables are 1-based, spans inclusive.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from core.samples import Sample
from core.sequence_annotation.encode import TokenFeatures


def runs(positions: np.ndarray) -> list[tuple[int, int]]:
    """Sorted 0-based positions -> maximal runs of consecutive ones, ``(first, last)`` inclusive."""
    if not len(positions):
        return []
    breaks = np.flatnonzero(np.diff(positions) != 1)
    starts = np.concatenate([[0], breaks + 1])
    ends = np.concatenate([breaks, [len(positions) - 1]])
    return [(int(positions[a]), int(positions[b])) for a, b in zip(starts, ends, strict=True)]


def region_track(entry: dict[str, Sequence[Any]] | None, length: int) -> dict[str, np.ndarray]:
    """A region annotator's per-sample columns (``position`` 0-based, ``region``, extras) as arrays
    over all ``length`` positions (``None`` where the annotator said nothing)."""
    if not entry:
        return {}
    pos = np.asarray(entry["position"], dtype=np.int64)
    out = {}
    for key, values in entry.items():
        if key == "position":
            continue
        arr = np.full(length, None, dtype=object)
        ok = (pos >= 0) & (pos < length)
        arr[pos[ok]] = np.asarray(list(values), dtype=object)[ok]
        out[key] = arr
    return out


def region_share(regions: np.ndarray | None, positions: np.ndarray) -> str:
    """``"CDR3 83%, FR4 17%"``: the regions of the given positions, most frequent first."""
    if regions is None or not len(positions):
        return ""
    counts = Counter(r for r in regions[positions] if r is not None)
    total = sum(counts.values())
    return ", ".join(f"{name} {round(100 * n / total)}%" for name, n in counts.most_common())


@dataclass
class FeatureLabels:
    """A dictionary's feature table as arrays indexed by feature (lookups per sequence stay cheap)."""

    scale: np.ndarray
    concept: list[str]
    f1: np.ndarray
    explanation: list[str]
    explanation_score: np.ndarray

    @classmethod
    def from_table(cls, table: pd.DataFrame, n_features: int) -> FeatureLabels:
        t = table.reindex(range(n_features))
        return cls(t["max_activation"].to_numpy(float), t["best_concept"].fillna("").astype(str).tolist(),
                   t["f1_test"].to_numpy(float), t["explanation"].fillna("").astype(str).tolist(),
                   t["explanation_score"].to_numpy(float))


@dataclass
class SequenceAnnotation:
    """The tables for one batch of sequences, and what an HTML page needs per sequence."""

    residues: list[pd.DataFrame] = field(default_factory=list)
    features: list[dict[str, Any]] = field(default_factory=list)
    spans: list[dict[str, Any]] = field(default_factory=list)
    tracks: dict[int, list[dict[str, Any]]] = field(default_factory=dict)


def annotate_batch(samples: Sequence[Sample], feats: TokenFeatures, labels: dict[str, FeatureLabels],
                   token_text: Any, regions: Sequence[dict | None] | None, *, top_features: int = 10,
                   span_threshold: float = 0.0, token_column: str = "token",
                   tracks_per_sequence: int = 10) -> SequenceAnnotation:
    """Tables for ``samples`` (``feats`` indexes them) with each dictionary's ``labels``."""
    out = SequenceAnnotation()
    rows_of = feats.rows_of()
    n = len(feats.sample)
    sid = np.empty(n, dtype=object)
    text = np.empty(n, dtype=object)
    tracks: dict[int, dict[str, np.ndarray]] = {}
    columns: dict[str, np.ndarray] = {}
    for i, sample in enumerate(samples):
        rows = rows_of.get(i, slice(0, 0))
        pos = feats.position[rows]
        sid[rows] = sample.id
        text[rows] = token_text(feats.token[rows], pos, sample)
        tracks[i] = region_track(regions[i] if regions else None, max(int(pos.max()) + 1 if len(pos) else 0,
                                                                       len(sample.text)))
        for key, arr in tracks[i].items():
            columns.setdefault(key, np.full(n, None, dtype=object))[rows] = arr[pos]
    for name, X in feats.X.items():
        coo = X.tocoo()
        frame = pd.DataFrame({"sequence_id": sid[coo.row], "position": feats.position[coo.row] + 1,
                              token_column: text[coo.row], "dictionary": name,
                              "feature": coo.col.astype(np.int64), "activation": coo.data.astype(np.float32)})
        for key, arr in columns.items():
            frame[key] = arr[coo.row]
        out.residues.append(frame)
    for i, sample in enumerate(samples):
        rows = rows_of.get(i, slice(0, 0))
        candidates = []
        for name, X in feats.X.items():
            coo = X[rows].tocoo()
            if coo.nnz:
                candidates += _rank(sample, name, coo, feats.position[rows], text[rows], labels[name], tracks[i],
                                    top_features, span_threshold, token_column, out)
        candidates.sort(key=lambda c: -c["score"])
        out.tracks[i] = candidates[:tracks_per_sequence]
    return out


def _rank(sample: Sample, name: str, coo, pos: np.ndarray, text: np.ndarray, lab: FeatureLabels,
          track: dict[str, np.ndarray], top: int, span_threshold: float, token_column: str,
          out: SequenceAnnotation) -> list[dict[str, Any]]:
    feats, inv = np.unique(coo.col, return_inverse=True)
    peak = np.zeros(len(feats), np.float32)
    np.maximum.at(peak, inv, coo.data)
    scale = lab.scale[feats]
    rel = np.where(scale > 0, peak / np.where(scale > 0, scale, 1), np.nan)
    score = np.where(np.isnan(rel), peak, rel)
    regions = track.get("region")
    chosen = []
    for rank, k in enumerate(np.argsort(-score, kind="stable")[:top], start=1):
        f = int(feats[k])
        mine = inv == k
        rows, vals = coo.row[mine], coo.data[mine]
        cut = span_threshold * scale[k] if scale[k] == scale[k] else 0.0
        firing = np.sort(pos[rows[vals > cut]])
        spans = runs(firing)
        at = int(rows[np.argmax(vals)])
        info = {"sequence_id": sample.id, "length": len(sample.text), "dictionary": name, "rank": rank,
                "feature": f, "max_activation": float(peak[k]),
                "relative_activation": None if np.isnan(rel[k]) else round(float(rel[k]), 4),
                "peak_position": int(pos[at]) + 1, f"peak_{token_column}": str(text[at]),
                "n_firing": int(len(firing)), "spans": ";".join(f"{a + 1}-{b + 1}" for a, b in spans),
                "regions": region_share(regions, firing),
                "best_concept": lab.concept[f], "f1_test": _num(lab.f1[f]), "explanation": lab.explanation[f],
                "explanation_score": _num(lab.explanation_score[f])}
        out.features.append(info)
        for a, b in spans:
            span = {"sequence_id": sample.id, "dictionary": name, "feature": f, "start": a + 1, "end": b + 1,
                    "length": b - a + 1, token_column: "".join(str(t) for t in text[(pos >= a) & (pos <= b)]),
                    "max_activation": float(vals[(pos[rows] >= a) & (pos[rows] <= b)].max()),
                    "regions": region_share(regions, np.arange(a, b + 1))}
            for key, arr in track.items():
                if key != "region":
                    span[f"{key}_start"], span[f"{key}_end"] = arr[a], arr[b]
            out.spans.append(span)
        values = np.zeros(len(sample.text), np.float32)
        ok = pos[rows] < len(values)
        values[pos[rows][ok]] = vals[ok]
        chosen.append({**info, "score": float(score[k]), "values": values, "scale": float(scale[k])
                       if scale[k] == scale[k] else float(peak[k])})
    return chosen


def _num(value: Any) -> float | None:
    try:
        v = float(value)
    except (TypeError, ValueError):
        return None
    return None if v != v else round(v, 4)

"""Do stacked or paired stores hold the same tokens row by row? Checked before training starts.

Streaming compares the (sample, position) columns shard by shard anyway, but a mismatch
found there stops a run mid-training. Stores harvested together carry the same ``rows_key``
in their manifests (``core.harvest.pairs``); stores without one are compared on the
(sample, position) columns of their first and last shards.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from core.errors import DataError
from core.store.reader import ActivationStore

FIX = ("harvest the input and target hooks in one harvest run (e.g. harvest.site=mlp_pair "
       "harvest.layers=[...]) so that their rows line up")


def _spans(store: ActivationStore) -> list[tuple[int, int]]:
    """Global row ranges of the store's first and last shards."""
    offsets = store.shard_offsets()
    if len(offsets) < 2:
        return []
    return list(dict.fromkeys([(offsets[0], offsets[1]), (offsets[-2], offsets[-1])]))


def _refuse_misaligned(stores: Sequence[ActivationStore], difference, what: str, fix: str) -> None:
    """Raise a DataError naming the first store whose rows ``difference`` finds unlike the first one's."""
    base = stores[0] if stores else None
    for other in stores[1:]:
        why = difference(base, other)
        if why:
            raise DataError(f"this {what} {base.root} ({why})", path=str(other.root), fix=fix)


def check_rows_align(stores: Sequence[ActivationStore], role: str = "target") -> None:
    """Raise a DataError naming the store whose rows differ from the first store's."""
    _refuse_misaligned(stores, _difference, f"{role} store does not line up with the input store", FIX)


def _difference(base: ActivationStore, other: ActivationStore) -> str | None:
    if other.n_tokens != base.n_tokens:
        return f"{other.n_tokens} tokens against {base.n_tokens}"
    k1, k2 = base.meta.get("rows_key"), other.meta.get("rows_key")
    if k1 and k2:
        return None if k1 == k2 else "harvested from other samples, positions or model (rows_key differs)"
    for span in _spans(base):
        a, b = (s.read_rows(*span, ("sample", "position")) for s in (base, other))
        if not (torch.equal(a["sample"], b["sample"]) and torch.equal(a["position"], b["position"])):
            return "the (sample, position) of its rows differ"
    return None


SOURCES_FIX = ("harvest the sources together (core.harvest.aligned.harvest_aligned, or the hooks of one model in "
               "one harvest run) from the same samples, and pass those stores")


def check_sources_align(stores: Sequence[ActivationStore]) -> None:
    """Refuse stacked input stores (a crosscoder's sources) whose rows are not the same tokens:
    different token counts, different samples, different alignment records, or, without
    records, different (sample, position) columns in the first and last shards."""
    _refuse_misaligned(stores, _source_difference, "source store does not line up with", SOURCES_FIX)


def _source_difference(base: ActivationStore, other: ActivationStore) -> str | None:
    if other.n_tokens != base.n_tokens:
        return f"{other.n_tokens} tokens against {base.n_tokens}"
    s1, s2 = base.meta.get("samples_sha256"), other.meta.get("samples_sha256")
    if s1 and s2 and s1 != s2:
        return "harvested from different samples (samples_sha256 differs)"
    a1, a2 = (base.meta.get("alignment") or {}).get("rows_sha256"), (other.meta.get("alignment") or {}).get("rows_sha256")
    if a1 and a2:
        return None if a1 == a2 else "their alignment records differ (rows_sha256)"
    if base.model == other.model and base.meta.get("rows_key") and base.meta.get("rows_key") == other.meta.get("rows_key"):
        return None
    for span in _spans(base) or [(0, base.n_tokens)]:
        a, b = (s.read_rows(*span, ("sample", "position")) for s in (base, other))
        if not (torch.equal(a["sample"], b["sample"]) and torch.equal(a["position"], b["position"])):
            return "the (sample, position) of its rows differ"
    return None

"""The pieces of a harvest that one process and many share: what a store records about its
source, one planned batch through the model into the writers, and closing the writers.

``core.harvest.engine`` runs the planned batches in one process, ``core.harvest.parallel`` a
contiguous part of them on each of several processes.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from core.adapters.base import ModelAdapter
from core.errors import ConfigError
from core.harvest.pairs import rows_key
from core.harvest.positions import PositionRule, keep_mask, store_position
from core.samples import Sample

log = logging.getLogger("sparsescope")


def samples_fingerprint(samples: Sequence[Sample]) -> str:
    """sha256 over the samples' ids and texts, so a resume never mixes two inputs."""
    import hashlib

    h = hashlib.sha256()
    for s in samples:
        h.update(f"{s.id}\t{s.text}\n".encode())
    return h.hexdigest()


def store_meta_for(adapter: ModelAdapter, samples: Sequence[Sample], positions: PositionRule, drop_special: bool,
                   sort_window: int, meta: dict[str, Any] | None) -> dict[str, Any]:
    """What every store of this harvest records about its source (and ``rows_key``)."""
    store_meta = {"adapter": type(adapter).__name__, "source": getattr(adapter, "source", None), "n_layers": adapter.n_layers,
                  "positions": positions if isinstance(positions, str) else "custom",
                  "drop_special": drop_special, "n_samples_total": len(samples), **(meta or {})}
    vocab = getattr(getattr(adapter, "tokenizer", None), "id_to_token", None)
    if vocab is not None:
        store_meta["vocab"] = list(vocab)
    store_meta["samples_sha256"] = samples_fingerprint(samples)
    key = rows_key(samples=store_meta["samples_sha256"], model=adapter.name, positions=positions,
                   drop_special=drop_special, sort_window=sort_window)
    if key is not None:
        store_meta["rows_key"] = key
    return store_meta


def check_same_samples(root: Path, store_meta: dict[str, Any]) -> None:
    if (root / "manifest.json").exists():
        from core.store import read_manifest

        before = read_manifest(root).get("meta", {}).get("samples_sha256")
        if before not in (None, store_meta["samples_sha256"]):
            raise ConfigError("cannot resume: this store was harvested from different samples",
                              path=str(root / "manifest.json"),
                              fix="use a new output directory, or delete this store to start over")


def write_samples(root: Path, samples: Sequence[Sample]) -> None:
    from core.store import write_samples_tsv

    tsv = root / "samples.tsv"
    if not tsv.exists():
        write_samples_tsv(tsv, [Sample(s.id, s.text, {"text": s.text, **s.meta}) if "text" not in s.meta
                                else s for s in samples])


def harvest_span(adapter: ModelAdapter, samples: Sequence[Sample], order: Sequence[int], begin: int, end: int,
                 writers: dict, positions: PositionRule, drop_special: bool, offset: int = 0) -> None:
    """One forward pass over ``order[begin:end]``, its kept tokens appended to each writer that
    has not got them yet. A writer counts samples from ``order[offset]`` (a worker's part)."""
    index = order[begin:end]
    batch = adapter.tokenize([samples[i] for i in index], sample_index=index)
    rank = {i: begin + k for k, i in enumerate(index)}
    acts = adapter.capture(batch, list(writers)) if len(batch) else {}
    if len(batch):
        keep = keep_mask(batch, positions, drop_special).cpu()
        row_rank = torch.as_tensor([rank[int(i)] for i in batch.sample_index]) - offset
        cols = (batch.sample_index[:, None].expand_as(keep), store_position(batch), batch.input_ids)
    for hook, w in writers.items():
        if end - offset <= w.samples_done:
            continue
        if not len(batch):
            w.add(torch.empty(0, w.d), torch.empty(0), torch.empty(0), torch.empty(0), samples_done=end - offset)
            continue
        sel = keep & (row_rank >= w.samples_done)[:, None]
        a = acts[hook].cpu()[sel].float()
        w.add(a, *(c.cpu()[sel] for c in cols), samples_done=end - offset)


def input_report(adapter: ModelAdapter, skipped_before: dict[str, int], chunked_before: set[str]) -> dict:
    """What the adapter did to samples it could not take whole: skipped (counts and ids, by
    reason) and long sequences cut into windows (id -> windows), for the manifest and results."""
    skipped = {k: int(v - skipped_before.get(k, 0)) for k, v in (getattr(adapter, "skipped", {}) or {}).items()}
    out: dict = {}
    if any(skipped.values()):
        out["skipped"] = {k: v for k, v in skipped.items() if v}
        out["skipped_ids"] = {k: list(v) for k, v in (getattr(adapter, "skipped_ids", {}) or {}).items()}
    chunked = {k: v for k, v in (getattr(adapter, "chunked", {}) or {}).items() if k not in chunked_before}
    if chunked:
        out["chunked"] = len(chunked)
        out["chunked_ids"] = dict(list(chunked.items())[:100])
    return out


def close_writers(adapter: ModelAdapter, writers: dict, skipped_before: dict[str, int],
                  chunked_before: set[str] | None = None) -> None:
    """Record what the adapter skipped or chunked since the ``*_before`` snapshots (``input_report``)
    and mark the stores complete."""
    report = input_report(adapter, skipped_before, chunked_before or set())
    for w in writers.values():
        if report:
            w.manifest["meta"].update(report)
            log.warning("%s: %s", w.root, {k: v for k, v in report.items() if not k.endswith("_ids")})
        w.close()

"""Aligned multi-source harvest: the same tokens through several models (or several layers of
one), into stores whose rows line up one to one, for crosscoders.

Two models see the same sample through different tokenisers: AntiBERTy frames a chain as
``[CLS] residues [SEP]``, IgLM as ``[HEAVY] [HUMAN] residues [SEP]``. What they share is the
sample's own positions (for proteins, residue indices). Before any forward pass each source
tokenises every sample once; the positions kept are those that every source has as a real,
non-special token (so each model's special tokens are dropped, and a sample one model skips
is dropped from all). Each source is then harvested with that position rule, in the same
sample order, so row ``r`` of every store is the same (sample, position).

After harvest the stores' (sample, position) columns are hashed and compared; each manifest
gets an ``alignment`` record (the hash, the sources, what was dropped), which the data module
compares before stacking stores (``core.store.pairing.check_sources_align``).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from core.errors import ConfigError, DataError
from core.samples import Sample


@dataclass
class Source:
    """One input of a crosscoder: a named model adapter and the hooks harvested from it."""

    name: str
    adapter: Any
    hooks: list[str]
    dropped: dict[str, int] = field(default_factory=dict)


def _kept_positions(adapter: Any, samples: Sequence[Sample], batch: int = 256) -> tuple[list[set[int]], dict[str, int]]:
    """Per sample, the positions ``adapter`` harvests as real non-special tokens, and how many
    special tokens (the model's framing) it drops."""
    special_ids = torch.as_tensor(sorted(set(getattr(adapter.tokenizer, "all_special_ids", []) or [])), dtype=torch.long)
    kept: list[set[int]] = [set() for _ in samples]
    n_special = n_real = 0
    for lo in range(0, len(samples), batch):
        b = adapter.tokenize(list(samples[lo:lo + batch]), sample_index=list(range(lo, min(len(samples), lo + batch))))
        if not len(b):
            continue
        real = b.attention_mask.bool()
        n_real += int(real.sum())
        n_special += int((real & torch.isin(b.input_ids, special_ids)).sum())
        ok = real & (b.positions >= 0) & ~b.extra.get("special_mask", torch.zeros_like(real))
        for row, s in enumerate(b.sample_index.tolist()):
            kept[s].update(b.positions[row][ok[row]].tolist())
    return kept, {"special_tokens": n_special, "real_tokens": n_real}


def shared_positions(sources: Sequence[Source], samples: Sequence[Sample]) -> list[set[int]]:
    """Per sample, the positions every source keeps; records each source's drops."""
    shared: list[set[int]] | None = None
    per_source = []
    for src in sources:
        kept, counts = _kept_positions(src.adapter, samples)
        per_source.append((src, kept, counts))
        shared = kept if shared is None else [a & b for a, b in zip(shared, kept, strict=True)]
    assert shared is not None
    for src, kept, counts in per_source:
        src.dropped = {**counts, "residues_not_shared": sum(len(k - s) for k, s in zip(kept, shared, strict=True))}
    return shared


def position_rule(shared: Sequence[set[int]]):
    """A harvest position rule keeping, per row, the positions in its sample's shared set."""
    allowed = [torch.as_tensor(sorted(s), dtype=torch.long) for s in shared]

    def rule(batch) -> torch.Tensor:
        rows = [torch.isin(batch.positions[r], allowed[int(s)]) for r, s in enumerate(batch.sample_index.tolist())]
        return torch.stack(rows) if rows else torch.zeros_like(batch.attention_mask, dtype=torch.bool)

    return rule


def rows_digest(store: Any) -> str:
    """sha256 over a store's (sample, position) columns, in row order."""
    h = hashlib.sha256()
    for shard in store.iter_shards(("sample", "position")):
        h.update(shard["sample"].to(torch.int64).numpy().tobytes())
        h.update(shard["position"].to(torch.int64).numpy().tobytes())
    return h.hexdigest()


def harvest_aligned(sources: Sequence[Source], samples: Sequence[Sample], out_dir: str | Path, *,
                    batch_tokens: int = 8192, dtype: str = "float32", shard_tokens: int = 65536,
                    progress: bool = True) -> dict[str, dict[str, Any]]:
    """Harvest every source's hooks over ``samples`` into ``out_dir/<source>/<hook>/`` on the
    positions all sources share. Returns ``{source: {hook: ActivationStore}}``; resumable (each
    store resumes itself; the alignment is recomputed and checked again)."""
    from core.harvest.engine import harvest
    from core.io import write_json
    from core.store import MANIFEST, ActivationStore, read_manifest

    names = [s.name for s in sources]
    if len(set(names)) != len(names) or not names:
        raise ConfigError(f"aligned harvest needs distinct source names, got {names}",
                          fix="give every source its own name")
    samples = [s if isinstance(s, Sample) else Sample(f"#{i}", str(s)) for i, s in enumerate(samples)]
    shared = shared_positions(sources, samples)
    if not any(shared):
        raise DataError("the sources share no positions on these samples (every sample was skipped by one of them)",
                        fix="check the samples against each model's alphabet and length limits")
    rule = position_rule(shared)
    out_dir = Path(out_dir)
    stores: dict[str, dict[str, Any]] = {}
    for src in tqdm(sources, desc="aligned harvest", unit="source", disable=not progress or len(sources) < 2):
        got = harvest(src.adapter, samples, src.hooks, out_dir / src.name, batch_tokens=batch_tokens,
                      positions=rule, drop_special=True, dtype=dtype, shard_tokens=shard_tokens,
                      progress=progress, meta={"source_name": src.name})
        stores[src.name] = got
    flat = [(src, h, stores[src.name][h]) for src in sources for h in src.hooks]
    digests = {(src.name, h): rows_digest(st) for src, h, st in flat}
    if len(set(digests.values())) != 1:
        raise DataError(f"aligned stores differ in their (sample, position) rows: {digests}", path=str(out_dir),
                        fix="delete the aligned stores and harvest again (a store left from another run?)")
    record = {"rows_sha256": next(iter(digests.values())), "n_tokens": int(flat[0][2].n_tokens),
              "samples_sha256": flat[0][2].meta.get("samples_sha256"),
              "sources": [{"name": src.name, "model": st.model, "hook": h, "d": int(st.d), "dropped": src.dropped}
                          for src, h, st in flat]}
    for src, h, st in flat:
        manifest = read_manifest(st.root)
        if manifest.get("meta", {}).get("alignment") != record:
            manifest.setdefault("meta", {})["alignment"] = record
            write_json(st.root / MANIFEST, manifest)
        stores[src.name][h] = ActivationStore(st.root, verify=False)
    return stores

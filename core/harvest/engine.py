"""Run samples through a model adapter and write the activations at one or more hooks into
activation stores (``out_dir/<hook>/``), one forward pass serving every hook.

Hooks passed together share their rows (one pass, the same kept tokens): each store's
manifest records ``rows_key`` and, for an MLP's input and output, that they are a pair
(``core.harvest.pairs``), so a transcoder's data module can check the pairing up front.

Each kept token's sample index (its index in the caller's list), position and token id go
beside its activation, and ``samples.tsv`` maps sample indices back to ids, texts and
metadata. A store remembers a fingerprint of the samples it came from, so a resume never
mixes two inputs.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from core.adapters.base import ModelAdapter
from core.errors import ConfigError
from core.harvest.order import pack_batches, processing_order, token_estimator
from core.harvest.pairs import pair_meta, rows_key
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


def harvest(adapter: ModelAdapter, samples: Sequence[Sample], hooks: Sequence[str], out_dir: str | Path, *,
            batch_tokens: int = 8192, max_batch: int = 256, positions: PositionRule = "all",
            drop_special: bool = True, dtype: str = "float32", shard_tokens: int = 65536,
            sort_window: int = 2048, progress: bool = True, meta: dict[str, Any] | None = None) -> dict:
    """Harvest ``hooks`` of ``adapter`` over ``samples`` into ``out_dir/<hook>/``.

    Returns ``{hook: ActivationStore}``. Re-running with the same arguments after a kill
    resumes where each store stopped; a complete store is left as it is.
    """
    from core.store import ActivationStore, ShardWriter, write_samples_tsv

    hooks = adapter.check_hooks(list(dict.fromkeys(hooks)))
    out_dir = Path(out_dir)
    samples = [s if isinstance(s, Sample) else Sample(f"#{i}", str(s)) for i, s in enumerate(samples)]
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
    writers = {}
    for h in hooks:
        root = out_dir / h
        if (root / "manifest.json").exists():
            from core.store import read_manifest

            before = read_manifest(root).get("meta", {}).get("samples_sha256")
            if before not in (None, store_meta["samples_sha256"]):
                raise ConfigError("cannot resume: this store was harvested from different samples",
                                  path=str(root / "manifest.json"),
                                  fix="use a new output directory, or delete this store to start over")
        writers[h] = ShardWriter(out_dir / h, model=adapter.name, hook=h, d=int(adapter.d_model), dtype=dtype,
                                 shard_tokens=shard_tokens, meta={**store_meta, **pair_meta(h, hooks)})
    todo = {h: w for h, w in writers.items() if not w.complete}
    for h in writers:
        tsv = out_dir / h / "samples.tsv"
        if not tsv.exists():
            write_samples_tsv(tsv, [Sample(s.id, s.text, {"text": s.text, **s.meta}) if "text" not in s.meta
                                    else s for s in samples])
    if todo:
        _run(adapter, samples, todo, batch_tokens, max_batch, positions, drop_special, sort_window, progress)
    return {h: ActivationStore(out_dir / h, verify=False) for h in hooks}


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


def _run(adapter: ModelAdapter, samples: list[Sample], writers: dict, batch_tokens: int, max_batch: int,
         positions: PositionRule, drop_special: bool, sort_window: int, progress: bool) -> None:
    order = processing_order(samples, sort_window)
    start = min(w.samples_done for w in writers.values())
    estimate = token_estimator(adapter)
    spans = pack_batches(samples, order, start, batch_tokens, max_batch, estimate)
    skipped_before = dict(getattr(adapter, "skipped", {}) or {})
    chunked_before = set(getattr(adapter, "chunked", {}) or {})
    bar = tqdm(total=len(order), initial=start, unit="sample", desc=f"harvest {adapter.name}", disable=not progress)
    try:
        for begin, end in spans:
            index = order[begin:end]
            batch = adapter.tokenize([samples[i] for i in index], sample_index=index)
            rank = {i: begin + k for k, i in enumerate(index)}
            acts = adapter.capture(batch, list(writers)) if len(batch) else {}
            if len(batch):
                keep = keep_mask(batch, positions, drop_special).cpu()
                row_rank = torch.as_tensor([rank[int(i)] for i in batch.sample_index])
                cols = (batch.sample_index[:, None].expand_as(keep), store_position(batch), batch.input_ids)
            for h, w in writers.items():
                if end <= w.samples_done:
                    continue
                if not len(batch):
                    w.add(torch.empty(0, w.d), torch.empty(0), torch.empty(0), torch.empty(0), samples_done=end)
                    continue
                sel = keep & (row_rank >= w.samples_done)[:, None]
                a = acts[h].cpu()[sel].float()
                w.add(a, *(c.cpu()[sel] for c in cols), samples_done=end)
            bar.update(end - begin)
    finally:
        bar.close()
    report = input_report(adapter, skipped_before, chunked_before)
    for w in writers.values():
        if report:
            w.manifest["meta"].update(report)
            log.warning("%s: %s", w.root, {k: v for k, v in report.items() if not k.endswith("_ids")})
        w.close()

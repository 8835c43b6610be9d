"""Run samples through a model adapter and write the activations at one or more hooks into
activation stores (``out_dir/<hook>/``), one forward pass serving every hook.

Samples are processed in a fixed order: consecutive windows of ``sort_window`` samples,
each sorted by length, then packed into batches of at most ``batch_tokens`` padded tokens.
Sorting within windows keeps padding small without gathering all short samples at the
start of the store. The order depends only on the samples, so after a kill the writers'
``samples_done`` says exactly where to continue, store by store. Each kept token's sample
index (its index in the caller's list), position and token id go beside its activation,
and ``samples.tsv`` maps sample indices back to ids, texts and metadata.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from core.adapters.base import Batch, ModelAdapter
from core.errors import ConfigError
from core.samples import Sample

log = logging.getLogger("sparsescope")

PositionRule = str | Callable[[Batch], torch.Tensor]


def processing_order(samples: Sequence[Sample], sort_window: int) -> list[int]:
    """Sample indices in the order harvest runs them (length-sorted within windows)."""
    order: list[int] = []
    for start in range(0, len(samples), max(1, sort_window)):
        idx = range(start, min(start + max(1, sort_window), len(samples)))
        order.extend(sorted(idx, key=lambda i: (len(samples[i].text), i)))
    return order


def pack_batches(samples: Sequence[Sample], order: Sequence[int], start: int, batch_tokens: int,
                 max_batch: int, token_estimate: Callable[[Sample], int]) -> list[tuple[int, int]]:
    """``(begin, end)`` slices of ``order`` from ``start``, each at most ``batch_tokens`` padded tokens."""
    spans, begin, widest = [], start, 0
    for k in range(start, len(order)):
        n = token_estimate(samples[order[k]])
        width = max(widest, n)
        if k > begin and (width * (k - begin + 1) > batch_tokens or k - begin >= max_batch):
            spans.append((begin, k))
            begin, width = k, n
        widest = width
    if begin < len(order):
        spans.append((begin, len(order)))
    return spans


def samples_fingerprint(samples: Sequence[Sample]) -> str:
    """sha256 over the samples' ids and texts, so a resume never mixes two inputs."""
    import hashlib

    h = hashlib.sha256()
    for s in samples:
        h.update(f"{s.id}\t{s.text}\n".encode())
    return h.hexdigest()


def keep_mask(batch: Batch, positions: PositionRule, drop_special: bool) -> torch.Tensor:
    """[B, T] bool: the tokens to store."""
    real = batch.attention_mask.bool()
    candidates = real & ~batch.special_mask if drop_special else real
    if callable(positions):
        mask = torch.as_tensor(positions(batch), dtype=torch.bool, device=real.device)
        if mask.shape != real.shape:
            raise ConfigError(f"the positions mask has shape {tuple(mask.shape)}, the batch {tuple(real.shape)}")
        return mask & candidates
    if positions == "all":
        return candidates
    if positions == "skip_first":
        # many LMs park an "attention sink" on their first token, with a norm ~100x the others
        # (SmolLM2-135M: ~24,000 vs ~170), which would dominate any reconstruction loss
        first = (candidates.long().cumsum(-1) == 1) & candidates
        return candidates & ~first
    if positions == "last":
        idx = torch.arange(real.shape[1], device=real.device).expand_as(real)
        last = torch.where(candidates, idx, torch.full_like(idx, -1)).max(dim=1).values
        mask = torch.zeros_like(real)
        rows = (last >= 0).nonzero().flatten()
        mask[rows, last[rows]] = True
        return mask
    raise ConfigError(f"positions={positions!r}",
                      fix="use positions=all, positions=skip_first, positions=last or a mask function")


def _store_position(batch: Batch) -> torch.Tensor:
    """Position column: the domain position; a kept special token (``drop_special=False``)
    without one gets ``-(1 + its token index)`` so (sample, position) stays unique."""
    idx = (batch.attention_mask.cumsum(-1) - 1).clamp(min=0)
    return torch.where(batch.positions >= 0, batch.positions, -1 - idx)


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
                                 shard_tokens=shard_tokens, meta=store_meta)
    todo = {h: w for h, w in writers.items() if not w.complete}
    for h in writers:
        tsv = out_dir / h / "samples.tsv"
        if not tsv.exists():
            write_samples_tsv(tsv, [Sample(s.id, s.text, {"text": s.text, **s.meta}) if "text" not in s.meta
                                    else s for s in samples])
    if todo:
        _run(adapter, samples, todo, batch_tokens, max_batch, positions, drop_special, sort_window, progress)
    return {h: ActivationStore(out_dir / h, verify=False) for h in hooks}


def _run(adapter: ModelAdapter, samples: list[Sample], writers: dict, batch_tokens: int, max_batch: int,
         positions: PositionRule, drop_special: bool, sort_window: int, progress: bool) -> None:
    order = processing_order(samples, sort_window)
    start = min(w.samples_done for w in writers.values())
    estimate = _token_estimator(adapter)
    spans = pack_batches(samples, order, start, batch_tokens, max_batch, estimate)
    skipped_before = dict(getattr(adapter, "skipped", {}) or {})
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
                cols = (batch.sample_index[:, None].expand_as(keep), _store_position(batch), batch.input_ids)
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
    skipped = {k: v - skipped_before.get(k, 0) for k, v in (getattr(adapter, "skipped", {}) or {}).items()}
    for w in writers.values():
        if any(skipped.values()):
            w.manifest["meta"]["skipped"] = {k: int(v) for k, v in skipped.items() if v}
            log.warning("%s: skipped samples %s", w.root, w.manifest["meta"]["skipped"])
        w.close()


def _token_estimator(adapter: ModelAdapter) -> Callable[[Sample], int]:
    """Token count per sample for packing: residues + 4 for proteins, the tokenizer's count for text."""
    if hasattr(adapter, "max_residues"):
        return lambda s: min(len(s.text), getattr(adapter, "max_residues", None) or len(s.text)) + 4
    encode = getattr(adapter, "encode", None)
    if encode is not None:
        return lambda s: len(encode(s.text)) if s.text else 1
    return lambda s: max(1, len(s.text) // 3) + 4

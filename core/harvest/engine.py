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

from tqdm.auto import tqdm

from core.adapters.base import ModelAdapter
from core.harvest.order import pack_batches, processing_order, token_estimator
from core.harvest.pairs import pair_meta
from core.harvest.passes import (
    check_same_samples,
    close_writers,
    harvest_span,
    store_meta_for,
    write_samples,
)
from core.harvest.positions import PositionRule
from core.samples import Sample

log = logging.getLogger("sparsescope")


def harvest(adapter: ModelAdapter, samples: Sequence[Sample], hooks: Sequence[str], out_dir: str | Path, *,
            batch_tokens: int = 8192, max_batch: int = 256, positions: PositionRule = "all",
            drop_special: bool = True, dtype: str = "float32", shard_tokens: int = 65536,
            sort_window: int = 2048, progress: bool = True, meta: dict[str, Any] | None = None,
            parallel: dict[str, Any] | None = None) -> dict:
    """Harvest ``hooks`` of ``adapter`` over ``samples`` into ``out_dir/<hook>/``.

    Returns ``{hook: ActivationStore}``. Re-running with the same arguments after a kill
    resumes where each store stopped; a complete store is left as it is. ``parallel``
    (Lightning Trainer settings: devices, accelerator, num_nodes) runs the passes on several
    processes (``core.harvest.parallel``); the stores hold the same rows in the same order.
    """
    from core.store import ActivationStore, ShardWriter

    hooks = adapter.check_hooks(list(dict.fromkeys(hooks)))
    out_dir = Path(out_dir)
    samples = [s if isinstance(s, Sample) else Sample(f"#{i}", str(s)) for i, s in enumerate(samples)]
    store_meta = store_meta_for(adapter, samples, positions, drop_special, sort_window, meta)
    for h in hooks:
        check_same_samples(out_dir / h, store_meta)
    if parallel is not None:
        from core.harvest.parallel import harvest_parallel, planned_workers

        if planned_workers(parallel) > 1:
            return harvest_parallel(adapter, samples, hooks, out_dir, parallel, store_meta=store_meta,
                                    batch_tokens=batch_tokens, max_batch=max_batch, positions=positions,
                                    drop_special=drop_special, dtype=dtype, shard_tokens=shard_tokens,
                                    sort_window=sort_window)
    writers = {h: ShardWriter(out_dir / h, model=adapter.name, hook=h, d=int(adapter.d_model), dtype=dtype,
                              shard_tokens=shard_tokens, meta={**store_meta, **pair_meta(h, hooks)})
               for h in hooks}
    todo = {h: w for h, w in writers.items() if not w.complete}
    for h in writers:
        write_samples(out_dir / h, samples)
    if todo:
        _run(adapter, samples, todo, batch_tokens, max_batch, positions, drop_special, sort_window, progress)
    return {h: ActivationStore(out_dir / h, verify=False) for h in hooks}


def _run(adapter: ModelAdapter, samples: list[Sample], writers: dict, batch_tokens: int, max_batch: int,
         positions: PositionRule, drop_special: bool, sort_window: int, progress: bool) -> None:
    order = processing_order(samples, sort_window)
    start = min(w.samples_done for w in writers.values())
    estimate = token_estimator(adapter)
    # the batches of an uninterrupted run (planned from the first sample), so a resume runs the same passes
    spans = [s for s in pack_batches(samples, order, 0, batch_tokens, max_batch, estimate) if s[1] > start]
    skipped_before = dict(getattr(adapter, "skipped", {}) or {})
    chunked_before = set(getattr(adapter, "chunked", {}) or {})
    bar = tqdm(total=len(order), initial=start, unit="sample", desc=f"harvest {adapter.name}", disable=not progress)
    try:
        for begin, end in spans:
            harvest_span(adapter, samples, order, begin, end, writers, positions, drop_special)
            bar.update(end - begin)
    finally:
        bar.close()
    close_writers(adapter, writers, skipped_before, chunked_before)

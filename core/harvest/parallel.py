"""Harvest on several processes: Lightning's predict loop under DDP, each rank one part.

Every rank plans the same batches (``processing_order`` then ``pack_batches`` from the first
sample) and takes a contiguous run of them: rank ``r`` of ``n`` gets batches
``[r * B // n, (r + 1) * B // n)``. It writes them into ``<store>/part{r:03d}/`` with its own
``ShardWriter`` (its own manifest, so a killed rank resumes its part where it stopped and a
finished part is left as it is). When every rank is done, rank 0 writes the store's
``manifest.json`` listing all parts' shards in rank order, with their checksums. Parts are
contiguous in processing order and every batch is the one a single process would run, so
the store holds the rows of a one-process harvest in the same order (shards are cut at other
places). Resuming needs the same number of processes: a part records which batches it holds.

    sparsescope stage=harvest +harvest=default harvest.parallel.devices=2 ...      (one node)
    ... harvest.parallel.num_nodes=N                                               (N nodes, each
        started with MASTER_ADDR, MASTER_PORT and NODE_RANK set, or under SLURM)
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning as L
import torch
from torch.utils.data import DataLoader

from core.adapters.base import ModelAdapter
from core.errors import ConfigError
from core.harvest.order import pack_batches, processing_order, token_estimator
from core.harvest.pairs import pair_meta
from core.harvest.passes import check_same_samples, close_writers, harvest_span, write_samples
from core.harvest.positions import PositionRule
from core.io import write_json
from core.samples import Sample

TRAINER_KEYS = ("accelerator", "devices", "num_nodes", "strategy", "enable_progress_bar")


def part_name(rank: int) -> str:
    return f"part{rank:03d}"


def _trainer_kwargs(parallel: dict[str, Any]) -> dict[str, Any]:
    unknown = sorted(set(parallel) - set(TRAINER_KEYS))
    if unknown:
        raise ConfigError(f"unknown harvest.parallel keys {unknown}", fix=f"use some of {list(TRAINER_KEYS)}")
    return {"accelerator": parallel.get("accelerator") or "auto", "devices": parallel.get("devices") or 1,
            "num_nodes": int(parallel.get("num_nodes") or 1), "strategy": parallel.get("strategy") or "ddp",
            "enable_progress_bar": bool(parallel.get("enable_progress_bar", True))}


def planned_workers(parallel: dict[str, Any]) -> int:
    """Processes the ``parallel`` settings give (1 when devices is null)."""
    if not parallel or parallel.get("devices") in (None, 1) and int(parallel.get("num_nodes") or 1) == 1:
        return 1
    from core.training.distributed import planned_world_size

    return planned_world_size(_trainer_kwargs(parallel))


def rank_spans(spans: Sequence[tuple[int, int]], rank: int, world: int) -> list[tuple[int, int]]:
    """Rank ``rank``'s contiguous share of the planned batches."""
    n = len(spans)
    return list(spans[rank * n // world:(rank + 1) * n // world])


class _HarvestModule(L.LightningModule):
    """``predict_step`` runs one planned batch and appends its tokens to this rank's part."""

    def __init__(self, adapter: ModelAdapter, samples: list[Sample], hooks: list[str], out_dir: Path,
                 spans: list[tuple[int, int]], order: list[int], store_meta: dict[str, Any], opts: dict[str, Any]) -> None:
        super().__init__()
        self.adapter, self.samples, self.hooks, self.out_dir = adapter, samples, hooks, out_dir
        self.spans, self.order, self.store_meta, self.opts = spans, order, store_meta, opts
        self.writers: dict[str, Any] = {}
        self.mine: list[tuple[int, int]] = []
        self.offset = 0

    def predict_dataloader(self) -> DataLoader:
        from core.store import ShardWriter

        rank, world = self.global_rank, self.trainer.world_size
        self.mine = rank_spans(self.spans, rank, world)
        self.offset = self.mine[0][0] if self.mine else 0
        part = {"rank": rank, "world_size": world,
                "order_range": [self.offset, self.mine[-1][1] if self.mine else self.offset]}
        for h in self.hooks:
            root = self.out_dir / h / part_name(rank)
            check_same_samples(root, self.store_meta)
            self.writers[h] = ShardWriter(root, model=self.adapter.name, hook=h, d=int(self.adapter.d_model),
                                          dtype=self.opts["dtype"], shard_tokens=self.opts["shard_tokens"],
                                          meta={**self.store_meta, **pair_meta(h, self.hooks), "part": part})
            if self.writers[h].manifest["meta"].get("part") != part:
                raise ConfigError(f"cannot resume: {root} was harvested as part "
                                  f"{self.writers[h].manifest['meta'].get('part')}, this run makes it {part}",
                                  path=str(root / "manifest.json"),
                                  fix="resume with the same number of processes, or delete the store to start over")
        done = min((w.samples_done for w in self.writers.values() if not w.complete), default=None)
        todo = [] if done is None else [s for s in self.mine if s[1] - self.offset > done]
        todo = todo or [(-1, -1)]  # a rank with nothing left still runs the loop, so its hooks meet the barriers
        self._skipped_before = dict(getattr(self.adapter, "skipped", {}) or {})
        self._chunked_before = set(getattr(self.adapter, "chunked", {}) or {})
        return DataLoader(torch.as_tensor(todo, dtype=torch.long).reshape(-1, 2), batch_size=None)

    def on_predict_start(self) -> None:
        model = getattr(self.adapter, "model", None)
        if isinstance(model, torch.nn.Module) and self.device.type != "cpu":
            self.adapter.model = model.to(self.device)
            self.adapter.device = self.device

    def predict_step(self, span: torch.Tensor, batch_idx: int) -> None:
        begin, end = int(span[0]), int(span[1])
        if begin < 0:
            return
        todo = {h: w for h, w in self.writers.items() if not w.complete}
        harvest_span(self.adapter, self.samples, self.order, begin, end, todo, self.opts["positions"],
                     self.opts["drop_special"], offset=self.offset)

    def on_predict_end(self) -> None:
        close_writers(self.adapter, {h: w for h, w in self.writers.items() if not w.complete}, self._skipped_before,
                      self._chunked_before)
        self.trainer.strategy.barrier("harvest parts written")
        if self.trainer.is_global_zero:
            for h in self.hooks:
                merge_parts(self.out_dir / h, self.trainer.world_size)
                write_samples(self.out_dir / h, self.samples)
        self.trainer.strategy.barrier("harvest manifest written")


def merge_parts(root: Path, world: int) -> dict[str, Any]:
    """Write ``root/manifest.json`` listing the shards of ``part000 .. part{world-1}`` in order."""
    from core.store import read_manifest

    parts = [read_manifest(root / part_name(r)) for r in range(world)]
    manifest = {k: v for k, v in parts[0].items() if k not in ("shards", "meta")}
    per_part = ("part", "skipped", "skipped_ids", "chunked", "chunked_ids")
    meta = {k: v for k, v in parts[0]["meta"].items() if k not in per_part}
    for p in parts:  # what each part's adapter skipped or chunked, summed over parts
        pm = p["meta"]
        for k, v in (pm.get("skipped") or {}).items():
            meta.setdefault("skipped", {})[k] = meta.get("skipped", {}).get(k, 0) + int(v)
        for k, ids in (pm.get("skipped_ids") or {}).items():
            meta.setdefault("skipped_ids", {}).setdefault(k, []).extend(ids)
        if pm.get("chunked"):
            meta["chunked"] = meta.get("chunked", 0) + int(pm["chunked"])
            meta.setdefault("chunked_ids", {}).update(pm.get("chunked_ids") or {})
    shards, done = [], 0
    for r, p in enumerate(parts):
        for e in p["shards"]:
            shards.append({**e, "file": f"{part_name(r)}/{e['file']}", "samples_done": done + int(e["samples_done"])})
        done += int(p["n_samples"])
    manifest.update(shards=shards, n_shards=len(shards), n_tokens=sum(int(p["n_tokens"]) for p in parts),
                    n_samples=done, complete=all(p["complete"] for p in parts), meta={**meta, "parts": world})
    write_json(root / "manifest.json", manifest)
    return manifest


def harvest_parallel(adapter: ModelAdapter, samples: list[Sample], hooks: list[str], out_dir: Path,
                     parallel: dict[str, Any], *, store_meta: dict[str, Any], batch_tokens: int, max_batch: int,
                     positions: PositionRule, drop_special: bool, dtype: str, shard_tokens: int,
                     sort_window: int) -> dict:
    """``core.harvest.harvest`` on the processes ``parallel`` names; same return value."""
    from core.store import ActivationStore, read_manifest

    if not isinstance(positions, str):
        raise ConfigError("a parallel harvest takes positions by name (all, skip_first, last)",
                          fix="use a named position rule, or harvest on one process")
    done = [Path(out_dir) / h / "manifest.json" for h in hooks]
    if all(p.exists() and read_manifest(p.parent)["complete"] for p in done):
        return {h: ActivationStore(Path(out_dir) / h, verify=False) for h in hooks}
    order = processing_order(samples, sort_window)
    spans = pack_batches(samples, order, 0, batch_tokens, max_batch, token_estimator(adapter))
    opts = {"dtype": dtype, "shard_tokens": int(shard_tokens), "positions": positions, "drop_special": drop_special}
    module = _HarvestModule(adapter, samples, list(hooks), Path(out_dir), spans, order, store_meta, opts)
    trainer = L.Trainer(**_trainer_kwargs(parallel), logger=False, enable_checkpointing=False,
                        enable_model_summary=False, use_distributed_sampler=False, inference_mode=True)
    trainer.predict(module, return_predictions=False)
    return {h: ActivationStore(Path(out_dir) / h, verify=False) for h in hooks}

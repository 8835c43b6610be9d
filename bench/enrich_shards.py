"""Enrichment at Swiss-Prot scale: many InterPLM-sized shards streamed through one engine run.

All of reviewed Swiss-Prot is about 2e8 residues, ~667 shards of 3e5. This script writes N
synthetic shards of ``bench/enrich_scale.py``'s shape (3e5 tokens x 1e4 features x 500
concepts, 5 thresholds; one dataset: shared feature frequencies and concept design, each shard
its own samples) to disk, features and concepts alike, and runs ``core.enrich.engine.enrich``
over them in two ways, side by side:

- streamed: concepts read shard by shard (``ConceptShards``), per-sample pools spilled to disk
  (``pool_dir``), so nothing grows with the number of shards but the per-sample ids;
- whole: the concept matrix of all shards held in memory and the pools kept, as before.

It logs the clock and resident memory as each shard opens in each pass, checks that both ways
give the same tables, prints per-shard time and the RSS slope per shard of each pass, and
extrapolates to 2e8 residues. Several ``--shards`` values run the streamed way at each, so
peak memory can be read against the shard count.

    python bench/enrich_shards.py --shards 5 10     # ~6 min on 2 cores
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from enrich_scale import THRESHOLDS, PeakRSS, _rss, synthetic  # noqa: E402

from core.enrich.concept_shards import ConceptShards  # noqa: E402
from core.enrich.concepts import ConceptMatrix  # noqa: E402
from core.enrich.engine import enrich  # noqa: E402
from core.enrich.features import ArrayFeatures  # noqa: E402
from core.memory import release_freed_memory  # noqa: E402

PASSES = {1: "reference", 2: "count", 3: "detail"}


class ShardFiles:
    """A feature source streamed from shards on disk, one in memory at a time, that logs the
    clock and resident memory each time it opens a shard (pass, shard, seconds, bytes)."""

    sparse = True
    name = "sae"

    def __init__(self, paths: list[Path], n_features: int, chunk_tokens: int) -> None:
        self.paths, self.n_features, self.chunk_tokens = paths, n_features, chunk_tokens
        self.n_tokens = sum(int(np.load(p / "sample.npy", mmap_mode="r").shape[0]) for p in paths)
        self.log: list[tuple[int, int, float, int]] = []
        self._pass = 0

    def feature_names(self) -> list[str]:
        return [f"f{i}" for i in range(self.n_features)]

    def iter_chunks(self, keep=None):
        self._pass += 1
        for i, p in enumerate(self.paths):
            self.log.append((self._pass, i, time.time(), _rss()))
            src = ArrayFeatures(np.load(p / "sample.npy"), np.load(p / "position.npy"), sp.load_npz(p / "X.npz"),
                                chunk_tokens=self.chunk_tokens)
            yield from src.iter_chunks(keep)
            del src
        self.log.append((self._pass, len(self.paths), time.time(), _rss()))


def write_shards(args, root: Path) -> tuple[list[Path], dict[int, str]]:
    """Features of each shard as .npy/.npz, concepts as one ``ConceptShards`` directory."""
    paths, splits = [], {}

    def concept_shards():
        offset = 0
        for i in range(max(args.shards)):
            sample, position, X, cm, _ = synthetic(args.tokens, args.features, args.concepts, args.active,
                                                   seed=i, design_seed=0)
            sample = sample + offset
            d = root / f"shard{i:03d}"
            d.mkdir()
            np.save(d / "sample.npy", sample)
            np.save(d / "position.npy", position)
            sp.save_npz(d / "X.npz", X, compressed=False)
            splits.update({int(s): ("valid" if s % 2 == 0 else "test") for s in np.unique(sample)})
            offset = int(sample.max()) + 1
            paths.append(d)
            yield ConceptMatrix(cm.values, cm.concepts, pd.DataFrame({"sample": sample, "position": position}))

    ConceptShards.write(concept_shards(), root / "concepts")
    return paths, splits


def timed(label: str, n: int, src: ShardFiles, concepts, splits, **kw) -> tuple[dict, object]:
    release_freed_memory()
    with PeakRSS() as mem:
        t0, c0 = time.time(), time.process_time()
        res = enrich({"sae": src}, concepts, splits, thresholds=THRESHOLDS, min_positives=5, n_cards=0,
                     progress=False, **kw)
        wall, cpu = time.time() - t0, time.process_time() - c0
    slopes, secs = {}, {}
    for p, name in PASSES.items():
        pts = [(s, t, r) for q, s, t, r in src.log if q == p]
        if len(pts) > 2:
            slopes[name] = np.polyfit([s for s, _, _ in pts[:-1]], [r for _, _, r in pts[:-1]], 1)[0] / 2**20
        secs[name] = (pts[-1][1] - pts[0][1]) / n if len(pts) > 1 else float("nan")
    row = {"mode": label, "shards": n, "wall": wall, "cpu": cpu, "peak": mem.peak / 2**30,
           "above": (mem.peak - mem.base) / 2**30, "slopes": slopes, "secs": secs}
    return row, res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shards", type=int, nargs="+", default=[5, 10], help="streamed runs over this many shards")
    ap.add_argument("--tokens", type=int, default=300_000)
    ap.add_argument("--features", type=int, default=10_000)
    ap.add_argument("--concepts", type=int, default=500)
    ap.add_argument("--active", type=int, default=40)
    ap.add_argument("--chunk-tokens", type=int, default=32_768)
    ap.add_argument("--no-whole", action="store_true", help="skip the whole-matrix run at the largest shard count")
    args = ap.parse_args()
    root = Path(tempfile.mkdtemp(prefix="enrich_shards_"))
    try:
        t0 = time.time()
        paths, splits = write_shards(args, root)
        print(f"{max(args.shards)} shards x {args.tokens:,} tokens x {args.features:,} features x "
              f"{args.concepts} concepts x {len(THRESHOLDS)} thresholds generated and written in "
              f"{time.time() - t0:.0f} s")
        shards = ConceptShards.open(root / "concepts")
        rows, tables = [], {}
        for n in args.shards:
            src = ShardFiles(paths[:n], args.features, args.chunk_tokens)
            sub = shards if n == len(paths) else ConceptShards.write(
                (shards.shard(i) for i in range(n)), root / f"concepts{n}")
            row, res = timed("streamed", n, src, sub, splits, pool_dir=root / f"pools{n}")
            rows.append(row)
            tables[("streamed", n)] = res.table
            del res, sub  # each run's peak is its own: no grids of an earlier run alive
        if not args.no_whole:
            n = max(args.shards)
            parts = [shards.shard(i) for i in range(n)]
            shards._loaded.clear()
            whole = ConceptMatrix(sp.vstack([p.values for p in parts]).tocsr(), parts[0].concepts,
                                  pd.concat([p.tokens for p in parts], ignore_index=True))
            del parts
            row, res = timed("whole", n, ShardFiles(paths[:n], args.features, args.chunk_tokens), whole, splits)
            del whole
            rows.append(row)
            tables[("whole", n)] = res.table
            same = tables[("streamed", n)].equals(tables[("whole", n)])
            print(f"streamed and whole tables identical at {n} shards: {same} "
                  f"({res.summary['n_concepts_scored']} concepts scored)")
        print(f"{'mode':>8} {'shards':>6} {'wall s':>7} {'CPU s':>6} {'wall s/shard':>12} {'ref/count/detail s/shard':>25} "
              f"{'peak GB':>7} {'above start':>11} {'RSS MB/shard count, detail':>27}")
        for r in rows:
            s, sl = r["secs"], r["slopes"]
            print(f"{r['mode']:>8} {r['shards']:6d} {r['wall']:7.0f} {r['cpu']:6.0f} {r['wall'] / r['shards']:12.1f} "
                  f"{s['reference']:7.1f} / {s['count']:5.1f} / {s['detail']:5.1f}      {r['peak']:7.2f} {r['above']:11.2f} "
                  f"{sl.get('count', float('nan')):12.1f}, {sl.get('detail', float('nan')):6.1f}")
        total = 2e8 / args.tokens
        grids = 2 * 2 * len(THRESHOLDS) * args.concepts * args.features * 4 / 2**30
        for r in rows:
            print(f"{r['mode']} at {r['shards']} shards: 2e8 residues ({total:.0f} shards) "
                  f"~{total * r['wall'] / r['shards'] / 60:.0f} min wall, ~{total * r['cpu'] / r['shards'] / 60:.0f} CPU-min")
        streamed = [r for r in rows if r["mode"] == "streamed"]
        print("streamed peak RSS by shard count: " + ", ".join(f"{r['shards']}: {r['peak']:.2f} GB" for r in streamed)
              + f"; the count grids (tp, hit x 2 splits) take {grids:.2f} GB once every page is touched: "
                "the RSS climb within the count pass stops there (the grids are zeroed lazily)")
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()

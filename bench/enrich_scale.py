"""Enrichment at the scale of one InterPLM shard: the sparse streaming engine vs a per-concept loop.

InterPLM scores each shard of ~3e5 residues against ~10k SAE features, a few hundred
Swiss-Prot concepts and a 5-value threshold grid. This script builds synthetic data of
that shape (sparse latents with ~40 active per token, concept spans of realistic lengths,
some per-token and some per-instance concepts), times ``core.enrich.engine.enrich`` on the
full shard with its peak resident memory, times the plain per-concept loop
(``core.enrich.reference``) on a subsample, extrapolates the loop linearly in tokens x
concepts, and prints the ratio.

    python bench/enrich_scale.py                  # full shard (about a minute on 2 cores)
    python bench/enrich_scale.py --tokens 30000   # quick look

Many shards streamed (a whole Swiss-Prot pass): ``bench/enrich_shards.py``.
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from core.enrich.concepts import ConceptMatrix  # noqa: E402
from core.enrich.engine import enrich  # noqa: E402
from core.enrich.features import ArrayFeatures  # noqa: E402
from core.enrich.reference import f1_grid_loop  # noqa: E402

THRESHOLDS = (0.0, 0.15, 0.5, 0.6, 0.8)


def synthetic(n_tokens: int, n_features: int, n_concepts: int, active: int, seed: int = 0,
              design_seed: int | None = None):
    """Sparse latents, samples of ~300 residues, concepts as spans; a quarter planted on features.

    ``design_seed`` (default ``seed``) fixes what every shard of one dataset shares: the feature
    frequencies, which features carry planted concepts, each concept's kind, prevalence and span
    length; ``seed`` draws the shard's samples, latents and span positions."""
    design = np.random.default_rng(seed if design_seed is None else design_seed)
    rng = np.random.default_rng(seed)
    lengths = []
    while sum(lengths) < n_tokens:
        lengths.append(int(rng.integers(100, 500)))
    lengths[-1] -= sum(lengths) - n_tokens
    if lengths[-1] <= 0:
        lengths.pop()
        lengths[-1] += n_tokens - sum(lengths)
    sample = np.repeat(np.arange(len(lengths)), lengths)
    position = np.concatenate([np.arange(n) for n in lengths])
    # latents: a Zipf-like feature frequency, `active` per token on average
    freq = 1.0 / np.arange(1, n_features + 1) ** 0.8
    freq = design.permutation(freq / freq.sum())
    nnz_per_row = rng.poisson(active, n_tokens)
    cols = rng.choice(n_features, size=int(nnz_per_row.sum()), p=freq)
    rows = np.repeat(np.arange(n_tokens), nnz_per_row)
    vals = rng.exponential(1.0, len(cols)).astype(np.float32)
    X = sp.csr_matrix((vals, (rows, cols)), shape=(n_tokens, n_features), dtype=np.float32)
    X.sum_duplicates()
    # concepts: each present in a fraction of samples with a span length typical of its kind
    spans = []
    kinds = np.where(design.random(n_concepts) < 0.5, "instance", "token")
    fracs = design.uniform(0.01, 0.2, n_concepts)
    span_lens = np.where(kinds == "token", design.integers(1, 4, n_concepts), design.integers(5, 60, n_concepts))
    for c in range(n_concepts):
        frac, span_len = fracs[c], int(span_lens[c])
        for s in np.flatnonzero(rng.random(len(lengths)) < frac):
            n = lengths[s]
            a = int(rng.integers(0, max(n - span_len, 1)))
            spans.append((int(s), a, min(a + span_len, n), f"c{c}", f"{c}:{s}"))
    tokens = pd.DataFrame({"sample": sample, "position": position})
    table = pd.DataFrame({"name": [f"c{c}" for c in range(n_concepts)], "kind": kinds})
    cm = ConceptMatrix.from_spans(spans, tokens, table)
    # plant a quarter of the concepts on features of their own so the table has real signal
    planted = np.argsort(freq)[: n_concepts // 4]   # the rarest features carry the planted concepts
    csc = cm.values.tocsc()
    add_r, add_c = [], []
    for j, f in enumerate(planted):
        r = csc.indices[csc.indptr[j]:csc.indptr[j + 1]]
        add_r.append(r)
        add_c.append(np.full(len(r), f))
    keep = np.ones(n_features, np.float32)
    keep[planted] = 0   # planted features fire only on their concept
    X = X @ sp.diags(keep)
    if add_r:
        r = np.concatenate(add_r)
        X = X + sp.csr_matrix((np.full(len(r), 3.0, np.float32), (r, np.concatenate(add_c))), shape=X.shape)
    splits = {int(s): ("valid" if s % 2 == 0 else "test") for s in range(len(lengths))}
    return sample, position, sp.csr_matrix(X, dtype=np.float32), cm, splits


class PeakRSS:
    """Peak resident memory during a block, sampled from /proc every 50 ms (ru_maxrss never drops)."""

    def __enter__(self):
        self.base = _rss()
        self.peak = self.base
        self._stop = False
        self._t = threading.Thread(target=self._watch, daemon=True)
        self._t.start()
        return self

    def _watch(self):
        while not self._stop:
            self.peak = max(self.peak, _rss())
            time.sleep(0.05)

    def __exit__(self, *exc):
        self._stop = True
        self._t.join()
        self.peak = max(self.peak, _rss())


def _rss() -> int:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * resource.getpagesize()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tokens", type=int, default=300_000)
    ap.add_argument("--features", type=int, default=10_000)
    ap.add_argument("--concepts", type=int, default=500)
    ap.add_argument("--active", type=int, default=40)
    ap.add_argument("--loop-tokens", type=int, default=3_000)
    ap.add_argument("--loop-concepts", type=int, default=10)
    ap.add_argument("--chunk-tokens", type=int, default=32_768)
    ap.add_argument("--neurons", type=int, default=320,
                    help="also time the neuron baseline on dense activations of this width "
                         "(ESM-2 8M's 320, as in InterPLM; each dimension scored as +x and -x); 0 = skip")
    args = ap.parse_args()
    t0 = time.time()
    sample, position, X, cm, splits = synthetic(args.tokens, args.features, args.concepts, args.active)
    t_gen = time.time() - t0
    src = ArrayFeatures(sample, position, X, chunk_tokens=args.chunk_tokens)
    with PeakRSS() as mem:
        t0, c0 = time.time(), time.process_time()
        res = enrich({"sae": src}, cm, splits, thresholds=THRESHOLDS, min_positives=5, n_cards=0,
                     progress=False)
        t_fast, c_fast = time.time() - t0, time.process_time() - c0
    fast_peak = (mem.peak - mem.base) / 2**30

    t_neu = c_neu = neu_peak = None
    if args.neurons:
        rng = np.random.default_rng(1)
        acts = rng.normal(0, 1, (len(sample), args.neurons)).astype(np.float32)
        acts = np.concatenate([acts, -acts], axis=1)
        nsrc = ArrayFeatures(sample, position, acts, chunk_tokens=max(1024, args.chunk_tokens // 4))
        with PeakRSS() as mem:
            t0, c0 = time.time(), time.process_time()
            enrich({"neuron": nsrc}, cm, splits, thresholds=THRESHOLDS, min_positives=5, n_cards=0,
                   progress=False)
            t_neu, c_neu = time.time() - t0, time.process_time() - c0
        neu_peak = (mem.peak - mem.base) / 2**30
        del acts, nsrc

    # the loop on a subsample: the first `loop_tokens` tokens (whole samples) and `loop_concepts` concepts
    n_sub = int(np.searchsorted(sample, sample[min(args.loop_tokens, len(sample) - 1)]))
    n_sub = max(n_sub, 1)
    sub_vals = cm.values[:n_sub][:, : args.loop_concepts]
    kinds = cm.concepts["kind"].tolist()[: args.loop_concepts]
    t0, c0 = time.time(), time.process_time()
    f1_grid_loop(X[:n_sub], sample[:n_sub], sub_vals, kinds, THRESHOLDS)
    t_loop_sub, c_loop_sub = time.time() - t0, time.process_time() - c0
    scale = (len(sample) / n_sub) * (args.concepts / args.loop_concepts)
    t_loop, c_loop = t_loop_sub * scale, c_loop_sub * scale

    print(f"synthetic shard: {len(sample):,} tokens x {args.features:,} features x {args.concepts} concepts "
          f"x {len(THRESHOLDS)} thresholds; {X.nnz / len(sample):.1f} active per token; "
          f"{cm.values.nnz:,} concept entries; {res.summary['n_concepts_scored']} concepts scored "
          f"(generated in {t_gen:.1f}s)")
    rows = [
        ("sparse streaming engine (full shard)", f"{t_fast:.1f}", f"{c_fast:.1f}", f"{fast_peak:.2f}",
         "measured"),
    ]
    if t_neu is not None:
        rows.append((f"engine, neuron baseline ({2 * args.neurons} dense features)", f"{t_neu:.1f}",
                     f"{c_neu:.1f}", f"{neu_peak:.2f}", "measured"))
    rows += [
        (f"per-concept loop ({n_sub:,} tok x {args.loop_concepts} concepts)", f"{t_loop_sub:.1f}",
         f"{c_loop_sub:.1f}", "-", "measured"),
        ("per-concept loop (full shard)", f"{t_loop:.0f}", f"{c_loop:.0f}", "-", f"extrapolated x{scale:.0f}"),
    ]
    w = max(len(r[0]) for r in rows)
    print(f"{'implementation':<{w}}  {'wall s':>8}  {'CPU s':>8}  {'peak GB':>8}  note")
    for r in rows:
        print(f"{r[0]:<{w}}  {r[1]:>8}  {r[2]:>8}  {r[3]:>8}  {r[4]}")
    print(f"speed-up of the engine over the loop: {t_loop / t_fast:.0f}x wall, {c_loop / c_fast:.0f}x CPU; "
          f"target < 120 s and < 4 GB: {'met' if t_fast < 120 and fast_peak < 4 else 'NOT met'} "
          f"(load average at the end: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores)")
    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    print(f"process peak RSS {maxrss:.2f} GB in all (synthetic data, both engine runs and the loop's dense "
          f"subsample); 'peak GB' above is the growth during each run, and the neuron run reuses memory the "
          f"allocator already holds from the first")
    n_planted = int((res.best["f1_test"] > 0.9).sum())
    print(f"concepts with test F1 > 0.9: {n_planted} of {res.summary['n_concepts_scored']} scored "
          f"(a quarter, {args.concepts // 4}, were planted on features of their own)")


if __name__ == "__main__":
    main()

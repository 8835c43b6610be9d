"""Peak memory of the example sampler (core.explain.examples) on a synthetic store far larger
than memory-resident caching would allow.

    python bench/explain_memory.py [--tokens 10000000] [--features 10000] [--l0 32]

A synthetic feature source streams ``--tokens`` tokens in samples of 128, each token with
``--l0`` active latents drawn from a Zipf-like frequency over ``--features`` latents
(exponential magnitudes), in chunks, generated on the fly so the source itself holds one
chunk. The sampler runs with delphi's defaults (10 quantiles, 40 + 50 activating examples, 50
non-activating, windows of 32, minimum 200 activations) and random decoder neighbours for the
hard negatives. Printed side by side: the sampler's peak resident memory, the resident memory
before it started, and what holding every activation in memory would take (value + feature
index + token index per nonzero, the layout of an in-memory latent cache).
"""

from __future__ import annotations

import argparse
import resource
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import scipy.sparse as sp


class SyntheticSource:
    name = "synthetic"
    sparse = True

    def __init__(self, n_tokens: int, n_features: int, l0: int, chunk: int = 65536, seed: int = 0) -> None:
        self.n_tokens, self.n_features, self.l0, self.chunk, self.seed = n_tokens, n_features, l0, chunk, seed
        ranks = np.arange(1, n_features + 1)
        freq = 1.0 / ranks ** 0.8
        self.cdf = np.cumsum(freq / freq.sum())

    def iter_chunks(self, keep=None):
        for i, a in enumerate(range(0, self.n_tokens, self.chunk)):
            n = min(self.chunk, self.n_tokens - a)
            rng = np.random.default_rng([self.seed, i])
            cols = np.minimum(np.searchsorted(self.cdf, rng.random(n * self.l0)), self.n_features - 1)
            rows = np.repeat(np.arange(n), self.l0)
            X = sp.csr_matrix((rng.exponential(1.0, n * self.l0).astype(np.float32), (rows, cols)),
                              shape=(n, self.n_features))
            g = np.arange(a, a + n)
            yield {"sample": g // 128, "position": g % 128, "token": rng.integers(0, 50000, n), "X": X}


def rss_mb() -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def main() -> None:
    from core.explain.examples import ExampleSampler, SamplerConfig
    from core.explain.records import ExampleSet

    ap = argparse.ArgumentParser()
    ap.add_argument("--tokens", type=int, default=10_000_000)
    ap.add_argument("--features", type=int, default=10_000)
    ap.add_argument("--l0", type=int, default=32)
    ap.add_argument("--out", default=None, help="examples folder (default: a temporary one, removed)")
    args = ap.parse_args()
    src = SyntheticSource(args.tokens, args.features, args.l0)
    rng = np.random.default_rng(1)
    nbrs = rng.integers(0, args.features, (args.features, 5))
    out = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="explain_bench_"))
    before = rss_mb()
    t0 = time.time()
    state = ExampleSampler(src, out / "examples", SamplerConfig(), neighbours=nbrs, progress=True).run()
    seconds = time.time() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    es = ExampleSet(out / "examples")
    rec = es.record(int(es.features[len(es.features) // 2]))
    disk = sum(p.stat().st_size for p in (out / "examples").iterdir()) / 2**20
    nnz = args.tokens * args.l0
    in_memory = nnz * (4 + 4 + 8) / 2**20
    print(f"tokens {args.tokens:,}  features {args.features:,}  L0 {args.l0}  nonzeros {nnz:,}")
    print(f"features sampled {state['n_eligible']:,}, skipped (< {SamplerConfig().min_examples} activations) "
          f"{state['n_skipped_too_few']:,}, never active {state['n_dead']:,}; windows {state['n_windows']:,} "
          f"({disk:,.0f} MB on disk); one record: {len(rec.train)} train, {len(rec.test)} test, "
          f"{len(rec.hard)} hard, {len(rec.random)} random")
    print("| measure | MB | ratio to sampler peak |")
    print("|---|---|---|")
    print(f"| sampler peak RSS | {peak:,.0f} | 1.00 |")
    print(f"| RSS before sampling (imports) | {before:,.0f} | {before / peak:.2f} |")
    print(f"| all activations in memory (value, feature, token) | {in_memory:,.0f} | {in_memory / peak:.2f} |")
    print(f"wall {seconds:,.0f} s")
    if not args.out:
        shutil.rmtree(out, ignore_errors=True)


if __name__ == "__main__":
    main()

"""Harvest throughput against the model's plain forward pass, for each shipped model.

For AntiBERTy, IgLM-S and SmolLM2 (all offline) the same samples are packed into the same
batches; the plain forward runs the model on them with no hooks, "capture" runs the adapter
with stop-at-hook and no disk, and "harvest" is ``core.harvest.harvest`` end to end
(tokenisation, capture, writing shards). Tokens/s counts real (unpadded) tokens, so a ratio
above 1 means harvesting is faster than the full forward pass (stop-at-layer skips the
layers after the hook). Peak memory is the peak resident set size above the level before
the measurement (CPU), or the peak CUDA allocation.

Usage: python bench/harvest_throughput.py [--models antiberty iglm smollm2] [--n 64] [--repeats 2]
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import torch

from core.adapters import load_adapter
from core.harvest import harvest, pack_batches, processing_order
from core.samples import Sample

CONF = Path(__file__).resolve().parent.parent / "conf" / "model"
TOPICS = ["the ocean", "a small village", "mathematics", "the history of tea", "a mountain trail", "winter",
          "electric cars", "the moon", "a library", "bread baking", "honeybees", "a thunderstorm", "jazz",
          "the Roman empire", "volcanoes", "a chess game"]


def protein_samples(n: int) -> list[Sample]:
    import pandas as pd

    root = Path(list(importlib.util.find_spec("abnativ").submodule_search_locations)[0]) / "model" / "percentiles"
    frame = pd.read_csv(root / "test_vh_v2_abnativ_seq_scores.csv", nrows=n)
    return [Sample(str(r.seq_id), str(r.input_seq)) for r in frame.itertuples()]


def text_samples(n: int) -> list[Sample]:
    out = []
    for i in range(n):
        topic = TOPICS[i % len(TOPICS)]
        words = " ".join(["Write a short paragraph about", topic, "and explain why it matters"] + ["in detail"] * (i % 5))
        out.append(Sample(f"t{i}", words + "."))
    return out


class PeakMemory:
    """Peak memory above the starting level while the block runs (RSS sampled, or CUDA)."""

    def __init__(self, device: torch.device) -> None:
        self.cuda = device.type == "cuda"
        self.peak_mb = 0.0

    @staticmethod
    def _rss() -> int:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

    def __enter__(self) -> PeakMemory:
        if self.cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self._base = torch.cuda.memory_allocated()
            return self
        self._base = self._rss()
        self._peak = self._base
        self._stop = threading.Event()

        def sample() -> None:
            while not self._stop.is_set():
                self._peak = max(self._peak, self._rss())
                time.sleep(0.002)

        self._thread = threading.Thread(target=sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.cuda:
            torch.cuda.synchronize()
            self.peak_mb = (torch.cuda.max_memory_allocated() - self._base) / 2**20
            return
        self._stop.set()
        self._thread.join()
        self.peak_mb = max(self._peak, self._rss()) - self._base
        self.peak_mb /= 2**20


def timed(fn: Callable[[], object], device: torch.device, repeats: int) -> tuple[float, float]:
    """(best seconds, peak MB) over ``repeats`` runs after one warm-up run."""
    fn()
    best, peak = float("inf"), 0.0
    for _ in range(repeats):
        with PeakMemory(device) as mem:
            t0 = time.perf_counter()
            fn()
            if device.type == "cuda":
                torch.cuda.synchronize()
            best = min(best, time.perf_counter() - t0)
        peak = max(peak, mem.peak_mb)
    return best, peak


def bench_model(config: str, samples: list[Sample], repeats: int, batch_tokens: int) -> list[dict]:
    adapter = load_adapter(CONF / f"{config}.yaml")
    order = processing_order(samples, len(samples))
    estimate = (lambda s: len(s.text) + 4) if hasattr(adapter, "max_residues") else (lambda s: len(adapter.encode(s.text)))
    spans = pack_batches(samples, order, 0, batch_tokens, 256, estimate)
    batches = [adapter.tokenize([samples[i] for i in order[b:e]], sample_index=order[b:e]).to(adapter.device)
               for b, e in spans]
    n_tokens = int(sum(int(b.attention_mask.sum()) for b in batches))

    def plain() -> None:
        with torch.no_grad():
            for b in batches:
                adapter._run(b)

    t_fwd, m_fwd = timed(plain, adapter.device, repeats)
    rows = []
    for label, layer in (("early", 1), ("late", adapter.n_layers - 1)):
        hook = f"blocks.{layer}.hook_resid_post"

        def capture(hook: str = hook) -> None:
            for b in batches:
                adapter.capture(b, [hook])

        def run_harvest(hook: str = hook) -> None:
            with tempfile.TemporaryDirectory() as tmp:
                harvest(adapter, samples, [hook], tmp, batch_tokens=batch_tokens, progress=False)

        t_cap, _ = timed(capture, adapter.device, repeats)
        t_har, m_har = timed(run_harvest, adapter.device, repeats)
        rows.append({"model": adapter.name, "hook": f"{label} ({hook})", "tokens": n_tokens,
                     "forward_tok_s": n_tokens / t_fwd, "capture_tok_s": n_tokens / t_cap,
                     "harvest_tok_s": n_tokens / t_har, "capture_vs_forward": t_fwd / t_cap,
                     "harvest_vs_forward": t_fwd / t_har, "forward_peak_mb": m_fwd, "harvest_peak_mb": m_har})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["antiberty", "iglm", "smollm2"])
    parser.add_argument("--n", type=int, default=64, help="samples per model")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--batch-tokens", type=int, default=4096)
    args = parser.parse_args()
    rows = []
    for name in args.models:
        samples = text_samples(args.n) if name in ("smollm2", "causal_lm") else protein_samples(args.n)
        rows.extend(bench_model(name, samples, args.repeats, args.batch_tokens))
    print(f"device: {'cuda' if torch.cuda.is_available() else 'cpu'}, threads: {torch.get_num_threads()}, "
          f"samples per model: {args.n}, best of {args.repeats}")
    head = (f"{'model':<10} {'hook':<36} {'tokens':>6} {'fwd tok/s':>10} {'cap tok/s':>10} {'harv tok/s':>10} "
            f"{'cap/fwd':>8} {'harv/fwd':>8} {'fwd MB':>7} {'harv MB':>7}")
    print(head)
    print("-" * len(head))
    for r in rows:
        print(f"{r['model']:<10} {r['hook']:<36} {r['tokens']:>6} {r['forward_tok_s']:>10.0f} "
              f"{r['capture_tok_s']:>10.0f} {r['harvest_tok_s']:>10.0f} {r['capture_vs_forward']:>8.2f} "
              f"{r['harvest_vs_forward']:>8.2f} {r['forward_peak_mb']:>7.0f} {r['harvest_peak_mb']:>7.0f}")


if __name__ == "__main__":
    main()

"""The order harvest runs samples in, and how they pack into batches.

The order depends only on the samples (consecutive windows of ``sort_window`` samples, each
sorted by length), so after a kill a writer's ``samples_done`` says exactly where to continue.
Sorting within windows keeps padding small without gathering all short samples at the start
of the store.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from core.adapters.base import ModelAdapter
from core.samples import Sample


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


def token_estimator(adapter: ModelAdapter) -> Callable[[Sample], int]:
    """Token count per sample for packing: residues + 4 for proteins, the tokenizer's count for text."""
    if hasattr(adapter, "max_residues"):
        return lambda s: min(len(s.text), getattr(adapter, "max_residues", None) or len(s.text)) + 4
    encode = getattr(adapter, "encode", None)
    if encode is not None:
        return lambda s: len(encode(s.text)) if s.text else 1
    return lambda s: max(1, len(s.text) // 3) + 4

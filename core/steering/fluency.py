"""Judge-free fluency: how surprised an unsteered model is by the text a steered model wrote.

Scoring steered text with the steered model itself would hide damage (a broken model is
confident in its own output), so the scorer is the unsteered model, or a separate
reference model. The measure is the per-token perplexity of each generation given its
prompt, averaged over generations (geometric mean across generations, so one degenerate
answer does not dominate).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch


def token_counts(tokenizer: Any, texts: Sequence[str]) -> list[int]:
    """Number of tokens of each text on its own (no special tokens)."""
    return [len(tokenizer(t, add_special_tokens=False)["input_ids"]) for t in texts]


def perplexities(scorer: Any, prompts: Sequence[str], generations: Sequence[str]) -> list[float]:
    """Per-generation perplexity under ``scorer`` (an adapter with ``sequence_logprobs``).

    Empty generations have no tokens to score and get NaN.
    """
    keep = [i for i, g in enumerate(generations) if g and g.strip()]
    out = [float("nan")] * len(generations)
    if not keep:
        return out
    ps = [prompts[i] for i in keep]
    gs = [generations[i] for i in keep]
    with torch.no_grad():
        try:
            mean_lp = torch.as_tensor(scorer.sequence_logprobs(ps, gs, reduction="mean"),
                                      dtype=torch.float64).reshape(-1).tolist()
        except TypeError:  # a scorer that only returns summed log-probabilities
            lp = torch.as_tensor(scorer.sequence_logprobs(ps, gs), dtype=torch.float64).reshape(-1)
            counts = token_counts(scorer.tokenizer, gs)
            mean_lp = [float(lp[j]) / max(counts[j], 1) for j in range(len(gs))]
    for j, i in enumerate(keep):
        out[i] = math.exp(-mean_lp[j])
    return out


def fluency(scorer: Any, prompts: Sequence[str], generations: Sequence[str]) -> float:
    """Geometric-mean perplexity of the generations (lower is more fluent); NaN if none scored."""
    ppl = [p for p in perplexities(scorer, prompts, generations) if not math.isnan(p)]
    if not ppl:
        return float("nan")
    return float(math.exp(sum(math.log(p) for p in ppl) / len(ppl)))

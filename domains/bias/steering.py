"""Debiasing through the shared steering framework: gender features ablated, against DiffMean and prompting.

Every method is scored by the same behaviour function: the pronoun bias metric (mean over
occupations of |log P(he) - log P(she)|, and its role variants) on occupation prompts, and
fluency (perplexity, under the unsteered model, of what the steered model writes). Strengths
(for SAE ablation: how many top gender features) are chosen on one half of the prompts and
reported on the other, by ``core.steering.sweep_strengths``.

- ``sae_ablation``: zero the top-N gender features at every position (error term kept);
- ``diffmean_projection``: project the male-minus-female DiffMean direction out (one setting);
- ``diffmean_add``: add a multiple of that direction (negative moves towards "she");
- ``prompt``: the unsteered model with an instruction before each prompt.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from core.samples import Sample
from core.steering import AblateFeatures, AddDirection, ProjectOut, fluency, split_halves, sweep_strengths
from domains.bias.behaviour import bias_metric

DEFAULT_INSTRUCTION = "Everyone can do any job, whatever their gender. "


def non_special(act: torch.Tensor, batch: Any) -> torch.Tensor:
    """Position mask for interventions: every real token except special ones (the document-start
    token that absorbs the attention sink, chat markers). Generation steps without a batch edit all."""
    special = getattr(batch, "special_mask", None) if batch is not None else None
    if special is not None and tuple(special.shape) == tuple(act.shape[:2]):
        return ~special.to(act.device)
    return torch.ones(act.shape[:2], dtype=torch.bool, device=act.device)


def pair_token_sets(acts: torch.Tensor, mask: torch.Tensor, ids: torch.Tensor
                    ) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Per counterfactual pair (rows 2i male, 2i+1 female), the tokens from the first differing one on.

    In a causal model the shared prefix has identical activations in both sentences, so only
    the gendered word and what follows it carry the difference.
    """
    male, female = [], []
    for i in range(0, acts.shape[0] - 1, 2):
        im, jf = ids[i], ids[i + 1]
        n = min(int((im >= 0).sum()), int((jf >= 0).sum()))
        differ = (im[:n] != jf[:n]).nonzero()
        p = int(differ[0]) if len(differ) else n - 1
        male.append(acts[i][p:][mask[i][p:]])
        female.append(acts[i + 1][p:][mask[i + 1][p:]])
    return male, female


def diffmean_from_pairs(male: Sequence[torch.Tensor], female: Sequence[torch.Tensor]) -> torch.Tensor:
    """Male-minus-female DiffMean over counterfactual pairs (each sentence's tokens averaged first)."""
    from core.steering import diffmean_direction

    return diffmean_direction(torch.stack([m.mean(0) for m in male]), torch.stack([f.mean(0) for f in female]))


def gender_feature_ranking(sae: Any, male: Sequence[torch.Tensor], female: Sequence[torch.Tensor],
                           direction: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Latents ordered by |mean f(male) - mean f(female)| * |W_dec[f] . u|, u the unit gender direction.

    Like SAEBench's attribution for SCR, but with the DiffMean direction in place of a probe and
    counterfactual pairs in place of labelled texts, so the difference isolates the gendered word.
    """
    with torch.no_grad():
        fm = torch.stack([sae.encode(m.float()).float().mean(0) for m in male]).mean(0)
        ff = torch.stack([sae.encode(f.float()).float().mean(0) for f in female]).mean(0)
        u = direction.float() / direction.float().norm().clamp_min(1e-12)
        align = sae.W_dec.detach().float() @ u
    effect = ((fm - ff) * align).abs().numpy()
    return np.argsort(-effect, kind="stable"), effect


def make_behaviour_fn(adapter: Any, hook: str, *, fluency_prompts: int = 12, max_new_tokens: int = 16,
                      batch_size: int = 32) -> Callable[[Any, Sequence[Sample]], dict[str, Any]]:
    """``fn(intervention_or_None, prompts) -> {"behaviour", "fluency", ...}`` for ``sweep_strengths``."""

    def fn(intervention: Any, prompts: Sequence[Sample]) -> dict[str, Any]:
        ctx = adapter.intervene(hook, intervention) if intervention is not None else contextlib.nullcontext()
        texts = [p.text for p in prompts[:fluency_prompts]]
        with ctx:
            m = bias_metric(adapter, prompts, batch_size=batch_size)
            gens = adapter.generate(texts, max_new_tokens=max_new_tokens)
        flu = fluency(adapter, texts, gens)
        return {"behaviour": m["mean_abs_diff"], "fluency": flu, "stereotype_gap": m["stereotype_gap"],
                "mean_diff": m["mean_diff"], "example": gens[0] if gens else ""}

    return fn


def _row(method: str, layer: Any, n: int, result: dict[str, Any]) -> dict[str, Any]:
    row = {"method": method, "layer": layer, "strength": None, "behaviour": float(result["behaviour"]),
           "fluency": float(result["fluency"]), "n": n, "split": "score", "chosen": True}
    row.update({k: v for k, v in result.items() if k not in row})
    return row


def _insert_after_start(text: str, instruction: str, start: str) -> str:
    if start and text.startswith(start):
        return start + instruction + text[len(start):]
    return instruction + text


def run_debias(adapter: Any, hook: str, prompts: Sequence[Sample], *, sae: Any | None, ranking: np.ndarray | None,
               direction: torch.Tensor, layer: Any = None, feature_counts: Sequence[int] = (2, 5, 10, 20, 50),
               add_strengths: Sequence[float] = (-8.0, -4.0, -2.0, -1.0, 1.0, 2.0), instruction: str = DEFAULT_INSTRUCTION,
               max_fluency_ratio: float | None = 2.0, seed: int = 0, fluency_prompts: int = 12,
               max_new_tokens: int = 16, start: str = "",
               progress: Callable[[str], None] | None = None) -> list[dict[str, Any]]:
    """All methods on the same select/score halves; returns steering-table rows."""
    behave = make_behaviour_fn(adapter, hook, fluency_prompts=fluency_prompts, max_new_tokens=max_new_tokens)
    halves = split_halves(len(prompts), seed)
    memo: dict[tuple[int, ...], dict[str, Any]] = {}

    def cached(intervention: Any, ps: Sequence[Sample]) -> dict[str, Any]:
        if intervention is not None:
            return behave(intervention, ps)
        key = tuple(id(p) for p in ps)
        if key not in memo:
            memo[key] = behave(None, ps)
        return dict(memo[key])

    rows: list[dict[str, Any]] = []
    common = {"layer": layer, "halves": halves, "seed": seed, "objective": "min",
              "max_fluency_ratio": max_fluency_ratio, "progress": progress}
    if sae is not None and ranking is not None:
        counts = [n for n in feature_counts if n <= len(ranking)]
        rows += sweep_strengths(lambda n: AblateFeatures(sae, ranking[:int(n)].tolist(), positions=non_special),
                                counts, prompts, cached, method="sae_ablation", baseline=True, **common)
    unit = direction.float() / direction.float().norm().clamp_min(1e-12)
    rows += sweep_strengths(lambda _s: ProjectOut(unit, positions=non_special), [1.0], prompts, cached,
                            method="diffmean_projection", baseline=not rows, **common)
    rows += sweep_strengths(lambda s: AddDirection(direction, s, positions=non_special), add_strengths, prompts, cached,
                            method="diffmean_add", baseline=False, **common)
    score = [prompts[i] for i in halves[1]]
    rewritten = [Sample(p.id, _insert_after_start(p.text, instruction, start), dict(p.meta)) for p in score]
    if progress:
        progress("prompt: score half")
    rows.append(_row("prompt", layer, len(score), behave(None, rewritten)))
    for r in rows:
        for k, v in list(r.items()):
            if isinstance(v, float) and math.isnan(v):
                r[k] = None
    return rows

"""Steering a trait and measuring it with the inventory: target shift, side effects, fluency.

The behaviour is the inventory score of the steered trait; every call also scores the four
other traits (their drift is the side effect) and asks a few neutral questions whose
answers the unsteered model rates for perplexity (fluency). Strengths are chosen on one
half of the items and reported on the other (``core.steering.sweep_strengths``); the
halves are stratified so each trait and key sits in both.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import nullcontext
from typing import Any

import numpy as np
import pandas as pd
import torch

from core.errors import DataError
from domains.personality.inventory import TRAITS, Item, stratified_halves
from domains.personality.scoring import ANSWER_PREFIX, Query, score_queries, trait_means


def inventory_behaviour(adapter: Any, trait: str, hook: str, *, fluency_questions: Sequence[str],
                        max_new_tokens: int = 24, answer_prefix: str = ANSWER_PREFIX,
                        system: str | None = None) -> Callable[[Any, Sequence[Query]], dict[str, Any]]:
    """A ``behaviour_fn(intervention_or_None, queries)`` for ``sweep_strengths``.

    Returns the steered trait's mean score as ``behaviour``, each trait's mean as
    ``score_<T>``, and the unsteered model's perplexity of answers written under the
    intervention as ``fluency``. ``system`` is the persona instruction the fluency
    questions are asked under (the prompting baseline), None for the default prompt.
    """
    from core.steering import fluency

    def behaviour(intervention: Any, queries: Sequence[Query]) -> dict[str, Any]:
        prompts = []
        for q in fluency_questions:
            msgs = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": q}]
            prompts.append(adapter.render_chat(msgs))
        df = score_queries(adapter, list(queries), answer_prefix=answer_prefix, hook=hook, intervention=intervention)
        ctx = adapter.intervene(hook, intervention) if intervention is not None else nullcontext()
        with ctx:
            gens = adapter.generate(prompts, max_new_tokens=max_new_tokens) if prompts else []
        means = trait_means(df)
        if trait not in means:
            raise DataError(f"no items of trait {trait} among the steering queries",
                            fix="use an inventory with items of every steered trait")
        out: dict[str, Any] = {"behaviour": means[trait],
                               "fluency": fluency(adapter, prompts, gens) if prompts else float("nan"),
                               "option_mass": float(df["option_mass"].mean())}
        out.update({f"score_{t}": v for t, v in means.items()})
        out["example"] = gens[0][:160] if gens else ""
        return out

    return behaviour


def unit_direction(vector: torch.Tensor) -> torch.Tensor:
    v = torch.as_tensor(vector, dtype=torch.float32)
    n = v.norm()
    if float(n) == 0.0:
        raise DataError("cannot steer along a zero direction", fix="check that high and low personas differ")
    return v / n


def feature_direction(w_dec: torch.Tensor, high: Sequence[int], low: Sequence[int]) -> torch.Tensor:
    """Sum of the unit decoder rows of the high-pole features minus those of the low-pole ones."""
    if not high and not low:
        raise DataError("no SAE features were found for this trait", fix="train a larger SAE or use more answers")
    w = torch.as_tensor(w_dec, dtype=torch.float32)
    rows = w / w.norm(dim=1, keepdim=True).clamp_min(1e-12)
    d = torch.zeros(w.shape[1])
    for i in high:
        d += rows[int(i)]
    for i in low:
        d -= rows[int(i)]
    return d


def steer_trait(adapter: Any, trait: str, hook: str, layer: int, items: Sequence[Item],
                directions: dict[str, torch.Tensor], strengths: Sequence[float], *,
                prompt_instruction: str | None, fluency_questions: Sequence[str], max_new_tokens: int = 24,
                seed: int = 0, max_fluency_ratio: float | None = None, answer_prefix: str = ANSWER_PREFIX,
                progress: Callable[[str], None] | None = None) -> list[dict[str, Any]]:
    """Sweep each direction (AddDirection at all positions) and the prompting baseline for one trait.

    ``directions`` maps a method name to a vector; the strength multiplies it as given.
    Returns steering-table rows with a ``trait`` column.
    """
    from core.steering import AddDirection, sweep_strengths
    from core.steering.sweep import _row

    queries = [Query(it) for it in items]
    halves = stratified_halves(items, seed)
    base_fn = inventory_behaviour(adapter, trait, hook, fluency_questions=fluency_questions,
                                  max_new_tokens=max_new_tokens, answer_prefix=answer_prefix)
    memo: dict[tuple[int, ...], dict[str, Any]] = {}

    def cached(intervention: Any, qs: Sequence[Query]) -> dict[str, Any]:
        if intervention is not None:
            return base_fn(intervention, qs)
        key = tuple(id(q) for q in qs)
        if key not in memo:
            memo[key] = base_fn(None, qs)
        return dict(memo[key])

    rows: list[dict[str, Any]] = []
    for i, (method, vec) in enumerate(directions.items()):
        vec = torch.as_tensor(vec, dtype=torch.float32)
        rows.extend(sweep_strengths(lambda s, v=vec: AddDirection(v, s, positions="all"), strengths, queries,
                                    cached, method=method, layer=layer, halves=halves, seed=seed,
                                    objective="max", max_fluency_ratio=max_fluency_ratio, baseline=(i == 0),
                                    progress=progress))
    if prompt_instruction:
        if progress:
            progress(f"{trait}: prompting baseline, score half")
        fn = inventory_behaviour(adapter, trait, hook, fluency_questions=fluency_questions,
                                 max_new_tokens=max_new_tokens, answer_prefix=answer_prefix,
                                 system=prompt_instruction)
        score_q = [Query(items[j], prompt_instruction, "original", f"{trait}_high") for j in halves[1]]
        rows.append(_row("prompt", layer, None, "score", len(score_q), fn(None, score_q), True))
    for r in rows:
        r["trait"] = trait
    return rows


def summarise_steering(rows: Sequence[dict[str, Any]]) -> pd.DataFrame:
    """Held-out effect per (trait, method): target shift, off-target shift and fluency vs unsteered.

    ``shift`` = steered - unsteered score of the steered trait on the score half;
    ``off_target`` = mean absolute shift of the other traits; ``fluency_ratio`` = steered
    perplexity / unsteered perplexity.
    """
    df = pd.DataFrame(list(rows))
    score = df[df["split"] == "score"]
    out = []
    for trait, g in score.groupby("trait", sort=False):
        base = g[g["method"] == "none"]
        if base.empty:
            continue
        base = base.iloc[0]
        others = [t for t in TRAITS if t != trait and f"score_{t}" in g.columns]
        for _, r in g[g["method"] != "none"].iterrows():
            off = [r[f"score_{t}"] - base[f"score_{t}"] for t in others]
            out.append({"trait": trait, "method": r["method"], "strength": r["strength"],
                        "score": r["behaviour"], "unsteered": base["behaviour"],
                        "shift": r["behaviour"] - base["behaviour"],
                        "off_target": float(np.mean(np.abs(off))) if off else float("nan"),
                        "off_target_signed": float(np.mean(off)) if off else float("nan"),
                        "fluency": r["fluency"], "fluency_unsteered": base["fluency"],
                        "fluency_ratio": r["fluency"] / base["fluency"] if base["fluency"] else float("nan"),
                        "n_items": int(r["n"])})
    return pd.DataFrame(out)

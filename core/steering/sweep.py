"""Strength sweeps that cannot overfit their own score.

The prompts are split once into a *select* half and a *score* half. Every strength is
tried on the select half only; the strength is chosen there (best behaviour, optionally
subject to a fluency limit); only then is the chosen strength, and the unsteered model,
run on the score half. The scoring half therefore never influences which strength is
reported, and the reported number is an honest held-out estimate.

A behaviour function is supplied by the domain:
``behaviour_fn(intervention_or_None, prompts) -> {"behaviour": float, "fluency": float, ...}``
(``None`` means the unsteered model). Extra keys (rates, counts) are carried into the rows.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from core.errors import ConfigError, DataError

BehaviourFn = Callable[[Any, Sequence[Any]], dict[str, Any]]
ROW_COLUMNS = ("method", "layer", "strength", "behaviour", "fluency", "n", "split", "chosen")


def split_halves(n: int, seed: int = 0) -> tuple[list[int], list[int]]:
    """Deterministic random split of ``range(n)`` into a select half and a score half."""
    if n < 2:
        raise DataError(f"a strength sweep needs at least 2 prompts to split into halves, got {n}",
                        fix="add prompts (the memorised set or probe set is too small)")
    perm = np.random.default_rng(seed).permutation(n)
    half = n // 2
    return sorted(perm[:half].tolist()), sorted(perm[half:].tolist())


def _row(method: str, layer: Any, strength: float | None, split: str, n: int, result: dict[str, Any],
         chosen: bool) -> dict[str, Any]:
    if "behaviour" not in result:
        raise ConfigError("behaviour_fn must return a dict with a 'behaviour' value",
                          fix="return {'behaviour': float, 'fluency': float, ...}")
    row = {"method": method, "layer": layer, "strength": strength,
           "behaviour": float(result["behaviour"]),
           "fluency": float(result.get("fluency", float("nan"))), "n": n, "split": split, "chosen": chosen}
    for k, v in result.items():
        if k not in row:
            row[k] = v
    return row


def choose_strength(rows: Sequence[dict[str, Any]], *, objective: str = "max",
                    max_fluency: float | None = None) -> float:
    """Pick a strength from select-half rows: best behaviour among rows within the fluency limit.

    Ties go to the smaller absolute strength (the gentler edit). When no strength meets the
    fluency limit the most fluent one is taken.
    """
    if objective not in ("max", "min"):
        raise ConfigError(f"unknown objective {objective!r}", fix="use objective='max' or 'min'")
    if not rows:
        raise DataError("no strengths were tried", fix="give at least one strength")
    sign = 1.0 if objective == "max" else -1.0

    def ok(r: dict[str, Any]) -> bool:
        f = r["fluency"]
        return max_fluency is None or (not math.isnan(f) and f <= max_fluency)

    allowed = [r for r in rows if ok(r)]
    if not allowed:
        return float(min(rows, key=lambda r: (r["fluency"] if not math.isnan(r["fluency"]) else math.inf,
                                              abs(r["strength"])))["strength"])
    best = max(allowed, key=lambda r: (sign * r["behaviour"], -abs(r["strength"])))
    return float(best["strength"])


def sweep_strengths(make_intervention: Callable[[float], Any], strengths: Sequence[float],
                    prompts: Sequence[Any], behaviour_fn: BehaviourFn, *, method: str,
                    layer: Any = None, halves: tuple[Sequence[int], Sequence[int]] | None = None,
                    seed: int = 0, objective: str = "max", max_fluency_ratio: float | None = None,
                    baseline: bool = True, progress: Callable[[str], None] | None = None
                    ) -> list[dict[str, Any]]:
    """Try every strength on the select half, choose one there, score it on the other half.

    Returns steering-table rows (``method, layer, strength, behaviour, fluency, n, split,
    chosen`` plus whatever the behaviour function reports). ``max_fluency_ratio`` bounds the
    allowed perplexity relative to the unsteered model on the select half. With
    ``baseline=True`` rows for the unsteered model (method ``"none"``) are added on both halves.
    """
    strengths = [float(s) for s in strengths]
    if not strengths:
        raise ConfigError("no strengths to sweep", fix="set steer.strengths to a non-empty list")
    select, score = halves if halves is not None else split_halves(len(prompts), seed)
    overlap = set(select) & set(score)
    if overlap:
        raise DataError(f"select and score halves share prompts {sorted(overlap)[:5]}",
                        fix="pass disjoint index lists")
    sel_prompts = [prompts[i] for i in select]
    score_prompts = [prompts[i] for i in score]
    say = progress or (lambda _m: None)

    rows: list[dict[str, Any]] = []
    base_sel = None
    if baseline or max_fluency_ratio is not None:
        say(f"{method}: unsteered, select half")
        base_sel = _row("none", layer, None, "select", len(sel_prompts), behaviour_fn(None, sel_prompts), False)
        if baseline:
            rows.append(base_sel)
    tried = []
    for s in strengths:
        say(f"{method}: strength {s:g}, select half")
        tried.append(_row(method, layer, s, "select", len(sel_prompts),
                          behaviour_fn(make_intervention(s), sel_prompts), False))
    limit = None
    if max_fluency_ratio is not None and base_sel is not None and not math.isnan(base_sel["fluency"]):
        limit = max_fluency_ratio * base_sel["fluency"]
    chosen = choose_strength(tried, objective=objective, max_fluency=limit)
    for r in tried:
        r["chosen"] = r["strength"] == chosen
    rows.extend(tried)

    say(f"{method}: chosen strength {chosen:g}, score half")
    rows.append(_row(method, layer, chosen, "score", len(score_prompts),
                     behaviour_fn(make_intervention(chosen), score_prompts), True))
    if baseline:
        rows.append(_row("none", layer, None, "score", len(score_prompts),
                         behaviour_fn(None, score_prompts), False))
    return rows

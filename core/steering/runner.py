"""One steering experiment: SAE editing beside its baselines, each swept and scored on held-out prompts.

A domain describes what to steer in a ``SteeringTask``: the prompts to steer, a behaviour
function, two groups of *training* prompts that show the wanted behaviour (A) and the
unwanted one (B), and optional prompt rewrites (the prompting baseline). The runner builds
every method from the training groups only, then sweeps strengths with the select/score
split of ``sweep_strengths``:

- ``diffmean``: add the mean difference of raw activations (A - B);
- ``probe``: add the logistic-regression direction, scaled to the group gap;
- ``spare``: SpARE edit with an SAE (remove B's features, add A's);
- ``clamp``: clamp A's features to their group-A means times the strength;
- ``prompt:<name>``: the unsteered model on rewritten prompts (no strength to choose).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from core.errors import ConfigError, DataError
from core.steering.collect import last_token_activations
from core.steering.directions import diffmean_direction, probe_direction
from core.steering.features import FeatureSelection, select_features
from core.steering.interventions import AddDirection, ClampFeatures, PositionSpec, SpareEdit
from core.steering.sweep import BehaviourFn, _row, split_halves, sweep_strengths

KNOWN_METHODS = ("diffmean", "probe", "spare", "clamp")


@dataclass
class SteeringTask:
    """What a domain supplies: prompts to steer, how to score them, and examples of each behaviour."""

    name: str
    prompts: list[Any]
    behaviour_fn: BehaviourFn
    group_a: list[Any]
    group_b: list[Any]
    objective: str = "max"
    behaviour_label: str = "behaviour"
    prompt_variants: dict[str, Callable[[Any], Any]] = field(default_factory=dict)


@dataclass
class SteeringOutcome:
    rows: list[dict[str, Any]]
    directions: dict[str, torch.Tensor]
    features: FeatureSelection | None
    halves: tuple[list[int], list[int]]


def run_steering(adapter: Any, task: SteeringTask, *, hook: str, layer: Any = None,
                 methods: Sequence[str] = ("diffmean", "spare"),
                 strengths: dict[str, Sequence[float]] | Sequence[float] = (0.5, 1.0, 2.0, 4.0),
                 sae: torch.nn.Module | None = None, k_features: int = 16, positions: PositionSpec = "last",
                 seed: int = 0, max_fluency_ratio: float | None = None, batch_size: int = 16,
                 progress: Callable[[str], None] | None = None) -> SteeringOutcome:
    """Build each method from the training groups, sweep it, and score it on the held-out half."""
    unknown = [m for m in methods if m not in KNOWN_METHODS]
    if unknown:
        raise ConfigError(f"unknown steering methods {unknown}", fix=f"use methods from {list(KNOWN_METHODS)}")
    if any(m in ("spare", "clamp") for m in methods) and sae is None:
        raise ConfigError("methods 'spare' and 'clamp' need an SAE", fix="set steer.sae to an SAE folder")
    if not task.group_a or not task.group_b:
        raise DataError(f"task {task.name}: both behaviour groups need training prompts "
                        f"(got {len(task.group_a)} and {len(task.group_b)})",
                        fix="use more prompts so that both behaviours occur")

    acts = last_token_activations(adapter, list(task.group_a) + list(task.group_b), [hook],
                                  batch_size=batch_size)[hook]
    y = np.r_[np.ones(len(task.group_a), dtype=int), np.zeros(len(task.group_b), dtype=int)]
    a, b = acts[y == 1], acts[y == 0]
    directions: dict[str, torch.Tensor] = {}
    selection: FeatureSelection | None = None
    makers: dict[str, Callable[[float], Any]] = {}
    if "diffmean" in methods:
        directions["diffmean"] = diffmean_direction(a, b)
        makers["diffmean"] = lambda s: AddDirection(directions["diffmean"], s, positions=positions)
    if "probe" in methods:
        directions["probe"] = probe_direction(acts, y, penalty="l2", seed=seed)
        makers["probe"] = lambda s: AddDirection(directions["probe"], s, positions=positions)
    if sae is not None and any(m in ("spare", "clamp") for m in methods):
        with torch.no_grad():
            f = sae.encode(acts.to(sae.W_dec.dtype)).float()
        selection = select_features(f, y, k=k_features, seed=seed)
        if not selection.a_features and not selection.b_features:
            raise DataError(f"task {task.name}: no SAE feature separates the two behaviour groups",
                            fix="use more training prompts, another layer, or a larger SAE")
        sel = selection
        if "spare" in methods:
            makers["spare"] = lambda s: SpareEdit(sae, sel.b_features, sel.a_features, sel.b_means,
                                                  sel.a_means, s, positions=positions)
        if "clamp" in methods:
            if not sel.a_features:
                raise DataError(f"task {task.name}: no SAE feature is more active in the wanted behaviour",
                                fix="use 'spare' (which also removes the other group's features)")
            makers["clamp"] = lambda s: ClampFeatures(sae, sel.a_features,
                                                      torch.tensor(sel.a_means) * s, positions=positions)

    halves = split_halves(len(task.prompts), seed)
    behaviour_fn = _cache_unsteered(task.behaviour_fn)
    rows: list[dict[str, Any]] = []
    for i, m in enumerate(methods):
        strs = strengths[m] if isinstance(strengths, dict) else strengths
        rows.extend(sweep_strengths(makers[m], strs, task.prompts, behaviour_fn, method=m, layer=layer,
                                    halves=halves, seed=seed, objective=task.objective,
                                    max_fluency_ratio=max_fluency_ratio, baseline=(i == 0),
                                    progress=progress))
    score_prompts = [task.prompts[i] for i in halves[1]]
    for name, rewrite in task.prompt_variants.items():
        if progress:
            progress(f"prompt:{name}, score half")
        result = task.behaviour_fn(None, [rewrite(p) for p in score_prompts])
        rows.append(_row(f"prompt:{name}", layer, None, "score", len(score_prompts), result, True))
    return SteeringOutcome(rows, directions, selection, halves)


def _cache_unsteered(fn: BehaviourFn) -> BehaviourFn:
    """Run the unsteered model once per prompt list, however many methods ask for it."""
    memo: dict[tuple[int, ...], dict[str, Any]] = {}

    def wrapped(intervention: Any, prompts: Sequence[Any]) -> dict[str, Any]:
        if intervention is not None:
            return fn(intervention, prompts)
        key = tuple(id(p) for p in prompts)
        if key not in memo:
            memo[key] = fn(None, prompts)
        return dict(memo[key])

    return wrapped

"""Steering: interventions at a hook, directions from two groups, held-out strength sweeps, fluency.

    from core.steering import AddDirection, ClampFeatures, SpareEdit, AblateFeatures, ProjectOut
    from core.steering import diffmean_direction, probe_direction, sweep_strengths, fluency

Every intervention is a callable ``fn(act [B, T, d], batch) -> act`` for
``adapter.intervene(hook, fn)``, acting at ``positions="all" | "last" | mask``.
"""

from core.steering.collect import SITES, last_token_activations, resolve_hook
from core.steering.directions import ProbeResult, diffmean_direction, linear_probe, probe_direction
from core.steering.features import FeatureSelection, feature_scores, select_features
from core.steering.fluency import fluency, perplexities
from core.steering.interventions import (
    AblateFeatures,
    AddDirection,
    ClampFeatures,
    Intervention,
    ProjectOut,
    SpareEdit,
    position_mask,
)
from core.steering.runner import KNOWN_METHODS, SteeringOutcome, SteeringTask, run_steering
from core.steering.sweep import choose_strength, split_halves, sweep_strengths
from core.steering.table import chosen_rows, plot_sweep, steering_table

__all__ = [
    "AblateFeatures", "AddDirection", "ClampFeatures", "FeatureSelection", "Intervention", "KNOWN_METHODS",
    "ProbeResult", "ProjectOut", "SITES", "SpareEdit", "SteeringOutcome", "SteeringTask", "choose_strength",
    "chosen_rows", "diffmean_direction", "feature_scores", "fluency", "last_token_activations",
    "linear_probe", "perplexities", "plot_sweep", "position_mask", "probe_direction", "resolve_hook",
    "run_steering", "select_features", "split_halves", "steering_table", "sweep_strengths",
]

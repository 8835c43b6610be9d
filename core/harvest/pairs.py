"""Paired hooks: an MLP's input and output harvested in one pass, for transcoders.

A transcoder learns ``MLP(x)`` from ``x``, so its input store (``blocks.i.hook_mlp_in``) and
target store (``blocks.i.hook_mlp_out``) must hold the same tokens row by row. Harvesting both
hooks from one forward pass gives that by construction; each store's manifest then records
``rows_key`` (a hash of everything that decides which tokens land in which row: the samples,
their order, the position rule, the model) and, for an MLP pair, its partner. The data module
compares ``rows_key`` before training and refuses stores that do not line up.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Sequence
from typing import Any

from core.errors import ConfigError

PAIR_SITE = "mlp_pair"
_MLP = re.compile(r"blocks\.(\d+)\.hook_mlp_(in|out)")


def check_layers(layers: Sequence[int], n_layers: int, what: str = "harvest.layers") -> list[int]:
    """Layer indices (negative ones count from the end) checked against the model's depth."""
    out = []
    for i in layers:
        i = int(i)
        if not -n_layers <= i < n_layers:
            raise ConfigError(f"{what} has layer {i}, but the model has {n_layers} layers (0..{n_layers - 1})",
                              fix=f"choose layers in 0..{n_layers - 1} (or -{n_layers}..-1 from the end)")
        out.append(i % n_layers)
    return out


def mlp_pair_hooks(layers: Sequence[int], n_layers: int) -> list[str]:
    """``blocks.i.hook_mlp_in`` and ``blocks.i.hook_mlp_out`` for each layer, shallow to deep."""
    return [f"blocks.{i}.hook_mlp_{side}" for i in check_layers(layers, n_layers) for side in ("in", "out")]


def pair_meta(hook: str, hooks: Sequence[str]) -> dict[str, Any]:
    """``{"pair": {...}}`` for one half of an MLP pair harvested together, else ``{}``."""
    m = _MLP.fullmatch(hook)
    if not m:
        return {}
    other = f"blocks.{m.group(1)}.hook_mlp_{'out' if m.group(2) == 'in' else 'in'}"
    if other not in hooks:
        return {}
    role = "input" if m.group(2) == "in" else "target"
    return {"pair": {"role": role, "input": hook if role == "input" else other,
                     "target": other if role == "input" else hook}}


def rows_key(**what: Any) -> str | None:
    """A hash of what decides a store's rows (None when a part cannot be hashed, e.g. a
    position rule given as a function)."""
    try:
        text = json.dumps(what, sort_keys=True)
    except TypeError:
        return None
    return hashlib.sha256(text.encode()).hexdigest()

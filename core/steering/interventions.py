"""Activation interventions used for steering: callables ``fn(act [B, T, d], batch) -> act``.

Each one plugs into ``adapter.intervene(hook, fn)`` and acts only at the positions it is
told to: ``"all"`` real tokens, the ``"last"`` real token of each sequence in the current
forward pass, or an explicit mask. With cached generation every decoding step is a forward
pass of one new token, so ``"last"`` edits the last prompt token and then each generated
token, which is how activation steering usually follows a generation.

SAE-based edits work on the feature delta: the new activation is
``x + (f_new - f) @ W_dec``. That keeps the SAE's reconstruction error (what the dictionary
cannot express is left untouched) and never adds the decoder bias twice.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from typing import Any

import torch

from core.errors import ConfigError, ShapeError

PositionSpec = str | torch.Tensor | Callable[[torch.Tensor, Any], torch.Tensor]


def position_mask(act: torch.Tensor, batch: Any, positions: PositionSpec) -> torch.Tensor:
    """Boolean mask ``[B, T]`` of the positions an intervention edits.

    ``batch`` may be None (some generation loops do not pass one); then every position is
    treated as a real token.
    """
    b, t = act.shape[0], act.shape[1]
    attn = getattr(batch, "attention_mask", None) if batch is not None else None
    if attn is not None and tuple(attn.shape) == (b, t):
        real = attn.to(act.device).bool()
    else:
        real = torch.ones(b, t, dtype=torch.bool, device=act.device)
    if isinstance(positions, str):
        if positions == "all":
            return real
        if positions == "last":
            idx = torch.arange(t, device=act.device).expand(b, t)
            last = torch.where(real, idx, torch.full_like(idx, -1)).max(dim=1).values.clamp_min(0)
            mask = torch.zeros(b, t, dtype=torch.bool, device=act.device)
            mask[torch.arange(b, device=act.device), last] = True
            return mask
        raise ConfigError(f"unknown position selection {positions!r}",
                          fix="use positions='all', 'last', a [B, T] boolean mask or a callable")
    mask = positions(act, batch) if callable(positions) else positions
    mask = torch.as_tensor(mask, device=act.device).bool()
    if tuple(mask.shape) != (b, t):
        raise ShapeError(f"position mask has shape {tuple(mask.shape)}, activations are {(b, t)}",
                         fix="build the mask per forward pass with a callable (act, batch) -> mask")
    return mask & real


class Intervention(ABC):
    """Base class: subclasses return the edited activations of the selected rows ``x [N, d]``."""

    def __init__(self, positions: PositionSpec = "all") -> None:
        self.positions = positions

    @abstractmethod
    def edit(self, x: torch.Tensor) -> torch.Tensor:
        """New activations for the selected rows; ``x`` is ``[N, d]``."""

    def __call__(self, act: torch.Tensor, batch: Any = None) -> torch.Tensor:
        mask = position_mask(act, batch, self.positions)
        if not bool(mask.any()):
            return act
        out = act.clone()
        rows = act[mask]
        out[mask] = self.edit(rows.float()).to(act.dtype)
        return out


def _vector(v: Any, name: str) -> torch.Tensor:
    v = torch.as_tensor(v, dtype=torch.float32).detach()
    if v.dim() != 1:
        raise ShapeError(f"{name} must be one vector [d], got shape {tuple(v.shape)}")
    return v


def _check_d(x: torch.Tensor, d: int, what: str) -> None:
    if x.shape[-1] != d:
        raise ShapeError(f"{what} has dimension {d}, activations have {x.shape[-1]}",
                         fix="use a direction or SAE built for this hook point")


class AddDirection(Intervention):
    """``x + strength * vector``: DiffMean / probe-direction / any steering vector."""

    def __init__(self, vector: Any, strength: float = 1.0, positions: PositionSpec = "all") -> None:
        super().__init__(positions)
        self.vector = _vector(vector, "direction")
        self.strength = float(strength)

    def edit(self, x: torch.Tensor) -> torch.Tensor:
        _check_d(x, self.vector.numel(), "the direction")
        return x + self.strength * self.vector.to(x.device)


class ProjectOut(Intervention):
    """Remove the component of ``x`` along a direction (directional ablation)."""

    def __init__(self, direction: Any, positions: PositionSpec = "all") -> None:
        super().__init__(positions)
        d = _vector(direction, "direction")
        norm = d.norm()
        if float(norm) == 0.0:
            raise ConfigError("cannot project out a zero direction",
                              fix="check that the two groups used to build it differ")
        self.unit = d / norm

    def edit(self, x: torch.Tensor) -> torch.Tensor:
        _check_d(x, self.unit.numel(), "the direction")
        u = self.unit.to(x.device)
        return x - (x @ u)[:, None] * u


class _FeatureEdit(Intervention):
    """Shared plumbing for edits expressed as new values of some SAE features."""

    def __init__(self, sae: torch.nn.Module, features: Sequence[int], positions: PositionSpec) -> None:
        super().__init__(positions)
        self.sae = sae
        self.features = torch.as_tensor(list(features), dtype=torch.long)
        d_sae = int(sae.W_dec.shape[0])
        if self.features.numel() and (int(self.features.min()) < 0 or int(self.features.max()) >= d_sae):
            raise ConfigError(f"feature index out of range for an SAE with {d_sae} latents",
                              fix=f"use feature indices in [0, {d_sae - 1}]")

    def apply_delta(self, x: torch.Tensor, f: torch.Tensor, f_new: torch.Tensor) -> torch.Tensor:
        idx = self.features.to(x.device)
        delta = (f_new - f)[:, idx]
        w = self.sae.W_dec[idx].to(x.device, torch.float32)
        return x + delta @ w

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        _check_d(x, int(self.sae.W_dec.shape[1]), "the SAE")
        with torch.no_grad():
            return self.sae.encode(x.to(self.sae.W_dec.dtype)).float()


class ClampFeatures(_FeatureEdit):
    """Set chosen SAE features to fixed values (Templeton et al.'s clamping), error term kept."""

    def __init__(self, sae: torch.nn.Module, features: Sequence[int], values: Any,
                 positions: PositionSpec = "all") -> None:
        super().__init__(sae, features, positions)
        v = torch.as_tensor(values, dtype=torch.float32)
        self.values = v.expand(self.features.numel()).clone() if v.dim() == 0 else v
        if self.values.shape != (self.features.numel(),):
            raise ShapeError(f"{self.features.numel()} features but {tuple(self.values.shape)} values")

    def edit(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            f = self.encode(x)
            f_new = f.clone()
            f_new[:, self.features.to(x.device)] = self.values.to(x.device)
            return self.apply_delta(x, f, f_new)


class AblateFeatures(_FeatureEdit):
    """Subtract the decoder contributions of chosen features (set them to zero)."""

    def __init__(self, sae: torch.nn.Module, features: Sequence[int], positions: PositionSpec = "all") -> None:
        super().__init__(sae, features, positions)

    def edit(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            f = self.encode(x)
            f_new = f.clone()
            f_new[:, self.features.to(x.device)] = 0.0
            return self.apply_delta(x, f, f_new)


class SpareEdit(_FeatureEdit):
    """SpARE (Zhao et al. 2025): remove one behaviour's features and add the other's.

    ``remove_features`` (e.g. features that mark using the context) lose up to
    ``strength * remove_means`` of their activation, never going below zero;
    ``add_features`` (e.g. features that mark using memory) are raised to at least
    ``strength * add_means``. The group means come from the training prompts of each
    behaviour. ``strength = 0`` leaves the activations unchanged.
    """

    def __init__(self, sae: torch.nn.Module, remove_features: Sequence[int], add_features: Sequence[int],
                 remove_means: Any, add_means: Any, strength: float = 1.0,
                 positions: PositionSpec = "all") -> None:
        remove = list(remove_features)
        add = list(add_features)
        overlap = sorted(set(remove) & set(add))
        if overlap:
            raise ConfigError(f"features {overlap} are both removed and added",
                              fix="select disjoint feature sets for the two behaviours")
        super().__init__(sae, remove + add, positions)
        self.n_remove = len(remove)
        self.remove_means = torch.as_tensor(remove_means, dtype=torch.float32).reshape(-1)
        self.add_means = torch.as_tensor(add_means, dtype=torch.float32).reshape(-1)
        if self.remove_means.numel() != len(remove) or self.add_means.numel() != len(add):
            raise ShapeError(f"{len(remove)} remove / {len(add)} add features but "
                             f"{self.remove_means.numel()} / {self.add_means.numel()} mean values")
        self.strength = float(strength)

    def targets(self, f: torch.Tensor) -> torch.Tensor:
        """New values of the selected features (remove first, then add), ``[N, n_remove + n_add]``."""
        idx = self.features.to(f.device)
        cur = f[:, idx]
        rem = cur[:, : self.n_remove]
        add = cur[:, self.n_remove:]
        new_rem = (rem - self.strength * self.remove_means.to(f.device)).clamp_min(0.0)
        new_add = torch.maximum(add, self.strength * self.add_means.to(f.device))
        return torch.cat([new_rem, new_add], dim=1)

    def edit(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            f = self.encode(x)
            f_new = f.clone()
            f_new[:, self.features.to(x.device)] = self.targets(f)
            return self.apply_delta(x, f, f_new)

"""Snapshots of a dictionary at chosen fractions of its training, for the feature life cycle.

``SnapshotCallback`` rides along any ``train_sae`` run (its ``callbacks`` argument) and saves
the dictionary (fraction 0: as initialised, before the first step), in model units (the input scaling folded in, as the final save does), as a
SAELens folder ``<folder>/frac_<f>`` when training passes each fraction ``f`` of its steps;
a resumed run keeps the snapshots already written. Kept apart from the comparisons because
it imports Lightning, which the compare stage does not need.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.callbacks import Callback


def snapshot_dir(folder: str | Path, fraction: float) -> Path:
    return Path(folder) / f"frac_{float(fraction):.3f}"


class SnapshotCallback(Callback):
    """Save the dictionary at fractions of the run's steps (see the module docstring)."""

    def __init__(self, folder: str | Path, fractions: Sequence[float], metadata: dict[str, Any] | None = None) -> None:
        bad = [f for f in fractions if not 0.0 <= float(f) <= 1.0]
        if bad:
            from core.errors import ConfigError

            raise ConfigError(f"snapshot fractions {bad} are outside [0, 1]", fix="use fractions such as [0, 0.1, 0.5, 1.0]")
        self.folder = Path(folder)
        self.fractions = sorted(float(f) for f in fractions)
        self.metadata = dict(metadata or {})
        self.steps: dict[int, float] = {}

    def on_train_start(self, trainer, pl_module) -> None:
        total = int(trainer.max_steps)
        self.steps = {0 if f == 0 else max(1, round(f * total)): f for f in self.fractions}
        if int(trainer.global_step) == 0 and 0 in self.steps:
            self.save(trainer, pl_module, 0)  # the initialised dictionary, before any step

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.save(trainer, pl_module, int(trainer.global_step))

    def save(self, trainer, pl_module, step: int) -> None:
        fraction = self.steps.get(step)
        if fraction is None or not trainer.is_global_zero:
            return
        out = snapshot_dir(self.folder, fraction)
        if (out / "cfg.json").exists():
            return
        from core.checkpoint import save_sae

        sae = copy.deepcopy(pl_module.sae).float().cpu().eval()
        sae.fold_scaling(pl_module.scale, pl_module.target_scale)
        save_sae(sae, out, metadata={**self.metadata, "snapshot": {"fraction": fraction, "step": step,
                                                                    "tokens": int(pl_module.tokens_seen)}})


def load_snapshots(folder: str | Path) -> dict[float, torch.nn.Module]:
    """Every ``frac_*`` snapshot under ``folder``, by fraction."""
    from core.checkpoint import load_sae

    out = {}
    for path in sorted(Path(folder).glob("frac_*")):
        if (path / "cfg.json").exists():
            out[float(path.name.removeprefix("frac_"))] = load_sae(path)
    return dict(sorted(out.items()))

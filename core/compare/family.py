"""Train (or, when already trained, load) the dictionaries a comparison study needs.

A study compares many dictionaries trained on one store: several seeds, several widths,
one with snapshots through training. Each lives in its own folder (``<out>/sae`` in the
SAELens layout, ``<out>/training.json`` once finished, ``<out>/snapshots/frac_*``), so a
killed study resumes: finished ones load, a half-trained one resumes from Lightning's
``last.ckpt`` inside ``train_sae``.
"""

from __future__ import annotations

import logging
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from core.io import read_json, write_json

log = logging.getLogger(__name__)


def init_seed(name: str) -> int:
    """A seed of its own for each named dictionary. Two dictionaries built from the same seed
    share their initialisation (a 2k-latent SAE's first 1k decoder rows equal a 1k-latent SAE's,
    a Matryoshka's prefix equals a TopK's), which a comparison would then report as shared
    features; ``seed0``/``seed1`` in a name are labels, and this turns each name into its seed."""
    return zlib.crc32(name.encode()) & 0x7FFFFFFF


def train_or_load(sae_cfg: dict[str, Any], datamodule: Any, out_dir: str | Path, *, total_tokens: int,
                  seed: int = 0, trainer_cfg: dict[str, Any] | None = None, snapshots: Sequence[float] = (),
                  metadata: dict[str, Any] | None = None, **schedule: Any) -> tuple[Any, dict[str, Any]]:
    """One dictionary; ``snapshots`` are fractions of training at which to save it too."""
    from core.checkpoint import load_sae

    out_dir = Path(out_dir)
    done = out_dir / "training.json"
    if done.exists() and (out_dir / "sae" / "cfg.json").exists():
        log.info("%s: already trained, loading", out_dir)
        return load_sae(out_dir / "sae"), read_json(done)
    from core.compare.snapshots import SnapshotCallback
    from core.training import train_sae

    callbacks = [SnapshotCallback(out_dir / "snapshots", snapshots, metadata)] if snapshots else []
    sae, summary = train_sae(dict(sae_cfg), datamodule, out_dir, trainer_cfg=dict(trainer_cfg or {}),
                             total_tokens=int(total_tokens), seed=int(seed), metadata=metadata,
                             callbacks=callbacks, **schedule)
    write_json(done, summary)
    return sae, summary

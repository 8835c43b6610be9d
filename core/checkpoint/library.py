"""A library of trained dictionaries under the user cache, keyed by (model, hook, config hash).

A dictionary trained once on broad text serves many audits; the studies that use it must find
it again instead of training their own. The key is the model's name, the hook, and a hash of
everything that decides the weights (architecture and width, corpus, token budget, optimiser,
seed); anything that does not change the weights (evaluation settings, progress bars) stays out
of the spec, so changing it reuses the dictionary. A folder is the SAELens layout written
atomically (a crash leaves no half folder), with the spec and its hash in ``cfg.json``'s
metadata. On a hit the width is checked against the model's layer: a folder that reads a
different width (a changed model under the same name, a hand-copied folder) is refused.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any

from core.cache import cache_dir
from core.errors import ShapeError

LIBRARY = "dictionaries"


def config_hash(spec: dict[str, Any]) -> str:
    """12 hex digits of the sha256 of ``spec`` as canonical JSON (sorted keys, no spaces)."""
    text = json.dumps(spec, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", str(name)) or "_"


def library_folder(model: str, hook: str, spec: dict[str, Any], root: str | Path | None = None) -> Path:
    """``<cache>/dictionaries/<model>/<hook>/<config hash>`` (``root`` replaces the cache's)."""
    base = Path(root) if root is not None else cache_dir(LIBRARY, create=False)
    return base / _safe(model) / _safe(hook) / config_hash(spec)


def load_cached(model: str, hook: str, spec: dict[str, Any], *, d_in: int,
                root: str | Path | None = None) -> Any | None:
    """The cached dictionary for this key, or None; a cached one whose input width is not
    ``d_in`` (the model layer's width) is refused with the folder named."""
    from core.checkpoint.saelens import load_sae

    folder = library_folder(model, hook, spec, root)
    if not (folder / "cfg.json").exists():
        return None
    sae = load_sae(folder, plain=True)
    width = int(sae.cfg.d_in) * int(sae.cfg.n_inputs)
    if width != int(d_in):
        raise ShapeError(f"cached dictionary reads {width}-wide activations but {model} {hook} is {d_in} wide",
                         path=str(folder), fix="delete that folder to train again, or use the study-trained "
                                               "dictionary (dictionary=study)")
    return sae


def save_cached(sae: Any, model: str, hook: str, spec: dict[str, Any], *, metadata: dict[str, Any] | None = None,
                root: str | Path | None = None) -> Path:
    """Write ``sae`` under its key (atomically); its ``cfg.json`` metadata records the key and spec."""
    from core.checkpoint.saelens import save_sae

    folder = library_folder(model, hook, spec, root)
    meta = {**(metadata or {}), "model_name": model, "hook_name": hook,
            "library": {"config_hash": config_hash(spec), "spec": spec}}
    return save_sae(sae, folder, metadata=meta)

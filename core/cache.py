"""Where derived files (converted models, alignments, downloaded tables) are cached.

One place, overridable with ``SPARSESCOPE_CACHE`` so that shared machines and CI can point
it at scratch space.
"""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir(*parts: str, create: bool = True) -> Path:
    """``$SPARSESCOPE_CACHE`` (else ``~/.cache/sparsescope``), joined with ``parts``."""
    base = os.environ.get("SPARSESCOPE_CACHE")
    root = Path(base).expanduser() if base else Path.home() / ".cache" / "sparsescope"
    path = root.joinpath(*parts)
    if create:
        path.mkdir(parents=True, exist_ok=True)
    return path

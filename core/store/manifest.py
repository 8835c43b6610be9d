"""The manifest that describes an activation store, and the names of the files in it.

The manifest is the single source of truth: a shard exists for readers only once the
manifest lists it with its sha256, so a crash between writing a shard and updating the
manifest leaves a stray file that the writer removes on resume.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from core.errors import DataError
from core.io import read_json

FORMAT_VERSION = 1
MANIFEST = "manifest.json"
SAMPLES_TSV = "samples.tsv"
COLUMNS = ("acts", "sample", "position", "token")
DTYPES = ("float32", "bfloat16", "float16")


def shard_name(index: int) -> str:
    return f"shard_{index:05d}.safetensors"


def read_manifest(root: str | Path) -> dict[str, Any]:
    """Read and sanity-check ``root/manifest.json``."""
    path = Path(root) / MANIFEST
    if not path.exists():
        raise DataError("no activation store here (manifest.json is missing)", path=str(path),
                        fix="point to a directory written by `sparsescope stage=harvest`, or run harvest")
    try:
        manifest = read_json(path)
    except ValueError as err:
        raise DataError(f"manifest is not valid JSON ({err})", path=str(path),
                        fix="delete the store directory and re-run harvest") from None
    version = manifest.get("format_version")
    if version != FORMAT_VERSION:
        raise DataError(f"unsupported store format_version {version!r} (this sparsescope reads "
                        f"{FORMAT_VERSION})", path=str(path),
                        fix="re-run harvest with this version of sparsescope")
    for key in ("model", "hook", "d", "dtype", "shards", "n_tokens", "n_samples", "complete"):
        if key not in manifest:
            raise DataError(f"manifest lacks the key {key!r}", path=str(path),
                            fix="delete the store directory and re-run harvest")
    return manifest

"""``samples.tsv``: which sample (id and metadata) each store sample index refers to.

Activation shards carry only integer sample indices; this table maps them back to the
domain's sample ids and metadata so concepts and labels can be joined later.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

import pandas as pd

from core.errors import DataError
from core.io import atomic_path
from core.samples import Sample


def _cell(value) -> str:
    if isinstance(value, str):
        return value
    if value is None:
        return ""
    if isinstance(value, (dict, list, tuple)):
        return json.dumps(value)
    return str(value)


def write_samples_tsv(path: str | Path, samples: Iterable[Sample], *, start: int = 0) -> Path:
    """Write one row per sample (index, id, then every metadata key seen); atomic."""
    rows = []
    for i, s in enumerate(samples, start=start):
        row = {"sample": i, "id": s.id}
        for key, value in s.meta.items():
            if key in ("sample", "id"):
                key = f"meta_{key}"
            row[key] = _cell(value)
        rows.append(row)
    frame = pd.DataFrame(rows, columns=None if rows else ["sample", "id"])
    path = Path(path)
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, sep="\t", index=False)
    return path


def read_samples_tsv(path: str | Path) -> pd.DataFrame:
    """The table indexed by sample index; ``id`` and metadata kept as text except numbers."""
    path = Path(path)
    try:
        frame = pd.read_csv(path, sep="\t", dtype={"id": str}, keep_default_na=False)
    except (OSError, pd.errors.ParserError) as err:
        raise DataError(f"cannot read samples table ({err})", path=str(path),
                        fix="delete it and re-run harvest") from None
    if "sample" not in frame.columns or "id" not in frame.columns:
        raise DataError("samples table lacks the 'sample' or 'id' column", path=str(path),
                        fix="delete it and re-run harvest")
    if frame["sample"].duplicated().any():
        dup = int(frame.loc[frame["sample"].duplicated(), "sample"].iloc[0])
        raise DataError("duplicate sample index", path=str(path), record=f"sample {dup}",
                        fix="delete it and re-run harvest")
    return frame.set_index("sample")

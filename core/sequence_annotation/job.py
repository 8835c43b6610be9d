"""The files of one annotation job: written batch by batch, resumable, merged at the end.

Each batch of sequences leaves its parts in ``.parts/`` (residue rows as Parquet, feature,
span and index rows as TSV) and then a ``.done`` marker, all written atomically, so a killed
job restarts at the first batch without a marker. ``annotate.json`` holds a fingerprint of
the inputs (sequences, dictionaries' weights, model config, options): a second job with
other inputs in the same folder is refused before anything is written. At the end the parts
are streamed into ``residues.parquet`` (and ``residues.tsv``), ``features.tsv``,
``spans.tsv`` and ``html/index.html``; memory holds one part at a time.
"""

from __future__ import annotations

import hashlib
import shutil
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pandas as pd

from core.errors import ConfigError
from core.io import atomic_path, read_json, sha256_file, write_json, write_text

MANIFEST = "annotate.json"
TABLES = ("features", "spans", "index")


def fingerprint(ids_and_texts: Iterable[tuple[str, str]], weights: Iterable[Path], extra: dict[str, Any]) -> str:
    h = hashlib.sha256()
    for sid, text in ids_and_texts:
        h.update(f"{sid}\t{text}\n".encode())
    for path in weights:
        h.update(sha256_file(path).encode())
    h.update(repr(sorted(extra.items())).encode())
    return h.hexdigest()


class AnnotationJob:
    def __init__(self, out_dir: Path, fingerprint: str, n_batches: int) -> None:
        self.out = Path(out_dir)
        self.parts = self.out / ".parts"
        self.fingerprint, self.n_batches = fingerprint, int(n_batches)
        self.manifest = read_json(self.out / MANIFEST) if (self.out / MANIFEST).exists() else None

    def check(self) -> None:
        """Refuse a folder that holds another job's results (nothing is touched)."""
        if self.manifest and self.manifest.get("fingerprint") != self.fingerprint:
            raise ConfigError("this folder holds annotations of other inputs (sequences, run or options differ)",
                              path=str(self.out / MANIFEST),
                              fix="use a new hydra.run.dir, or delete this folder to start over")

    @property
    def complete(self) -> bool:
        return bool(self.manifest and self.manifest.get("complete"))

    def start(self, info: dict[str, Any]) -> None:
        if self.manifest is None:
            self.manifest = {"fingerprint": self.fingerprint, "n_batches": self.n_batches, "complete": False, **info}
            write_json(self.out / MANIFEST, self.manifest)

    def done(self, k: int) -> bool:
        return (self.parts / f"{k:05d}.done").exists()

    def write_batch(self, k: int, residues: pd.DataFrame | None, tables: dict[str, list[dict]]) -> None:
        stem = self.parts / f"{k:05d}"
        if residues is not None and len(residues):
            with atomic_path(f"{stem}.residues.parquet") as tmp:
                residues.to_parquet(tmp, index=False)
        for name in TABLES:
            rows = tables.get(name) or []
            if rows:
                with atomic_path(f"{stem}.{name}.tsv") as tmp:
                    pd.DataFrame(rows).to_csv(tmp, sep="\t", index=False, float_format="%.6g")
        write_text(f"{stem}.done", "")

    def finish(self, *, tsv: bool, summary: dict[str, Any]) -> dict[str, Any]:
        """Merge the parts into the final files, mark the job complete, drop the parts."""
        files = []
        parquet = sorted(self.parts.glob("*.residues.parquet"))
        if parquet:
            files.append(_merge_parquet(parquet, self.out / "residues.parquet"))
            if tsv:
                files.append(_merge_tsv_from_parquet(parquet, self.out / "residues.tsv"))
        for name in ("features", "spans"):
            parts = sorted(self.parts.glob(f"*.{name}.tsv"))
            if parts:
                files.append(_merge_tsv(parts, self.out / f"{name}.tsv"))
        self.manifest = {**(self.manifest or {}), **summary, "complete": True,
                         "files": [str(Path(f).relative_to(self.out)) for f in files]}
        write_json(self.out / MANIFEST, self.manifest)
        shutil.rmtree(self.parts, ignore_errors=True)
        return self.manifest

    def index_rows(self) -> pd.DataFrame:
        parts = sorted(self.parts.glob("*.index.tsv"))
        return pd.concat([pd.read_csv(p, sep="\t", dtype={"sequence_id": str}, keep_default_na=False)
                          for p in parts], ignore_index=True) if parts else pd.DataFrame()


def _schema(parts: list[Path]):
    import pyarrow as pa
    import pyarrow.parquet as pq

    return pa.unify_schemas([pq.read_schema(p) for p in parts], promote_options="permissive")


def _merge_parquet(parts: list[Path], out: Path) -> Path:
    import pyarrow.parquet as pq

    schema = _schema(parts)
    with atomic_path(out) as tmp:
        with pq.ParquetWriter(tmp, schema) as writer:
            for p in parts:
                writer.write_table(pq.read_table(p).cast(schema))
    return out


def _merge_tsv_from_parquet(parts: list[Path], out: Path) -> Path:
    """The residue table as TSV (tens of millions of rows): Arrow's CSV writer, unquoted; a part
    whose strings hold a tab, quote or newline goes through pandas, which quotes them."""
    import io

    import pyarrow as pa
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    schema = _schema(parts)
    options = pacsv.WriteOptions(delimiter="\t", quoting_style="none", include_header=False)
    with atomic_path(out) as tmp, open(tmp, "wb") as fh:
        fh.write(("\t".join(schema.names) + "\n").encode())
        for p in parts:
            table = pq.read_table(p).cast(schema)
            buf = io.BytesIO()
            try:
                pacsv.write_csv(table, buf, write_options=options)
            except pa.ArrowInvalid:
                buf = io.BytesIO(table.to_pandas().to_csv(sep="\t", index=False, header=False).encode())
            fh.write(buf.getvalue())
    return out


def _merge_tsv(parts: list[Path], out: Path) -> Path:
    columns: list[str] = []
    for p in parts:
        head = pd.read_csv(p, sep="\t", nrows=0).columns
        columns += [c for c in head if c not in columns]
    with atomic_path(out) as tmp, open(tmp, "w") as fh:
        for i, p in enumerate(parts):
            frame = pd.read_csv(p, sep="\t", dtype={"sequence_id": str}, keep_default_na=False)
            frame.reindex(columns=columns).to_csv(fh, sep="\t", index=False, header=i == 0)
    return out

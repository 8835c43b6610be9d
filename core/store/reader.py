"""Read an activation store: verify it, then hand out shards one at a time as float32.

Shards may be stored as float32, bfloat16 or float16 to halve disk use; readers always
get float32 so no downstream code has to care. Checksums are verified up front (a
corrupt shard found after an hour of training wastes the hour), and non-finite values
are rejected per shard as it is read.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import load_file

from core.errors import ChecksumError, DataError
from core.io import sha256_file
from core.store.manifest import COLUMNS, MANIFEST, SAMPLES_TSV, read_manifest


def all_finite(x: torch.Tensor) -> bool:
    """True when no NaN/inf is present; a sum propagates both, so the full elementwise
    check (several times slower) runs only when the sum is not finite."""
    if x.numel() == 0 or bool(torch.isfinite(x.sum())):
        return True
    return bool(torch.isfinite(x).all())


class ActivationStore:
    """A finished (or, with ``allow_incomplete``, partial) store written by ``ShardWriter``."""

    def __init__(self, root: str | Path, *, verify: bool = True, allow_incomplete: bool = False) -> None:
        self.root = Path(root)
        self.manifest: dict[str, Any] = read_manifest(self.root)
        if not self.manifest["complete"] and not allow_incomplete:
            raise DataError("this activation store is incomplete (harvest was interrupted)",
                            path=str(self.root / MANIFEST),
                            fix="re-run the same harvest command with the same output directory; "
                                "it resumes after the last complete shard")
        self._check_files(verify)

    @property
    def d(self) -> int:
        return int(self.manifest["d"])

    @property
    def n_tokens(self) -> int:
        return int(self.manifest["n_tokens"])

    @property
    def n_samples(self) -> int:
        return int(self.manifest["n_samples"])

    @property
    def hook(self) -> str:
        return str(self.manifest["hook"])

    @property
    def model(self) -> str:
        return str(self.manifest["model"])

    @property
    def dtype(self) -> str:
        return str(self.manifest["dtype"])

    @property
    def meta(self) -> dict[str, Any]:
        return dict(self.manifest.get("meta") or {})

    @property
    def shard_paths(self) -> list[Path]:
        return [self.root / e["file"] for e in self.manifest["shards"]]

    @property
    def shard_sizes(self) -> list[int]:
        return [int(e["n_tokens"]) for e in self.manifest["shards"]]

    def __len__(self) -> int:
        return self.n_tokens

    def __repr__(self) -> str:
        return (f"ActivationStore({str(self.root)!r}, model={self.model!r}, hook={self.hook!r}, "
                f"d={self.d}, n_tokens={self.n_tokens}, shards={len(self.shard_paths)})")

    def verify(self) -> None:
        """Compare every shard's sha256 with the manifest; raise ChecksumError on the first mismatch."""
        for entry, path in zip(self.manifest["shards"], self.shard_paths, strict=True):
            found = sha256_file(path)
            if found != entry["sha256"]:
                raise ChecksumError(
                    f"shard checksum mismatch (manifest sha256 {entry['sha256'][:12]}..., file "
                    f"{found[:12]}...): the file is corrupt or was modified", path=str(path),
                    fix=f"delete {path} and re-run the same harvest command with the same output "
                        "directory; it resumes and rewrites that shard")

    def read_shard(self, index: int, columns: Sequence[str] | None = None) -> dict[str, torch.Tensor]:
        """One shard as a dict of tensors; ``acts`` is float32 and checked for NaN/inf."""
        columns = tuple(columns or COLUMNS)
        unknown = sorted(set(columns) - set(COLUMNS))
        if unknown:
            raise DataError(f"unknown store columns {unknown}", path=str(self.root),
                            fix=f"use some of {list(COLUMNS)}")
        path = self.shard_paths[index]
        try:
            if set(columns) == set(COLUMNS):
                raw = load_file(str(path))
            else:
                with safe_open(str(path), framework="pt") as fh:
                    raw = {c: fh.get_tensor(c) for c in columns}
        except Exception as err:  # safetensors raises several types for truncated files
            raise DataError(f"cannot read shard ({err})", path=str(path),
                            fix=f"delete {path} and re-run the same harvest command; it resumes") from None
        out = {c: raw[c] for c in columns}
        if "acts" in out:
            acts = out["acts"].to(torch.float32)
            if acts.dim() != 2 or acts.shape[1] != self.d:
                raise DataError(f"activations have shape {tuple(acts.shape)}, manifest says d={self.d}",
                                path=str(path), fix=f"delete {path} and re-run harvest")
            if not all_finite(acts):
                row = int((~torch.isfinite(acts).all(dim=1)).nonzero()[0])
                raise DataError(f"activations contain NaN or inf (first at row {row})", path=str(path),
                                record=f"row {row}",
                                fix=f"delete {path} and re-run harvest; if it recurs, check the model's "
                                    "numerics or store as float32/bfloat16 instead of float16")
            out["acts"] = acts
        return out

    def shard_offsets(self) -> list[int]:
        """Global index of each shard's first token, plus the total at the end."""
        offsets = [0]
        for n in self.shard_sizes:
            offsets.append(offsets[-1] + n)
        return offsets

    def read_rows(self, start: int, stop: int, columns: Sequence[str] | None = None) -> dict[str, torch.Tensor]:
        """Rows ``start:stop`` of the whole store, read from the shards that hold them."""
        offsets = self.shard_offsets()
        if not 0 <= start <= stop <= offsets[-1]:
            raise DataError(f"rows {start}:{stop} are outside the store's {offsets[-1]} tokens",
                            path=str(self.root), fix="check that stacked stores hold the same tokens")
        parts: list[dict[str, torch.Tensor]] = []
        for i in range(len(self.shard_paths)):
            lo, hi = offsets[i], offsets[i + 1]
            if hi <= start or lo >= stop:
                continue
            shard = self.read_shard(i, columns)
            parts.append({c: t[max(start, lo) - lo: min(stop, hi) - lo] for c, t in shard.items()})
        if not parts:
            return {c: t[:0] for c, t in self.read_shard(0, columns).items()} if self.shard_paths else {}
        return {c: torch.cat([p[c] for p in parts]) for c in parts[0]}

    def iter_shards(self, columns: Sequence[str] | None = None,
                    indices: Iterable[int] | None = None) -> Iterator[dict[str, torch.Tensor]]:
        """Shards in order (or in the order of ``indices``), one in memory at a time."""
        for i in (range(len(self.shard_paths)) if indices is None else indices):
            yield self.read_shard(i, columns)

    def load(self, columns: Sequence[str] = ("acts",)) -> dict[str, torch.Tensor]:
        """The whole store concatenated; only for small stores (tests, probes, toy models)."""
        parts: dict[str, list[torch.Tensor]] = {c: [] for c in columns}
        for shard in self.iter_shards(columns):
            for c in columns:
                parts[c].append(shard[c])
        empty = {"acts": torch.empty(0, self.d)}
        return {c: torch.cat(p) if p else empty.get(c, torch.empty(0, dtype=torch.int64))
                for c, p in parts.items()}

    def samples(self):
        """``samples.tsv`` as a DataFrame indexed by sample index, or None when harvest wrote none."""
        from core.store.samples_tsv import read_samples_tsv

        path = self.root / SAMPLES_TSV
        return read_samples_tsv(path) if path.exists() else None

    def _check_files(self, verify: bool) -> None:
        for path in self.shard_paths:
            if not path.exists():
                raise DataError("a shard listed in the manifest is missing", path=str(path),
                                fix="re-run the same harvest command with the same output directory; "
                                    "it resumes and rewrites the missing shard")
        if verify:
            self.verify()

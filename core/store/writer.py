"""Write activations into a sharded safetensors store, atomically and resumably.

Harvesting a large model over many samples takes hours; a crash must cost at most one
shard. Shards are written to a temporary file and renamed, then the manifest is
rewritten (also atomically) to list the new shard with its sha256 and the number of
samples complete so far. Shards flush only at ``add`` boundaries, which the caller places
at sample boundaries, so ``samples_done`` after a resume is exact and no token is written
twice.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from core.errors import ConfigError, DataError, ShapeError
from core.io import atomic_path, sha256_file, write_json
from core.store.manifest import DTYPES, FORMAT_VERSION, MANIFEST, read_manifest, shard_name
from core.store.reader import all_finite

log = logging.getLogger(__name__)


class ShardWriter:
    """Append activations (with sample index, position and token id) to a store at ``root``.

    Re-opening a root whose manifest is incomplete continues after the last committed
    shard; ``samples_done`` tells the caller how many samples to skip. Shards that are
    missing or fail their checksum are dropped together with every later shard, so a
    user can delete a corrupt shard and re-run harvest to rebuild it.
    """

    def __init__(self, root: str | Path, *, model: str, hook: str, d: int, dtype: str = "float32",
                 shard_tokens: int = 65536, meta: dict[str, Any] | None = None,
                 verify_on_resume: bool = True) -> None:
        if dtype not in DTYPES:
            raise ConfigError(f"unknown store dtype {dtype!r}", fix=f"use one of {list(DTYPES)}")
        if int(shard_tokens) <= 0:
            raise ConfigError(f"shard_tokens must be positive, got {shard_tokens}",
                              fix="set shard_tokens to e.g. 65536")
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.d = int(d)
        self.dtype = dtype
        self.torch_dtype = getattr(torch, dtype)
        self.shard_tokens = int(shard_tokens)
        self._pending: list[tuple[torch.Tensor, ...]] = []
        self._pending_tokens = 0
        self._pending_samples_done: int | None = None
        if (self.root / MANIFEST).exists():
            self.manifest = read_manifest(self.root)
            self._check_same_source(model=model, hook=hook, d=self.d, dtype=dtype)
            self._drop_bad_shards(verify_on_resume)
        else:
            self.manifest = {
                "format_version": FORMAT_VERSION, "model": model, "hook": hook, "d": self.d,
                "dtype": dtype, "shard_tokens": self.shard_tokens, "n_tokens": 0, "n_samples": 0,
                "n_shards": 0, "complete": False, "columns": {"acts": [self.d], "sample": [],
                                                               "position": [], "token": []},
                "meta": dict(meta or {}), "shards": [],
            }
            self._write_manifest()
        self._remove_strays()

    @property
    def samples_done(self) -> int:
        """Samples fully committed to disk (pending, unflushed samples are not counted)."""
        return int(self.manifest["n_samples"])

    @property
    def complete(self) -> bool:
        return bool(self.manifest["complete"])

    @property
    def n_tokens(self) -> int:
        return int(self.manifest["n_tokens"])

    def add(self, acts: torch.Tensor, sample: torch.Tensor, position: torch.Tensor,
            token: torch.Tensor, *, samples_done: int) -> None:
        """Queue ``n`` token rows; ``samples_done`` is the total of samples complete after them."""
        if self.complete:
            raise DataError("this activation store is already complete", path=str(self.root / MANIFEST),
                            fix="write to a new directory, or delete this one to harvest again")
        acts = torch.as_tensor(acts).detach()
        if acts.dim() != 2 or acts.shape[1] != self.d:
            raise ShapeError(f"activations have shape {tuple(acts.shape)}, expected [n, {self.d}]",
                             path=str(self.root), fix="pass a [tokens, d] tensor with the store's d")
        n = acts.shape[0]
        cols = [torch.as_tensor(c).detach().reshape(-1).to("cpu", torch.int64)
                for c in (sample, position, token)]
        for name, col in zip(("sample", "position", "token"), cols, strict=True):
            if col.shape[0] != n:
                raise ShapeError(f"column {name} has {col.shape[0]} rows, activations have {n}",
                                 path=str(self.root), fix="pass one sample/position/token per row")
        acts = acts.to("cpu", self.torch_dtype).contiguous()
        if n and not all_finite(acts):
            bad = int(cols[0][~torch.isfinite(acts).all(dim=1)][0])
            raise DataError(f"activations contain NaN or inf (first in sample {bad}, stored as "
                            f"{self.dtype})", path=str(self.root), record=f"sample {bad}",
                            fix="check the model's numerics (use float32 or bfloat16 storage if "
                                "float16 overflows)")
        if self._pending_samples_done is not None and samples_done < self._pending_samples_done:
            raise DataError(f"samples_done went backwards ({samples_done} < {self._pending_samples_done})",
                            path=str(self.root), fix="pass the running total of complete samples")
        if n:
            self._pending.append((acts, *cols))
            self._pending_tokens += n
        self._pending_samples_done = int(samples_done)
        if self._pending_tokens >= self.shard_tokens:
            self.flush()

    def flush(self) -> None:
        """Commit pending rows as one shard (also when there are none but samples advanced)."""
        if self._pending_samples_done is None:
            return
        if self._pending_tokens:
            parts = list(zip(*self._pending, strict=True))
            tensors = {name: torch.cat(p) for name, p in
                       zip(("acts", "sample", "position", "token"), parts, strict=True)}
            index = len(self.manifest["shards"])
            path = self.root / shard_name(index)
            with atomic_path(path) as tmp:
                save_file(tensors, str(tmp), metadata={"hook": str(self.manifest["hook"]),
                                                       "dtype": self.dtype})
            self.manifest["shards"].append({
                "file": path.name, "n_tokens": self._pending_tokens,
                "sha256": sha256_file(path), "samples_done": self._pending_samples_done,
            })
            self.manifest["n_tokens"] += self._pending_tokens
            self.manifest["n_shards"] = len(self.manifest["shards"])
        self.manifest["n_samples"] = self._pending_samples_done
        self._write_manifest()
        self._pending, self._pending_tokens = [], 0
        self._pending_samples_done = None

    def close(self) -> dict[str, Any]:
        """Flush what is left and mark the store complete; returns the manifest."""
        if not self.complete:
            self.flush()
            self.manifest["complete"] = True
            self._write_manifest()
        return self.manifest

    def __enter__(self) -> ShardWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        # On an error keep the committed shards (resume picks up there) but do not mark complete.
        if exc_type is None:
            self.close()

    def _write_manifest(self) -> None:
        write_json(self.root / MANIFEST, self.manifest)

    def _check_same_source(self, **expected: Any) -> None:
        for key, value in expected.items():
            if self.manifest.get(key) != value:
                raise ConfigError(f"cannot resume: the store has {key}={self.manifest.get(key)!r} but "
                                  f"this harvest asks for {value!r}", path=str(self.root / MANIFEST),
                                  fix="use a new output directory, or delete this store to start over")

    def _drop_bad_shards(self, verify: bool) -> None:
        """Keep the longest prefix of shards that exist and match their checksum."""
        shards = self.manifest["shards"]
        keep = 0
        for entry in shards:
            path = self.root / entry["file"]
            if not path.exists() or (verify and sha256_file(path) != entry["sha256"]):
                log.warning("%s is missing or corrupt: harvest resumes from the shard before it", path)
                break
            keep += 1
        if keep == len(shards):
            return
        for entry in shards[keep:]:
            (self.root / entry["file"]).unlink(missing_ok=True)
        kept = shards[:keep]
        self.manifest["shards"] = kept
        self.manifest["n_shards"] = keep
        self.manifest["n_tokens"] = sum(int(e["n_tokens"]) for e in kept)
        self.manifest["n_samples"] = int(kept[-1]["samples_done"]) if kept else 0
        self.manifest["complete"] = False
        self._write_manifest()

    def _remove_strays(self) -> None:
        """Delete temporary files and shards a crash left outside the manifest."""
        listed = {e["file"] for e in self.manifest["shards"]}
        for path in self.root.iterdir():
            stray_tmp = path.name.startswith(".") and path.name.endswith(".tmp")
            stray_shard = path.name.startswith("shard_") and path.name not in listed
            if path.is_file() and (stray_tmp or stray_shard):
                log.info("removing %s left by an interrupted harvest", path)
                path.unlink()

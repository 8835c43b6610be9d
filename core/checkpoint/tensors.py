"""Shared checks for every checkpoint format: read files safely, then load tensors into a
Dictionary only after every name and shape has been checked against what the config implies.

A wrong shape deep inside ``load_state_dict`` gives a torch traceback that names neither the
file nor the fix; these checks turn it into one ``ShapeError`` that does.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import torch
from safetensors.torch import load_file

from core.dictionaries.base import Dictionary
from core.errors import DataError, ShapeError


def read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    if not path.exists():
        raise DataError("weights file is missing", path=str(path),
                        fix="copy the whole checkpoint folder, weights included")
    try:
        return load_file(str(path))
    except Exception as err:  # safetensors raises several types for truncated files
        raise DataError(f"cannot read weights ({err})", path=str(path),
                        fix="the file is truncated or not safetensors: copy or re-save the checkpoint") from None


def read_torch_state(path: Path) -> dict[str, torch.Tensor]:
    """A ``torch.save``d state dict, loaded without executing pickled code."""
    if not path.exists():
        raise DataError("weights file is missing", path=str(path),
                        fix="copy the whole checkpoint folder, weights included")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise DataError(f"cannot read torch state dict ({err})", path=str(path),
                        fix="the file is truncated or not a torch state dict: copy or re-save it") from None
    if not isinstance(state, dict):
        raise DataError(f"expected a state dict, found {type(state).__name__}", path=str(path),
                        fix="save the dictionary's state_dict(), not the module")
    return state


def expect_shapes(tensors: dict[str, torch.Tensor], expected: dict[str, tuple[int, ...]], *,
                  path: Path, implied_by: str, optional: Iterable[str] = ()) -> None:
    """Raise ShapeError/DataError unless every expected tensor is present with its shape."""
    optional = set(optional)
    for name, shape in expected.items():
        if name not in tensors:
            if name in optional:
                continue
            raise DataError(f"tensor {name!r} is missing (found {sorted(tensors)})", path=str(path),
                            fix=f"the weights do not match {implied_by}; re-save or re-export the checkpoint")
        found = tuple(tensors[name].shape)
        if found != tuple(shape):
            raise ShapeError(f"tensor {name!r} has shape {list(found)}, expected {list(shape)} from "
                             f"{implied_by}", path=str(path),
                             fix=f"the weights and {implied_by} come from different dictionaries: "
                                 "re-save the checkpoint, or correct the config to the weights' sizes")


def assign(sae: Dictionary, tensors: dict[str, torch.Tensor], *, path: Path, implied_by: str,
           optional: Iterable[str] = ()) -> Dictionary:
    """Copy ``tensors`` into ``sae`` after checking names and shapes against its state dict."""
    own = sae.state_dict()
    expect_shapes(tensors, {n: tuple(t.shape) for n, t in own.items()}, path=path,
                  implied_by=implied_by, optional=optional)
    unknown = sorted(set(tensors) - set(own))
    if unknown:
        raise DataError(f"unexpected tensors {unknown} for architecture {sae.architecture!r}",
                        path=str(path), fix=f"check the architecture in {implied_by}")
    with torch.no_grad():
        for name, value in own.items():
            if name in tensors:
                value.copy_(tensors[name].to(value.dtype))
    return sae

"""What every dictionary folder format shares: its ``cfg.json`` reads with a clear error, and a
folder of the wrong kind (a transcoder where an SAE is
expected, a crosscoder where one hook's SAE is, or the reverse) is refused with one message naming the folder and the fix."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from core.errors import ConfigError, DataError
from core.io import read_json

CFG = "cfg.json"
KINDS = ("sae", "transcoder", "clt", "crosscoder")
_LABEL = {"sae": "an SAE", "transcoder": "a transcoder", "clt": "a cross-layer transcoder",
          "crosscoder": "a crosscoder"}


def read_cfg(folder: Path) -> dict[str, Any]:
    path = folder / CFG
    if not path.exists():
        raise DataError("cfg.json is missing: not a SAELens/sparsescope dictionary folder", path=str(folder),
                        fix="pass the folder that holds cfg.json and sae_weights.safetensors")
    try:
        return read_json(path)
    except ValueError as err:
        raise DataError(f"cfg.json is not valid JSON ({err})", path=str(path),
                        fix="re-save the dictionary") from None


def describe(sae: Any) -> str:
    """``transcoder blocks.3.hook_mlp_in -> blocks.3.hook_mlp_out`` and the like, from its metadata."""
    meta = dict(getattr(sae, "metadata", None) or {})
    if sae.kind == "crosscoder":
        names = [str(s.get("name")) for s in meta.get("sources") or []] or \
            [f"input{i}" for i in range(sae.cfg.n_inputs)]
        return f"a crosscoder over {sae.cfg.n_inputs} sources {names} ({sae.cfg.architecture}, d_in={sae.cfg.in_features})"
    src, dst = meta.get("hook_name"), meta.get("hook_name_out")
    if isinstance(src, list):
        src, dst = f"{src[0]}..{src[-1]}", f"{dst[0]}..{dst[-1]}" if isinstance(dst, list) else dst
    where = f" ({src} -> {dst})" if dst else (f" ({src})" if src else "")
    return f"{_LABEL.get(sae.kind, sae.kind)}{where}"


_FIX = {
    "sae": "pass an SAE folder here (one trained without data.targets), or use the transcoder's own "
           "evaluation: data.targets=<the store of its output hook>",
    "transcoder": "pass a transcoder folder (trained with data.targets=<output store>); an SAE reconstructs its "
                  "own input and cannot stand in for an MLP",
    "clt": "pass a cross-layer transcoder folder (sae.architecture=clt_*); per-layer dictionaries splice one "
           "layer each",
    "crosscoder": "pass a crosscoder folder (sae.architecture=crosscoder_*) with all its aligned stores",
}


def check_kind(sae: Any, expect: str | None, folder: Path) -> None:
    """Refuse a dictionary whose kind (``sae``, ``transcoder``, ``clt``) is not ``expect``."""
    if expect is None:
        return
    if expect not in KINDS:
        raise ConfigError(f"unknown dictionary kind {expect!r}", fix=f"use one of {list(KINDS)}")
    if sae.kind != expect:
        fix = _FIX[expect]
        if sae.kind == "crosscoder":
            fix = ("use a single-hook SAE here, or read the crosscoder with all its aligned stores "
                   "(stage=diff, or data.root=[...] in its source order)")
        raise ConfigError(f"this folder holds {describe(sae)}, not {_LABEL[expect]}",
                          path=str(folder), fix=fix)

"""Import folders written by EleutherAI's sparsify (``cfg.json`` + ``sae.safetensors``).

sparsify saves one folder per hookpoint with ``encoder.weight [d_sae, d_in]``,
``encoder.bias [d_sae]``, ``W_dec [d_sae, d_in]``, ``b_dec [d_in]`` and, with a skip
connection, ``W_skip [d_in, d_in]`` applied as ``x @ W_skip.T``. Its encode is
``topk(relu(x - b_dec) @ encoder.weight.T + encoder.bias)`` (without subtracting b_dec when
transcoding), which is our ``topk`` architecture.
"""

from __future__ import annotations

from pathlib import Path

from core.checkpoint.tensors import assign, expect_shapes, read_safetensors
from core.dictionaries.base import Dictionary, DictionaryConfig, build_dictionary
from core.errors import ConfigError, DataError
from core.io import read_json


def import_sparsify(folder: str | Path) -> Dictionary:
    """Load one sparsify hookpoint folder as a sparsescope ``topk`` Dictionary."""
    folder = Path(folder)
    cfg_path, weights = folder / "cfg.json", folder / "sae.safetensors"
    if not cfg_path.exists():
        inner = sorted(p.parent.name for p in folder.glob("*/cfg.json"))
        hint = f"pass one hookpoint folder, e.g. {folder / inner[0]}" if inner else \
            "pass a folder holding cfg.json and sae.safetensors"
        raise DataError("cfg.json is missing: not a sparsify hookpoint folder", path=str(folder), fix=hint)
    try:
        cfg = dict(read_json(cfg_path))
    except (ValueError, TypeError) as err:
        raise DataError(f"cfg.json is not valid JSON ({err})", path=str(cfg_path),
                        fix="re-export the sparse coder") from None
    activation = cfg.get("activation", "topk")
    if activation != "topk":
        raise ConfigError(f"sparsify activation {activation!r} has no sparsescope equivalent",
                          path=str(cfg_path), fix="only activation=topk sparse coders can be imported")
    try:
        d_in = int(cfg["d_in"])
    except KeyError:
        raise DataError("cfg.json lacks d_in", path=str(cfg_path), fix="add \"d_in\" to cfg.json") from None
    d_sae = int(cfg.get("num_latents") or 0) or d_in * int(cfg.get("expansion_factor", 32))
    k = int(cfg.get("k", 32))
    transcode, skip = bool(cfg.get("transcode", False)), bool(cfg.get("skip_connection", False))
    state = read_safetensors(weights)
    implied = f"{cfg_path} (d_in={d_in}, num_latents={d_sae})"
    expected = {"encoder.weight": (d_sae, d_in), "encoder.bias": (d_sae,), "W_dec": (d_sae, d_in),
                "b_dec": (d_in,)}
    if skip:
        expected["W_skip"] = (d_in, d_in)
    expect_shapes(state, expected, path=weights, implied_by=implied)
    dc = DictionaryConfig("topk", d_in=d_in, d_sae=d_sae, k=k, skip_connection=skip, transcoder=transcode,
                          apply_b_dec_to_input=not transcode)
    sae = build_dictionary(dc)
    tensors = {"W_enc": state["encoder.weight"].T.contiguous(), "b_enc": state["encoder.bias"],
               "W_dec": state["W_dec"], "b_dec": state["b_dec"]}
    if skip:
        tensors["W_skip"] = state["W_skip"].T.contiguous()
    assign(sae, tensors, path=weights, implied_by=implied)
    sae.metadata = {"source_format": "sparsify", "hook_name": folder.name, "transcode": transcode}
    return sae.eval()

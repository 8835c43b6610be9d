"""Save and load dictionaries in the SAELens inference layout.

A folder holds ``cfg.json`` and ``sae_weights.safetensors`` (``W_enc [d_in, d_sae]``,
``W_dec [d_sae, d_in]``, ``b_enc``, ``b_dec``, ``threshold`` for JumpReLU-style inference,
``b_gate``/``b_mag``/``r_mag`` for gated, ``W_skip [d_out, d_in]`` for skip transcoders), so
``sae_lens.SAE.load_from_disk(folder)`` loads it. cfg.json keys follow SAELens 6
(``architecture``, ``d_in``, ``d_sae``, ``dtype``, ``device``, ``apply_b_dec_to_input``,
``normalize_activations``, ``k`` for topk, ``d_out`` for transcoders, a ``metadata`` block
with ``hook_name``/``model_name``). BatchTopK and Matryoshka infer with one learned
threshold, so SAELens reads them as ``jumprelu``. Tensors SAELens has no name for (e.g. a
BatchTopK threshold's update count) go to ``sparsescope_extra.safetensors``, and a
``sparsescope`` block in cfg.json keeps our exact config so ``load_sae`` rebuilds the very
same Dictionary. Crosscoders are written flattened (``d_in`` = the sum of their sources'
widths) with ``n_inputs``/``n_outputs``, ``source_widths``, ``sources`` (name, model, hook)
and the stores' ``alignment`` beside; SAELens has no crosscoder architecture, so their
``architecture`` names ours and ``load_sae(folder, plain=True)`` refuses them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from core.checkpoint.folder import CFG, check_kind, read_cfg
from core.checkpoint.tensors import assign, read_safetensors
from core.dictionaries.base import Dictionary, DictionaryConfig, build_dictionary
from core.errors import ConfigError, DataError, ShapeError
from core.io import atomic_dir, write_json

WEIGHTS = "sae_weights.safetensors"
EXTRA = "sparsescope_extra.safetensors"
FORMAT_VERSION = 1
# The SAELens cfg format this layout follows (6.x; older versions trigger its legacy renames).
SAE_LENS_FORMAT = "6.0.0"

# Tensors each SAELens inference architecture loads (strictly).
SAE_LENS_TENSORS: dict[str, set[str]] = {
    "standard": {"W_enc", "W_dec", "b_enc", "b_dec"},
    "topk": {"W_enc", "W_dec", "b_enc", "b_dec"},
    "jumprelu": {"W_enc", "W_dec", "b_enc", "b_dec", "threshold"},
    "gated": {"W_enc", "W_dec", "b_dec", "b_gate", "b_mag", "r_mag"},
    "transcoder": {"W_enc", "W_dec", "b_enc", "b_dec"},
    "skip_transcoder": {"W_enc", "W_dec", "b_enc", "b_dec", "W_skip"},
    "jumprelu_transcoder": {"W_enc", "W_dec", "b_enc", "b_dec", "threshold"},
    "jumprelu_skip_transcoder": {"W_enc", "W_dec", "b_enc", "b_dec", "threshold", "W_skip"},
}

# Our architecture -> the SAELens architecture with the same inference encode.
_SAE = {"relu": "standard", "topk": "topk", "jumprelu": "jumprelu", "batchtopk": "jumprelu",
        "matryoshka": "jumprelu", "gated": "gated"}
_TRANSCODER = {("relu", False): "transcoder", ("relu", True): "skip_transcoder",
               ("jumprelu", False): "jumprelu_transcoder", ("jumprelu", True): "jumprelu_skip_transcoder",
               ("batchtopk", False): "jumprelu_transcoder", ("batchtopk", True): "jumprelu_skip_transcoder",
               ("matryoshka", False): "jumprelu_transcoder", ("matryoshka", True): "jumprelu_skip_transcoder"}

# SAELens architecture -> (our architecture, is transcoder, has skip) for folders SAELens wrote.
_FROM_SAE_LENS = {"standard": ("relu", False, False), "topk": ("topk", False, False),
                  "jumprelu": ("jumprelu", False, False), "gated": ("gated", False, False),
                  "transcoder": ("relu", True, False), "skip_transcoder": ("relu", True, True),
                  "jumprelu_transcoder": ("jumprelu", True, False),
                  "jumprelu_skip_transcoder": ("jumprelu", True, True)}


def sae_lens_architecture(sae: Dictionary) -> str | None:
    """The SAELens architecture that encodes like ``sae``, or None when SAELens has none."""
    cfg = sae.cfg
    if not cfg.is_transcoder and not cfg.skip_connection:
        return _SAE.get(sae.architecture)
    return _TRANSCODER.get((sae.architecture, bool(cfg.skip_connection)))


def _to_sae_lens_layout(name: str, tensor: torch.Tensor) -> torch.Tensor:
    # Ours: x @ W_skip with W_skip [in, out]; SAELens: x @ W_skip.T with W_skip [out, in].
    return tensor.T.contiguous() if name == "W_skip" else tensor.contiguous()


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def sae_lens_cfg(sae: Dictionary, metadata: dict[str, Any] | None = None) -> dict[str, Any]:
    """cfg.json content: SAELens keys, provenance metadata and the ``sparsescope`` block."""
    cfg = sae.cfg
    arch = sae_lens_architecture(sae)
    meta = {**dict(getattr(sae, "metadata", None) or {}), **dict(metadata or {})}
    name = sae.architecture + ("_transcoder" if cfg.is_transcoder else "")
    out: dict[str, Any] = {
        "architecture": arch or name,
        "d_in": cfg.in_features,
        "d_sae": cfg.d_sae,
        "dtype": _dtype_name(sae.W_enc.dtype),
        "device": "cpu",
        "apply_b_dec_to_input": bool(sae.subtracts_b_dec),
        "normalize_activations": "none",
        "reshape_activations": "none",
    }
    if cfg.is_transcoder or cfg.skip_connection:
        out["d_out"] = cfg.out_features
        out["hook_name_out"] = meta.get("hook_name_out")
    if arch == "topk":
        out.update({"k": int(cfg.k), "rescale_acts_by_decoder_norm": False})
    if cfg.n_inputs > 1:
        out.update(crosscoder_block(sae, meta))
    out["model_name"] = meta.get("model_name")
    out["hook_name"] = meta.get("hook_name")
    out["metadata"] = {**meta, "sae_lens_version": SAE_LENS_FORMAT}
    out["sparsescope"] = {"format_version": FORMAT_VERSION, "architecture": sae.architecture,
                          "dictionary": cfg.to_dict(), "sae_lens_loadable": arch is not None}
    return out


def crosscoder_block(sae: Dictionary, meta: dict[str, Any]) -> dict[str, Any]:
    """cfg.json keys of a dictionary with several sources: how many it reads and writes, their
    widths, their names (with model and hook, from ``metadata["sources"]``) and the alignment
    record of the stores it was trained on (``metadata["alignment"]``)."""
    cfg = sae.cfg
    widths = list(cfg.source_widths or [cfg.d_in] * cfg.n_inputs)
    sources = meta.get("sources") or [{"name": f"input{i}", "d": w} for i, w in enumerate(widths)]
    return {"n_inputs": cfg.n_inputs, "n_outputs": cfg.n_outputs, "source_widths": widths,
            "sources": sources, "alignment": meta.get("alignment")}


def source_names(folder_or_cfg: str | Path | dict[str, Any]) -> list[str]:
    """The source names a crosscoder folder's cfg.json lists (empty for a plain SAE)."""
    cfg = folder_or_cfg if isinstance(folder_or_cfg, dict) else read_cfg(Path(folder_or_cfg))
    return [str(s.get("name")) for s in cfg.get("sources") or []]


def save_sae(sae: Dictionary, folder: str | Path, *, metadata: dict[str, Any] | None = None) -> Path:
    """Write ``sae`` as a SAELens folder; the old folder (if any) is replaced only once complete.

    ``metadata`` (e.g. ``model_name``, ``hook_name``, training summary) lands in cfg.json's
    ``metadata`` block, which SAELens exposes as ``sae.cfg.metadata``.
    """
    folder = Path(folder)
    if sae.kind == "clt":
        from core.checkpoint.clt import save_clt

        return save_clt(sae, folder, metadata=metadata)
    arch = sae_lens_architecture(sae)
    allowed = SAE_LENS_TENSORS.get(arch or "", None)
    state = {n: t.detach().cpu() for n, t in sae.state_dict().items()}
    main = {n: _to_sae_lens_layout(n, t) for n, t in state.items() if allowed is None or n in allowed}
    extra = {n: t.contiguous() for n, t in state.items() if n not in main}
    cfg = sae_lens_cfg(sae, metadata)
    if extra:
        cfg["sparsescope"]["extra_tensors"] = sorted(extra)
    with atomic_dir(folder) as tmp:
        save_file(main, str(tmp / WEIGHTS))
        if extra:
            save_file(extra, str(tmp / EXTRA))
        write_json(tmp / CFG, cfg)
    return folder


def _config_from_block(block: dict[str, Any], path: Path) -> DictionaryConfig:
    try:
        return DictionaryConfig.from_dict(dict(block["dictionary"]))
    except (ConfigError, KeyError, TypeError) as err:
        raise ConfigError(f"the sparsescope block cannot be read ({err})", path=str(path),
                          fix="re-save the dictionary with this version of sparsescope") from None


def _config_from_sae_lens(cfg: dict[str, Any], path: Path) -> tuple[DictionaryConfig, bool]:
    """Our config for a folder SAELens (or another tool) wrote; returns it and whether it has a skip."""
    arch = cfg.get("architecture") or "standard"
    if cfg.get("activation_fn") == "topk" or cfg.get("activation_fn_str") == "topk":
        arch = "topk"
    if arch not in _FROM_SAE_LENS:
        raise ConfigError(f"SAELens architecture {arch!r} has no sparsescope equivalent", path=str(path),
                          fix=f"supported: {sorted(_FROM_SAE_LENS)}")
    norm = cfg.get("normalize_activations", "none") or "none"
    if norm != "none":
        raise ConfigError(f"normalize_activations={norm!r} is not supported on import", path=str(path),
                          fix="fold the normalisation into the weights (SAELens: fold_activation_norm_scaling_factor) "
                              "and save again")
    if cfg.get("rescale_acts_by_decoder_norm"):
        raise ConfigError("rescale_acts_by_decoder_norm=true is not supported on import", path=str(path),
                          fix="fold W_dec norms into the encoder in SAELens (fold_W_dec_norm) and save again")
    ours, transcoder, skip = _FROM_SAE_LENS[arch]
    k = cfg.get("k") or (cfg.get("activation_fn_kwargs") or {}).get("k")
    try:
        dc = DictionaryConfig(architecture=ours, d_in=int(cfg["d_in"]), d_sae=int(cfg["d_sae"]),
                              d_out=int(cfg["d_out"]) if transcoder else None,
                              k=int(k) if ours == "topk" else None, skip_connection=skip, transcoder=transcoder,
                              apply_b_dec_to_input=bool(cfg.get("apply_b_dec_to_input", True)))
    except KeyError as err:
        raise DataError(f"cfg.json lacks the key {err}", path=str(path),
                        fix="add d_in and d_sae (and d_out for transcoders) to cfg.json") from None
    return dc, skip


def load_sae(folder: str | Path, *, expect: str | None = None, plain: bool = False) -> Dictionary:
    """Rebuild a Dictionary from a folder: ours, any SAELens folder, a cross-layer transcoder
    folder (``core.checkpoint.clt``), or (detected by their files) a dictionary_learning or
    sparsify folder. ``expect`` (``sae``, ``transcoder``, ``clt`` or ``crosscoder``) refuses
    another kind.

    ``plain=True``: the caller feeds one hook's activations (steering, enrichment of one store),
    so a crosscoder (several sources) is refused with a message that names its sources, whatever
    else the folder may be."""
    folder = Path(folder)
    sae = _load(folder)
    if plain and sae.kind == "crosscoder":
        check_kind(sae, "sae", folder)
    check_kind(sae, expect, folder)
    return sae


def _check_top_level(cfg: dict, dc: DictionaryConfig, cfg_path: Path) -> None:
    """SAELens reads the top-level ``d_in``/``d_sae``; ours reads the ``sparsescope`` block. A
    folder whose two disagree (one edited by hand or by another tool) would load differently
    in each, so it is refused."""
    for key, ours in (("d_in", dc.in_features), ("d_sae", dc.d_sae)):
        top = cfg.get(key)
        if top is not None and int(top) != int(ours):
            raise ShapeError(f"{key}={top} at the top of cfg.json but {ours} in its sparsescope block",
                             path=str(cfg_path), fix="restore the folder as the train stage wrote it, or "
                                                     "delete the sparsescope block to load it as SAELens does")


def _load(folder: Path) -> Dictionary:
    if not folder.is_dir():
        raise DataError("dictionary folder does not exist", path=str(folder),
                        fix="pass the folder written by the train stage (it holds cfg.json)")
    if (folder / "ae.pt").exists() and not (folder / CFG).exists():
        from core.checkpoint.dictionary_learning import import_dictionary_learning

        return import_dictionary_learning(folder)
    if (folder / "sae.safetensors").exists() and not (folder / WEIGHTS).exists():
        from core.checkpoint.sparsify import import_sparsify

        return import_sparsify(folder)
    cfg = read_cfg(folder)
    if (cfg.get("sparsescope") or {}).get("layout") == "clt":
        from core.checkpoint.clt import load_clt

        return load_clt(folder, cfg)
    cfg_path = folder / CFG
    tensors = read_safetensors(folder / WEIGHTS)
    if "W_skip" in tensors:
        tensors["W_skip"] = tensors["W_skip"].T
    block = cfg.get("sparsescope")
    optional: set[str] = set()
    if block:
        dc = _config_from_block(block, cfg_path)
        _check_top_level(cfg, dc, cfg_path)
        if block.get("extra_tensors"):
            tensors.update(read_safetensors(folder / EXTRA))
    else:
        dc, _ = _config_from_sae_lens(cfg, cfg_path)
    sae = build_dictionary(dc)
    if not block:
        # Buffers SAELens does not write (e.g. training counters) keep their initial values.
        known = set().union(*SAE_LENS_TENSORS.values())
        optional = {n for n in sae.state_dict() if n not in known}
    implied = f"{cfg_path} (architecture={dc.architecture}, d_in={dc.in_features}, d_sae={dc.d_sae}" + (
        f", d_out={dc.out_features})" if dc.out_features != dc.in_features else ")")
    assign(sae, tensors, path=folder / WEIGHTS, implied_by=implied, optional=optional)
    meta = dict(cfg.get("metadata") or {})
    meta.pop("sae_lens_version", None)
    for key, old in (("model_name", "model_name"), ("hook_name", "hook_point"), ("hook_name_out", "hook_name_out")):
        if meta.get(key) is None and (cfg.get(key) or cfg.get(old)):
            meta[key] = cfg.get(key) or cfg.get(old)
    sae.metadata = meta
    return sae.eval()

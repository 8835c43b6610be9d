"""The cross-layer transcoder folder: circuit-tracer's per-layer file layout plus our cfg.json.

Files, for a CLT over ``L`` layers with ``m`` latents per layer (``i`` is the position in the
CLT's layer range, 0..L-1; ``cfg.json`` maps it to the model's layer):

- ``W_enc_{i}.safetensors``: ``W_enc_{i} [m, d_in]`` (circuit-tracer's orientation, the
  transpose of ours), ``b_enc_{i} [m]``, ``b_dec_{i} [d_out]`` and, for JumpReLU-style
  inference (``clt_batchtopk``), ``threshold_{i} [m]``;
- ``W_dec_{i}.safetensors``: ``W_dec_{i} [m, L - i, d_out]``, the rows layer ``i``'s latents
  write into layers ``i..L-1``;
- ``W_skip.safetensors`` (only with a skip; ours, circuit-tracer reads none): ``W_skip [L, d_in, d_out]``,
  applied as ``x_i @ W_skip[i]``;
- ``sparsescope_extra.safetensors``: training counters (BatchTopK's threshold update counts);
- ``config.yaml``: ``model_name``, ``feature_input_hook``, ``feature_output_hook`` (the keys
  circuit-tracer's published CLT folders carry, read by SAELens's ``mntss_clt_layer_transcoder``);
- ``cfg.json``: ``architecture``, ``layers`` (model layer of each ``i``), ``d_in``, ``d_out``,
  ``d_transcoder`` (m), hook names, ``metadata``, and a ``sparsescope`` block with our exact
  config so ``load_sae`` rebuilds the same dictionary.

This is the layout of circuit-tracer's ``CrossLayerTranscoder.to_safetensors`` / ``load_clt``
(safety-research/circuit-tracer, ``circuit_tracer/transcoder/cross_layer_transcoder.py``):
file ``i`` is read there as model layer ``i`` with activation ``relu``, or ``jump_relu`` when
``threshold_{i}`` is present, so a ``clt_relu`` or ``clt_batchtopk`` folder over layers
``0..L-1`` reads as it is; a range starting later needs its files renumbered, and
``clt_topk`` (per-token TopK) has no circuit-tracer equivalent (``circuit_tracer_loadable``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from core.checkpoint.folder import CFG
from core.checkpoint.tensors import assign, read_safetensors
from core.dictionaries.base import Dictionary, DictionaryConfig, build_dictionary
from core.errors import ConfigError
from core.io import atomic_dir, write_json, write_text

FORMAT_VERSION = 1
EXTRA = "sparsescope_extra.safetensors"
SKIP = "W_skip.safetensors"


def _files(sae: Dictionary) -> dict[str, dict[str, torch.Tensor]]:
    """Our state dict cut into circuit-tracer's per-layer files."""
    m = sae.per_layer
    out: dict[str, dict[str, torch.Tensor]] = {}
    b_dec = sae.b_dec.detach().cpu().view(sae.n_layers, -1)
    for i in range(sae.n_layers):
        enc = {f"W_enc_{i}": sae.W_enc[i].detach().cpu().T.contiguous(),
               f"b_enc_{i}": sae.b_enc[i * m:(i + 1) * m].detach().cpu().contiguous(),
               f"b_dec_{i}": b_dec[i].contiguous()}
        if hasattr(sae, "threshold"):
            enc[f"threshold_{i}"] = sae.threshold[i * m:(i + 1) * m].detach().cpu().contiguous()
        out[f"W_enc_{i}.safetensors"] = enc
        out[f"W_dec_{i}.safetensors"] = {f"W_dec_{i}": sae.W_dec[i].detach().cpu().contiguous()}
    if sae.cfg.skip_connection:
        out[SKIP] = {"W_skip": sae.W_skip.detach().cpu().contiguous()}
    extra = {n: t.detach().cpu().contiguous() for n, t in sae.named_buffers() if n != "threshold"}
    if extra:
        out[EXTRA] = extra
    return out


def _hook_suffix(hooks: Any) -> str | None:
    if isinstance(hooks, list) and hooks:
        return str(hooks[0]).rsplit(".", 1)[-1]
    return None


def save_clt(sae: Dictionary, folder: str | Path, *, metadata: dict[str, Any] | None = None) -> Path:
    """Write a cross-layer transcoder folder (replaced whole, never half-written)."""
    folder = Path(folder)
    meta = {**dict(getattr(sae, "metadata", None) or {}), **dict(metadata or {})}
    cfg = {"architecture": sae.architecture, "n_layers": sae.n_layers, "layers": meta.get("layers"),
           "d_in": sae.cfg.d_in, "d_out": int(sae.cfg.d_out), "d_transcoder": sae.per_layer,
           "model_name": meta.get("model_name"), "hook_name": meta.get("hook_name"),
           "hook_name_out": meta.get("hook_name_out"), "metadata": meta,
           "sparsescope": {"format_version": FORMAT_VERSION, "layout": "clt", "architecture": sae.architecture,
                           "dictionary": sae.cfg.to_dict(),
                           "circuit_tracer_loadable": sae.sparsity in ("relu", "batchtopk")}}
    config_yaml = "".join(f"{k}: {v}\n" for k, v in (
        ("model_name", meta.get("model_name")), ("feature_input_hook", _hook_suffix(meta.get("hook_name"))),
        ("feature_output_hook", _hook_suffix(meta.get("hook_name_out")))) if v is not None)
    with atomic_dir(folder) as tmp:
        for name, tensors in _files(sae).items():
            save_file(tensors, str(tmp / name))
        write_text(tmp / "config.yaml", config_yaml)
        write_json(tmp / CFG, cfg)
    return folder


def load_clt(folder: str | Path, cfg: dict[str, Any]) -> Dictionary:
    """Rebuild a cross-layer transcoder from its folder, every tensor's name and shape checked."""
    folder = Path(folder)
    block = cfg["sparsescope"]
    try:
        dc = DictionaryConfig.from_dict(dict(block["dictionary"]))
    except (ConfigError, KeyError, TypeError) as err:
        raise ConfigError(f"the sparsescope block cannot be read ({err})", path=str(folder / CFG),
                          fix="re-save the dictionary with this version of sparsescope") from None
    sae = build_dictionary(dc)
    m = sae.per_layer
    enc, b_enc, b_dec, thr, tensors = [], [], [], [], {}
    for i in range(sae.n_layers):
        part = read_safetensors(folder / f"W_enc_{i}.safetensors")
        enc.append(part.get(f"W_enc_{i}", torch.empty(0)).T)
        b_enc.append(part.get(f"b_enc_{i}", torch.empty(0)))
        b_dec.append(part.get(f"b_dec_{i}", torch.empty(0)))
        if f"threshold_{i}" in part:
            thr.append(part[f"threshold_{i}"])
        dec = read_safetensors(folder / f"W_dec_{i}.safetensors")
        if f"W_dec_{i}" in dec:
            tensors[f"W_dec.{i}"] = dec[f"W_dec_{i}"]
    implied = f"{folder / CFG} (architecture={dc.architecture}, layers={sae.n_layers}, m={m}, d_in={dc.d_in})"
    shapes_ok = all(t.dim() == 2 for t in enc) and len({tuple(t.shape) for t in enc}) == 1
    if shapes_ok:
        tensors["W_enc"] = torch.stack(enc)
    tensors["b_enc"] = torch.cat(b_enc)
    tensors["b_dec"] = torch.cat(b_dec)
    if thr:
        tensors["threshold"] = torch.cat(thr)
    if dc.skip_connection:
        tensors.update(read_safetensors(folder / SKIP))
    if (folder / EXTRA).exists():
        tensors.update(read_safetensors(folder / EXTRA))
    assign(sae, tensors, path=folder, implied_by=implied)
    sae.metadata = dict(cfg.get("metadata") or {})
    return sae.eval()

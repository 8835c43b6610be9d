"""Import folders written by dictionary_learning (``ae.pt`` + ``config.json``).

Its trainers save ``{"trainer": {"dict_class": ..., "activation_dim": ..., "dict_size": ...,
"k": ..., "lm_name": ..., "layer": ..., "submodule_name": ...}, "buffer": {...}}`` next to a
``torch.save``d state dict. Each dict class keeps its weights under its own names (and
``nn.Linear`` layouts, transposed relative to SAELens); the table below maps them onto our
architectures with the same encode, so imported features are the same features.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from core.checkpoint.tensors import assign, expect_shapes, read_torch_state
from core.dictionaries.base import Dictionary, DictionaryConfig, build_dictionary
from core.errors import ConfigError, DataError
from core.io import read_json

Converter = Callable[[dict[str, torch.Tensor]], dict[str, torch.Tensor]]


def _linear_sae(s: dict[str, torch.Tensor], b_dec: str) -> dict[str, torch.Tensor]:
    return {"W_enc": s["encoder.weight"].T, "b_enc": s["encoder.bias"],
            "W_dec": s["decoder.weight"].T, "b_dec": s[b_dec]}


def _topk_family(s: dict[str, torch.Tensor], d_sae: int) -> dict[str, torch.Tensor]:
    out = _linear_sae(s, "b_dec")
    if "threshold" in s:
        # A negative threshold (-1: never set) means "keep every positive pre-activation";
        # with our encode ``pre * (pre > t)`` that is t = 0.
        out["threshold"] = s["threshold"].float().clamp_min(0.0).expand(d_sae).clone()
    return out


def _direct(s: dict[str, torch.Tensor], d_sae: int, *, threshold_scalar: bool) -> dict[str, torch.Tensor]:
    out = {n: s[n] for n in ("W_enc", "b_enc", "W_dec", "b_dec")}
    if threshold_scalar:
        out["threshold"] = s["threshold"].float().clamp_min(0.0).expand(d_sae).clone()
    else:
        out["threshold"] = s["threshold"]
    return out


def _expected(dict_class: str, d: int, n: int) -> dict[str, tuple[int, ...]]:
    linear = {"encoder.weight": (n, d), "encoder.bias": (n,), "decoder.weight": (d, n)}
    direct = {"W_enc": (d, n), "b_enc": (n,), "W_dec": (n, d), "b_dec": (d,)}
    return {
        "AutoEncoder": {**linear, "bias": (d,)},
        "AutoEncoderNew": {**linear, "decoder.bias": (d,)},
        "GatedAutoEncoder": {"encoder.weight": (n, d), "decoder.weight": (d, n), "decoder_bias": (d,),
                             "r_mag": (n,), "gate_bias": (n,), "mag_bias": (n,)},
        "JumpReluAutoEncoder": {**direct, "threshold": (n,)},
        "AutoEncoderTopK": {**linear, "b_dec": (d,)},
        "BatchTopKSAE": {**linear, "b_dec": (d,), "threshold": ()},
        "MatryoshkaBatchTopKSAE": {**direct, "threshold": ()},
    }[dict_class]


def _guess_class(state: dict[str, torch.Tensor]) -> str:
    keys = set(state)
    if "gate_bias" in keys:
        return "GatedAutoEncoder"
    if "group_sizes" in keys:
        return "MatryoshkaBatchTopKSAE"
    if "W_enc" in keys:
        return "JumpReluAutoEncoder"
    if "k" in keys:
        return "BatchTopKSAE" if "threshold" in keys else "AutoEncoderTopK"
    return "AutoEncoderNew" if "decoder.bias" in keys else "AutoEncoder"


def import_dictionary_learning(folder: str | Path) -> Dictionary:
    """Load a dictionary_learning trainer folder as the equivalent sparsescope Dictionary."""
    folder = Path(folder)
    cfg_path, weights = folder / "config.json", folder / "ae.pt"
    if not cfg_path.exists():
        raise DataError("config.json is missing: not a dictionary_learning folder", path=str(folder),
                        fix="pass a trainer folder holding ae.pt and config.json")
    try:
        trainer: dict[str, Any] = dict(read_json(cfg_path).get("trainer") or {})
    except (ValueError, AttributeError) as err:
        raise DataError(f"config.json is not a dictionary_learning config ({err})", path=str(cfg_path),
                        fix="pass a trainer folder holding ae.pt and config.json") from None
    state = read_torch_state(weights)
    dict_class = trainer.get("dict_class") or _guess_class(state)
    try:
        d, n = int(trainer["activation_dim"]), int(trainer["dict_size"])
    except KeyError as err:
        raise DataError(f"config.json lacks trainer.{err.args[0]}", path=str(cfg_path),
                        fix="add activation_dim and dict_size under \"trainer\"") from None
    supported = ("AutoEncoder", "AutoEncoderNew", "GatedAutoEncoder", "JumpReluAutoEncoder",
                 "AutoEncoderTopK", "BatchTopKSAE", "MatryoshkaBatchTopKSAE")
    if dict_class not in supported:
        raise ConfigError(f"dictionary_learning class {dict_class!r} cannot be imported", path=str(cfg_path),
                          fix=f"supported dict_class values: {list(supported)}")
    implied = f"{cfg_path} (dict_class={dict_class}, activation_dim={d}, dict_size={n})"
    expect_shapes(state, _expected(dict_class, d, n), path=weights, implied_by=implied)

    k = trainer.get("k", state["k"].item() if "k" in state else None)
    kw: dict[str, Any] = {"d_in": d, "d_sae": n}
    if dict_class == "AutoEncoder":
        dc, tensors = DictionaryConfig("relu", **kw), _linear_sae(state, "bias")
    elif dict_class == "AutoEncoderNew":
        dc = DictionaryConfig("relu", apply_b_dec_to_input=False, **kw)
        tensors = _linear_sae(state, "decoder.bias")
    elif dict_class == "GatedAutoEncoder":
        dc = DictionaryConfig("gated", **kw)
        tensors = {"W_enc": state["encoder.weight"].T, "W_dec": state["decoder.weight"].T,
                   "b_dec": state["decoder_bias"], "b_gate": state["gate_bias"],
                   "b_mag": state["mag_bias"], "r_mag": state["r_mag"]}
    elif dict_class == "JumpReluAutoEncoder":
        # Its encode is relu(pre * (pre > t)); thresholds are kept >= 0 in training, where
        # that equals our pre * (pre > t). It does not subtract b_dec from the input.
        dc = DictionaryConfig("jumprelu", apply_b_dec_to_input=False, **kw)
        tensors = _direct(state, n, threshold_scalar=False)
        tensors["threshold"] = tensors["threshold"].clamp_min(0.0)
    elif dict_class == "AutoEncoderTopK":
        dc, tensors = DictionaryConfig("topk", k=int(k), **kw), _topk_family(state, n)
        tensors.pop("threshold", None)
    elif dict_class == "BatchTopKSAE":
        dc, tensors = DictionaryConfig("batchtopk", k=int(k), **kw), _topk_family(state, n)
    else:
        sizes = [int(s) for s in state["group_sizes"].tolist()] if "group_sizes" in state else \
            list(trainer.get("group_sizes") or [n])
        prefixes = torch.tensor(sizes).cumsum(0).tolist()
        dc = DictionaryConfig("matryoshka", k=int(k), matryoshka_prefixes=prefixes, **kw)
        tensors = _direct(state, n, threshold_scalar=True)
    sae = build_dictionary(dc)
    known = {"W_enc", "b_enc", "W_dec", "b_dec", "threshold", "b_gate", "b_mag", "r_mag"}
    assign(sae, {n_: t.contiguous() for n_, t in tensors.items()}, path=weights, implied_by=implied,
           optional={n_ for n_ in sae.state_dict() if n_ not in known})
    sae.metadata = {"source_format": "dictionary_learning", "source_class": dict_class,
                    "model_name": trainer.get("lm_name"), "layer": trainer.get("layer"),
                    "hook_name": trainer.get("submodule_name")}
    return sae.eval()

"""ESM-2 through fair-esm: pretrained names (downloaded by torch.hub, or already cached under
``$TORCH_HOME/hub/checkpoints``) or a local ``.pt`` file.

fair-esm keeps activations time-first ([T, B, d]) inside its layers; the hook specs say so
and interventions still see [B, T, d]. Input is ``<cls> residues <eos>``; the model's
window is 1024 tokens, so 1022 residues. The residual stream after the last layer is taken
before ``emb_layer_norm_after`` (fair-esm's ``representations[n_layers]`` is after it).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from core.adapters.base import Batch
from core.adapters.hooks import HookSpec
from core.adapters.loading import device_of, dtype_of, load_or_offline, looks_like_path, require_path
from core.adapters.protein import ProteinAdapter
from core.samples import Sample

MAX_TOKENS = 1024


def _allow_namespace() -> None:
    """fair-esm checkpoints pickle an argparse.Namespace; torch >= 2.6 loads weights_only."""
    add = getattr(torch.serialization, "add_safe_globals", None)
    if add is not None:
        add([argparse.Namespace])


def load_fair_esm(name_or_path: str):
    """(model, alphabet) from a pretrained name or a local .pt (contact regression optional)."""
    import esm

    _allow_namespace()
    if looks_like_path(name_or_path):
        path = require_path(name_or_path, "ESM checkpoint")
        regression = Path(str(path.with_suffix("")) + "-contact-regression.pt")
        if regression.exists() or not esm.pretrained._has_regression_weights(path.stem):
            return esm.pretrained.load_model_and_alphabet_local(str(path))
        data = torch.load(str(path), map_location="cpu")
        return esm.pretrained.load_model_and_alphabet_core(path.stem, data, None)

    def hub():
        try:
            return esm.pretrained.load_model_and_alphabet_hub(name_or_path)
        except Exception as err:  # fair-esm turns HTTP errors into a bare Exception
            if isinstance(err, OSError) or "Could not load" in str(err) or "urlopen" in str(err):
                raise OSError(str(err)) from err
            raise

    fix = (f"download {name_or_path}.pt (and {name_or_path}-contact-regression.pt) from "
           "https://dl.fbaipublicfiles.com/fair-esm/ into $TORCH_HOME/hub/checkpoints, "
           f"or set model.name_or_path=/path/to/{name_or_path}.pt")
    return load_or_offline(name_or_path, hub, fix=fix)


class FairESMAdapter(ProteinAdapter):
    objective = "mlm"

    def __init__(self, name_or_path: str = "esm2_t6_8M_UR50D", *, name: str | None = None, device: str | None = "auto",
                 dtype: str = "float32", on_unknown: str = "error", long_sequences: str = "chunk",
                 overlap: int = 128) -> None:
        model, alphabet = load_fair_esm(str(name_or_path))
        self.name = name or Path(str(name_or_path)).stem
        self.source = str(name_or_path)
        self.device = device_of(device)
        self.model = model.to(self.device, dtype_of(dtype)).eval()
        self.alphabet_obj = alphabet
        self.tokenizer = alphabet
        self.d_model, self.n_layers = model.embed_dim, model.num_layers
        self.max_residues = MAX_TOKENS - int(alphabet.prepend_bos) - int(alphabet.append_eos)
        self.pad_id = alphabet.padding_idx
        self.mask_token_id = alphabet.mask_idx
        self.alphabet = "".join(t for t in alphabet.standard_toks if len(t) == 1 and t.isalpha()) + "XBUZO"
        self.setup_inputs(on_unknown=on_unknown, long_sequences=long_sequences, overlap=overlap)

    def residue_ids(self, residues: str) -> list[int]:
        return [self.alphabet_obj.get_idx(c) for c in residues]

    def frame(self, ids: list[int], sample: Sample) -> tuple[list[int], list[int]]:
        a = self.alphabet_obj
        head = [a.cls_idx] if a.prepend_bos else []
        tail = [a.eos_idx] if a.append_eos else []
        return [*head, *ids, *tail], [-1] * len(head) + list(range(len(ids))) + [-1] * len(tail)

    def _build_hook_specs(self) -> dict[str, HookSpec]:
        specs: dict[str, HookSpec] = {}
        for i, layer in enumerate(self.model.layers):
            specs[f"blocks.{i}.hook_resid_pre"] = HookSpec(layer, "input", time_first=True)
            specs[f"blocks.{i}.hook_attn_out"] = HookSpec(layer.self_attn, "output", time_first=True)
            specs[f"blocks.{i}.hook_mlp_in"] = HookSpec(layer.fc1, "input", time_first=True)
            specs[f"blocks.{i}.hook_mlp_out"] = HookSpec(layer.fc2, "output", time_first=True)
            specs[f"blocks.{i}.hook_resid_post"] = HookSpec(layer, "output", time_first=True)
        return specs

    def _run(self, batch: Batch) -> torch.Tensor:
        return self.model(batch.input_ids)["logits"]


def load_esm2_fair(name_or_path: str = "esm2_t6_8M_UR50D", *, name: str | None = None, device: str | None = "auto",
                   dtype: str = "float32", on_unknown: str = "error", long_sequences: str = "chunk",
                   overlap: int = 128) -> FairESMAdapter:
    """Hydra target for ``conf/model/esm2_fair.yaml``."""
    return FairESMAdapter(name_or_path, name=name, device=device, dtype=dtype, on_unknown=on_unknown,
                          long_sequences=long_sequences, overlap=overlap)

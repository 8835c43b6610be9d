"""ESM-2 through transformers (``EsmForMaskedLM``, or ``EsmModel`` without the LM head),
from a hub name (``facebook/esm2_t6_8M_UR50D``) or a local folder with config, weights and
vocab.txt. Input ``<cls> residues <eos>``; the token map is read from vocab.txt.
"""

from __future__ import annotations

from pathlib import Path

import torch

from core.adapters.base import Batch
from core.adapters.hooks import HookSpec
from core.adapters.loading import device_of, dtype_of, load_or_offline, looks_like_path, quiet_transformers
from core.adapters.protein import ClsSepFraming, ProteinAdapter, VocabMap, encoder_hook_specs


class HFESMAdapter(ClsSepFraming, ProteinAdapter):
    objective = "mlm"

    def __init__(self, name_or_path: str = "facebook/esm2_t6_8M_UR50D", *, name: str | None = None,
                 masked_lm: bool = True, device: str | None = "auto", dtype: str = "float32",
                 on_unknown: str = "error", long_sequences: str = "chunk", overlap: int = 128) -> None:
        from transformers import EsmForMaskedLM, EsmModel

        cls = EsmForMaskedLM if masked_lm else EsmModel

        def load():
            with quiet_transformers():
                model = cls.from_pretrained(name_or_path, dtype=dtype_of(dtype))
            if looks_like_path(str(name_or_path)):
                vocab = Path(name_or_path) / "vocab.txt"
            else:
                from huggingface_hub import hf_hub_download

                vocab = Path(hf_hub_download(name_or_path, "vocab.txt"))
            return model, VocabMap(vocab)

        model, self.tokenizer = load_or_offline(str(name_or_path), load)
        self.name = name or str(name_or_path).rstrip("/").split("/")[-1]
        self.source = str(name_or_path)
        self.device = device_of(device)
        self.model = model.to(self.device).eval()
        self.masked_lm = masked_lm
        cfg = self.model.config
        self.d_model, self.n_layers = cfg.hidden_size, cfg.num_hidden_layers
        self.max_residues = cfg.max_position_embeddings - 4  # 1026 for ESM-2 -> 1022 residues
        self.pad_id = self.tokenizer.pad_token_id
        self.mask_token_id = self.tokenizer.mask_token_id
        self.alphabet = "".join(t for t in self.tokenizer.id_to_token if len(t) == 1 and t.isalpha())
        self.setup_inputs(on_unknown=on_unknown, long_sequences=long_sequences, overlap=overlap)

    @property
    def encoder(self):
        return self.model.esm.encoder if self.masked_lm else self.model.encoder

    def _build_hook_specs(self) -> dict[str, HookSpec]:
        return encoder_hook_specs(self.encoder.layer)

    def _run(self, batch: Batch) -> torch.Tensor:
        out = self.model(input_ids=batch.input_ids, attention_mask=batch.attention_mask)
        return out.logits if self.masked_lm else out.last_hidden_state


def load_esm2_hf(name_or_path: str = "facebook/esm2_t6_8M_UR50D", *, name: str | None = None, masked_lm: bool = True,
                 device: str | None = "auto", dtype: str = "float32", on_unknown: str = "error",
                 long_sequences: str = "chunk", overlap: int = 128) -> HFESMAdapter:
    """Hydra target for ``conf/model/esm2_hf.yaml``."""
    return HFESMAdapter(name_or_path, name=name, masked_lm=masked_lm, device=device, dtype=dtype,
                        on_unknown=on_unknown, long_sequences=long_sequences, overlap=overlap)

"""AntiBERTy (BERT masked LM, 8 layers x 512, MIT), offline from the ``antiberty`` wheel.

Input is ``[CLS] residues [SEP]``; the token map comes from the wheel's vocab.txt. The
checkpoint also holds species/chain/graft heads that a BertForMaskedLM does not use.
"""

from __future__ import annotations

from pathlib import Path

import torch

from core.adapters.base import Batch
from core.adapters.hooks import HookSpec
from core.adapters.loading import device_of, dtype_of, package_dir, quiet_transformers, require_path
from core.adapters.protein import STANDARD_AA, ClsSepFraming, ProteinAdapter, VocabMap, encoder_hook_specs


def shipped_antiberty() -> tuple[Path, Path]:
    root = package_dir("antiberty", "antiberty==0.1.3") / "trained_models"
    return root / "AntiBERTy_md_smooth", root / "vocab.txt"


class BertMLMAdapter(ClsSepFraming, ProteinAdapter):
    """A transformers BERT masked LM over residues with a vocab.txt token map."""

    objective = "mlm"

    def __init__(self, path: str | None = None, vocab: str | None = None, *, name: str = "antiberty",
                 device: str | None = "auto", dtype: str = "float32", on_unknown: str = "error",
                 long_sequences: str = "chunk", overlap: int = 128) -> None:
        from transformers import BertForMaskedLM

        default_model, default_vocab = shipped_antiberty() if path is None else (None, None)
        model_dir = require_path(path or default_model, "model folder")
        vocab_path = Path(vocab) if vocab else (default_vocab or model_dir / "vocab.txt")
        if not vocab_path.exists() and (model_dir.parent / "vocab.txt").exists():
            vocab_path = model_dir.parent / "vocab.txt"
        self.tokenizer = VocabMap(vocab_path)
        self.name = name
        self.source = str(model_dir)
        self.device = device_of(device)
        with quiet_transformers():
            model = BertForMaskedLM.from_pretrained(model_dir, dtype=dtype_of(dtype))
        self.model = model.to(self.device).eval()
        cfg = self.model.config
        self.d_model, self.n_layers = cfg.hidden_size, cfg.num_hidden_layers
        self.max_residues = cfg.max_position_embeddings - 2
        self.pad_id = self.tokenizer.pad_token_id
        self.mask_token_id = self.tokenizer.mask_token_id
        self.alphabet = "".join(c for c in STANDARD_AA if c in self.tokenizer.token_to_id)
        self.setup_inputs(on_unknown=on_unknown, long_sequences=long_sequences, overlap=overlap)

    def _build_hook_specs(self) -> dict[str, HookSpec]:
        return encoder_hook_specs(self.model.bert.encoder.layer)

    def _run(self, batch: Batch) -> torch.Tensor:
        return self.model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits


def load_antiberty(path: str | None = None, vocab: str | None = None, *, name: str = "antiberty",
                   device: str | None = "auto", dtype: str = "float32", on_unknown: str = "error",
                   long_sequences: str = "chunk", overlap: int = 128) -> BertMLMAdapter:
    """Hydra target for ``conf/model/antiberty.yaml`` (``path: null`` = the weights in the wheel)."""
    return BertMLMAdapter(path, vocab, name=name, device=device, dtype=dtype, on_unknown=on_unknown,
                          long_sequences=long_sequences, overlap=overlap)

"""A tiny random ESM-2 saved in fair-esm's checkpoint format, for offline runs of the ESM-2 code paths.

It has ESM-2's architecture and alphabet but random weights: it exercises loading, hooks,
harvest, training and enrichment end to end without the 30 MB+ pretrained download, and
its features mean nothing. ``python -m domains.protein.tiny_esm OUT.pt`` writes one.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def save_tiny_esm2(path: str | Path, *, layers: int = 2, dim: int = 32, heads: int = 4, seed: int = 0) -> Path:
    """Write ``path`` (its name must start with ``esm2``, as fair-esm reads the version from it)."""
    import esm
    import torch

    from core.errors import ConfigError
    from core.io import atomic_path

    path = Path(path)
    if not path.name.startswith("esm2"):
        raise ConfigError(f"{path.name}: fair-esm only loads ESM-2 checkpoints whose name starts with 'esm2'",
                          fix="name the file e.g. esm2_t2_tiny.pt")
    torch.manual_seed(seed)
    model = esm.model.esm2.ESM2(num_layers=layers, embed_dim=dim, attention_heads=heads, alphabet="ESM-1b",
                                token_dropout=True)
    state = {f"encoder.sentence_encoder.{k}": v for k, v in model.state_dict().items()
             if not k.startswith("contact_head.regression")}
    cfg = argparse.Namespace(encoder_layers=layers, encoder_embed_dim=dim, encoder_attention_heads=heads,
                             token_dropout=True)
    with atomic_path(path) as tmp:
        torch.save({"cfg": {"model": cfg}, "model": state}, tmp)
    return path


if __name__ == "__main__":
    out = sys.argv[1] if len(sys.argv) > 1 else "esm2_t2_tiny.pt"
    print(save_tiny_esm2(out))

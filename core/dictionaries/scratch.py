"""A reusable work tensor for the dense pre-activations of the TopK family on the CPU.

Each training step of a TopK SAE builds a ``[batch, d_sae]`` pre-activation matrix only to
pick the top k from it (302 MB at batch 4096, d_sae 18,432). PyTorch's CPU allocator hands
blocks that large straight to ``mmap``, so every step pays page faults and the kernel's
zeroing for fresh pages; writing into the same tensor each step (``addmm(out=...)``) saves
that: 1.04 s -> 0.90 s median for that product on the 2-core CPU (bench/README.md). CUDA's
caching allocator already reuses blocks, so the GPU path allocates as usual.
"""

from __future__ import annotations

import torch


class Scratch:
    """Named work tensors owned by one module; never copied, pickled or saved with it."""

    def __init__(self) -> None:
        self._tensors: dict[str, torch.Tensor] = {}

    def get(self, name: str, shape: tuple[int, ...], like: torch.Tensor,
            dtype: torch.dtype | None = None) -> torch.Tensor:
        """An uninitialised tensor of ``shape`` on ``like``'s device, of ``dtype`` (default
        ``like``'s), reused while those match."""
        dtype = dtype or like.dtype
        t = self._tensors.get(name)
        if t is None or tuple(t.shape) != tuple(shape) or t.dtype != dtype or t.device != like.device:
            self._tensors.pop(name, None)
            t = self._tensors[name] = torch.empty(shape, dtype=dtype, device=like.device)
        return t

    def __deepcopy__(self, memo) -> Scratch:
        return Scratch()

    def __getstate__(self) -> dict:
        return {}

    def __setstate__(self, state: dict) -> None:
        self._tensors = {}

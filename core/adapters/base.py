"""The model adapter contract: named hook points where activations are captured, spliced or steered.

Hook names follow the TransformerLens/SAELens convention so SAEs trained here name their
hook the same way elsewhere: ``blocks.{i}.hook_resid_post`` (residual stream after block i),
``blocks.{i}.hook_mlp_in``, ``blocks.{i}.hook_mlp_out``, ``blocks.{i}.hook_attn_out``.

Every intervention is a function ``fn(activation [B, T, d], batch) -> activation`` applied at
one hook: capture records and returns the input unchanged, splice returns an SAE
reconstruction, steer adds a direction or clamps features. One mechanism serves all three.

Token positions: ``Batch.positions[b, t]`` is the index of token t within sample b as the
domain counts it (residue index for proteins, token index for text), or -1 for tokens that
are not harvested (BOS/EOS/CLS/padding, special tokens). Concept matrices and activation
shards key tokens by (sample index, position), so this is the one place where the model's
tokenisation meets the domain's numbering.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch

from core.samples import Sample

Intervention = Callable[[torch.Tensor, "Batch"], torch.Tensor]


@dataclass
class Batch:
    """Tokenised samples ready for the model."""

    input_ids: torch.Tensor  # [B, T]
    attention_mask: torch.Tensor  # [B, T] 1 for real tokens
    positions: torch.Tensor  # [B, T] domain position of each token, -1 if not harvested
    sample_index: torch.Tensor  # [B] index of each sample in the caller's list
    extra: dict[str, Any] = field(default_factory=dict)

    def to(self, device: torch.device) -> Batch:
        return Batch(self.input_ids.to(device), self.attention_mask.to(device), self.positions.to(device),
                     self.sample_index.to(device), self.extra)


class ModelAdapter(ABC):
    """Wraps a torch model and exposes capture/splice/steer at named hook points."""

    name: str
    d_model: int
    n_layers: int

    @property
    @abstractmethod
    def hook_points(self) -> list[str]:
        """All valid hook names, shallow to deep."""

    @abstractmethod
    def tokenize(self, samples: Sequence[Sample], sample_index: Sequence[int] | None = None) -> Batch:
        """Tokenise samples (raises a DataError naming the sample for bad characters)."""

    @abstractmethod
    @contextmanager
    def intervene(self, hook: str, fn: Intervention) -> Iterator[None]:
        """Apply ``fn`` to the activation at ``hook`` for every forward pass inside the block."""

    @abstractmethod
    def forward(self, batch: Batch, *, stop_at: str | None = None) -> torch.Tensor | None:
        """Run the model; return logits, or None when stopped early at hook ``stop_at``."""

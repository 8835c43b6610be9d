"""The model adapter contract: named hook points where activations are captured, spliced or steered.

Hook names follow the TransformerLens/SAELens convention so SAEs trained here name their
hook the same way elsewhere: ``blocks.{i}.hook_resid_post`` (residual stream after block i),
``blocks.{i}.hook_mlp_in``, ``blocks.{i}.hook_mlp_out``, ``blocks.{i}.hook_attn_out``.

What each name means on the real modules (all activations [B, T, d_model]):

- ``hook_resid_pre``: the input of block i (block 0: the embeddings as the model scales them);
- ``hook_attn_out``: the attention sublayer's output before it is added to the residual
  (BERT/ESM: the attention output projection, before dropout, residual and LayerNorm);
- ``hook_mlp_in``: the input of the MLP (after the pre-MLP norm in pre-LN models; after the
  post-attention LayerNorm in BERT);
- ``hook_mlp_out``: the MLP's output projection, before it is added to the residual;
- ``hook_resid_post``: the output of block i (fair-esm's last block: before
  ``emb_layer_norm_after``; transformers' final norm is likewise not part of any block).

Every intervention is a function ``fn(activation [B, T, d], batch) -> activation`` applied at
one hook: capture records and returns the input unchanged, splice returns an SAE
reconstruction, steer adds a direction or clamps features. One mechanism serves all three.

Token positions: ``Batch.positions[b, t]`` is the index of token t within sample b as the
domain counts it (residue index for proteins, token index for text), or -1 for tokens that
are not harvested (BOS/EOS/CLS/padding for proteins; padding for text). Text keeps an index
for every real token, since chat markers and BOS are part of the prompt;
``Batch.extra["special_mask"]`` ([B, T] bool) marks special tokens so harvest can drop
them. Concept matrices and activation shards key tokens by (sample index, position), so this
is the one place where the model's tokenisation meets the domain's numbering.

A row of a batch is one model input; ``sample_index[b]`` says which sample it came from.
Protein models that split a long sequence into overlapping windows give several rows the
same sample index, with position -1 on the residues another window owns.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch

from core.errors import ConfigError
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
        extra = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in self.extra.items()}
        return Batch(self.input_ids.to(device), self.attention_mask.to(device), self.positions.to(device),
                     self.sample_index.to(device), extra)

    @property
    def special_mask(self) -> torch.Tensor:
        """[B, T] True for special tokens (BOS/EOS/CLS/chat markers) and padding."""
        special = self.extra.get("special_mask")
        if special is None:
            special = self.positions < 0
        return special.to(self.attention_mask.device) | (self.attention_mask == 0)

    def __len__(self) -> int:
        return int(self.input_ids.shape[0])


class StopForward(Exception):
    """Raised from a forward hook to end a pass once the deepest hook needed has run."""


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

    def check_hooks(self, hooks: Sequence[str]) -> list[str]:
        """Return ``hooks`` if all are valid, else a ConfigError listing the valid names."""
        valid = self.hook_points
        bad = [h for h in hooks if h not in valid]
        if not hooks:
            raise ConfigError(f"no hook point given for model {self.name!r}",
                              fix=f"choose from {describe_hooks(valid)}")
        if bad:
            import difflib

            close = difflib.get_close_matches(bad[0], valid, n=3)
            hint = f" (did you mean {', '.join(close)}?)" if close else ""
            raise ConfigError(f"unknown hook point {bad[0]!r} for model {self.name!r}{hint}",
                              fix=f"valid hook points are {describe_hooks(valid)}")
        return list(hooks)

    def capture(self, batch: Batch, hooks: Sequence[str], *, stop_early: bool = True) -> dict[str, torch.Tensor]:
        """Activations at each hook, ``[B, T, d]``; the pass stops after the deepest one."""
        hooks = self.check_hooks(list(hooks))
        order = {h: i for i, h in enumerate(self.hook_points)}
        deepest = max(hooks, key=order.__getitem__) if stop_early else None
        captured: dict[str, torch.Tensor] = {}

        def recorder(name: str) -> Intervention:
            def record(act: torch.Tensor, _batch: Batch) -> torch.Tensor:
                captured[name] = act.detach()
                return act

            return record

        with ExitStack() as stack:
            for h in dict.fromkeys(hooks):
                stack.enter_context(self.intervene(h, recorder(h)))
            self.forward(batch, stop_at=deepest)
        return captured


def describe_hooks(names: Sequence[str]) -> str:
    """Compress ``blocks.{i}.hook_x`` names into one line: ``blocks.{0..29}.hook_{a,b}``."""
    import re

    layers: dict[str, list[int]] = {}
    other: list[str] = []
    for n in names:
        m = re.fullmatch(r"blocks\.(\d+)\.(.+)", n)
        if m:
            layers.setdefault(m.group(2), []).append(int(m.group(1)))
        else:
            other.append(n)
    parts = []
    groups: dict[tuple[int, int], list[str]] = {}
    for kind, idx in layers.items():
        groups.setdefault((min(idx), max(idx)), []).append(kind)
    for (lo, hi), kinds in groups.items():
        k = kinds[0] if len(kinds) == 1 else "{" + ",".join(kinds) + "}"
        parts.append(f"blocks.{{{lo}..{hi}}}.{k}")
    return ", ".join(parts + other)

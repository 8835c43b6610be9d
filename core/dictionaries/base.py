"""The Dictionary contract shared by every architecture, and the registry that names them.

A dictionary maps an input ``x`` of shape ``[batch, n_inputs, d_in]`` (or ``[batch, d_in]``
when ``n_inputs == 1``) to latents ``f`` of shape ``[batch, d_sae]`` and back to an output
of shape ``[batch, n_outputs, d_out]`` (or ``[batch, d_out]``). Plain SAEs have
``d_out == d_in`` and one input; transcoders have ``d_out != d_in``; crosscoders stack
several layers or models as ``n_inputs``/``n_outputs``. Each architecture owns its loss
terms (``loss``), so the training loop never branches on the architecture.

Parameter names and layouts follow the SAELens inference format so that saving is a
rename, not a transposition: ``W_enc [n_inputs*d_in, d_sae]``, ``W_dec [d_sae, n_outputs*d_out]``,
``b_enc [d_sae]``, ``b_dec [n_outputs*d_out]``.
"""

from __future__ import annotations

import dataclasses
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import nn

from core.errors import ConfigError


@dataclass
class DictionaryConfig:
    """Everything needed to rebuild a dictionary; saved verbatim into ``cfg.json``."""

    architecture: str
    d_in: int
    d_sae: int
    d_out: int | None = None
    n_inputs: int = 1
    n_outputs: int = 1
    k: int | None = None
    l1_coefficient: float = 0.0
    target_l0: float | None = None
    l0_coefficient: float = 0.0
    jumprelu_init_threshold: float = 1e-3
    jumprelu_bandwidth: float = 1e-3
    matryoshka_prefixes: list[int] | None = None
    aux_k: int | None = None
    aux_coefficient: float = 1.0 / 32
    dead_after_tokens: int = 10_000_000
    apply_b_dec_to_input: bool = True
    skip_connection: bool = False
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.d_out is None:
            self.d_out = self.d_in
        for name in ("d_in", "d_sae", "d_out", "n_inputs", "n_outputs"):
            if int(getattr(self, name)) <= 0:
                raise ConfigError(f"sae.{name} must be positive, got {getattr(self, name)}",
                                  fix=f"set sae.{name} to a positive integer")

    @property
    def in_features(self) -> int:
        return self.n_inputs * self.d_in

    @property
    def out_features(self) -> int:
        return self.n_outputs * int(self.d_out)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DictionaryConfig:
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ConfigError(f"unknown dictionary config keys {unknown}",
                              fix=f"valid keys are {sorted(names)}")
        return cls(**data)


@dataclass
class LossOutput:
    """What a training step needs: the scalar to minimise, named terms to log, and the latents."""

    loss: torch.Tensor
    terms: dict[str, torch.Tensor]
    latents: torch.Tensor
    reconstruction: torch.Tensor


class Dictionary(nn.Module, ABC):
    """Base class: parameters in SAELens layout, encode/decode, and per-architecture loss."""

    architecture: ClassVar[str] = ""

    def __init__(self, cfg: DictionaryConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.W_enc = nn.Parameter(torch.empty(cfg.in_features, cfg.d_sae))
        self.b_enc = nn.Parameter(torch.zeros(cfg.d_sae))
        self.W_dec = nn.Parameter(torch.empty(cfg.d_sae, cfg.out_features))
        self.b_dec = nn.Parameter(torch.zeros(cfg.out_features))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Unit-norm decoder rows and a tied (transposed) encoder, as Gao et al. and Conerly et al. do."""
        with torch.no_grad():
            nn.init.kaiming_uniform_(self.W_dec)
            self.W_dec /= self.W_dec.norm(dim=1, keepdim=True).clamp_min(1e-8)
            if self.cfg.in_features == self.cfg.out_features:
                self.W_enc.copy_(self.W_dec.T)
            else:
                nn.init.kaiming_uniform_(self.W_enc)

    def flatten_input(self, x: torch.Tensor) -> torch.Tensor:
        return x.reshape(x.shape[0], -1) if x.dim() == 3 else x

    def pre_activation(self, x: torch.Tensor) -> torch.Tensor:
        x = self.flatten_input(x)
        if self.cfg.apply_b_dec_to_input and self.cfg.in_features == self.cfg.out_features:
            x = x - self.b_dec
        return x @ self.W_enc + self.b_enc

    @abstractmethod
    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Latent activations ``[batch, d_sae]`` (non-negative, sparse)."""

    def decode(self, f: torch.Tensor) -> torch.Tensor:
        out = f @ self.W_dec + self.b_dec
        if self.cfg.n_outputs > 1:
            out = out.reshape(f.shape[0], self.cfg.n_outputs, int(self.cfg.d_out))
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(x))

    @abstractmethod
    def loss(self, x: torch.Tensor, target: torch.Tensor | None = None, *,
             dead_mask: torch.Tensor | None = None, progress: float = 1.0) -> LossOutput:
        """Training loss for a batch. ``target`` defaults to ``x`` (SAE); transcoders pass the MLP output.

        ``dead_mask`` marks latents counted dead (for AuxK); ``progress`` in [0, 1] drives warm-ups.
        """

    @torch.no_grad()
    def normalize_decoder(self) -> None:
        """Rescale decoder rows to unit norm (called after each optimiser step)."""
        norms = self.W_dec.norm(dim=1, keepdim=True).clamp_min(1e-8)
        self.W_dec.div_(norms)

    @torch.no_grad()
    def fold_scaling(self, scale: float) -> None:
        """Fold an input scaling ``x_scaled = scale * x`` into the weights so the saved
        dictionary takes and returns activations in the model's own units."""
        self.W_enc.mul_(scale)
        self.b_dec.div_(scale)
        self.W_dec.div_(scale)


REGISTRY: dict[str, type[Dictionary]] = {}


def register(name: str):
    """Class decorator: make an architecture buildable by name from a config."""

    def deco(cls: type[Dictionary]) -> type[Dictionary]:
        cls.architecture = name
        REGISTRY[name] = cls
        return cls

    return deco


def build_dictionary(cfg: DictionaryConfig | dict[str, Any]) -> Dictionary:
    if isinstance(cfg, dict):
        cfg = DictionaryConfig.from_dict(cfg)
    import core.dictionaries  # noqa: F401  (registers the architectures)

    try:
        cls = REGISTRY[cfg.architecture]
    except KeyError:
        raise ConfigError(f"unknown architecture {cfg.architecture!r}",
                          fix=f"set sae.architecture to one of {sorted(REGISTRY)}") from None
    return cls(cfg)

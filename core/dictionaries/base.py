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

from core.dictionaries.dense import centered_linear
from core.errors import ConfigError, ShapeError


@dataclass
class DictionaryConfig:
    """Everything needed to rebuild a dictionary; saved verbatim into ``cfg.json``."""

    architecture: str
    d_in: int
    d_sae: int
    d_out: int | None = None
    n_inputs: int = 1
    n_outputs: int = 1
    source_widths: list[int] | None = None
    k: int | None = None
    l1_coefficient: float = 0.0
    target_l0: float | None = None
    l0_coefficient: float = 0.0
    jumprelu_init_threshold: float = 1e-3
    jumprelu_bandwidth: float = 1e-3
    jumprelu_preact_coefficient: float = 0.0
    jumprelu_threshold_lr: float | None = None
    jumprelu_topk_warmup: float = 0.0
    matryoshka_prefixes: list[int] | None = None
    aux_k: int | None = None
    aux_coefficient: float = 1.0 / 32
    dead_after_tokens: int = 10_000_000
    apply_b_dec_to_input: bool = True
    skip_connection: bool = False
    transcoder: bool = False
    sparse_decode: bool = True
    fused_encoder: bool = True
    threshold_decay: float = 0.99
    batchtopk_token_warmup: float = 0.0
    sparsity_warmup: float = 0.05
    k_anneal_from: int | None = None
    k_anneal_fraction: float = 0.1
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.d_out is None:
            self.d_out = self.d_in
        for name in ("d_in", "d_sae", "d_out", "n_inputs", "n_outputs"):
            if int(getattr(self, name)) <= 0:
                raise ConfigError(f"sae.{name} must be positive, got {getattr(self, name)}",
                                  fix=f"set sae.{name} to a positive integer")
        if self.source_widths is not None:
            self.source_widths = [int(w) for w in self.source_widths]
            if self.n_outputs == 1:  # a crosscoder writes back what it reads
                self.n_outputs = self.n_inputs
            if len(self.source_widths) != self.n_inputs or self.n_outputs != self.n_inputs \
                    or min(self.source_widths) <= 0:
                raise ConfigError(f"sae.source_widths={self.source_widths} must give one positive width per "
                                  f"source (n_inputs={self.n_inputs}, n_outputs={self.n_outputs})",
                                  fix="set one width per stacked store, and n_outputs = n_inputs")

    @property
    def in_features(self) -> int:
        return sum(self.source_widths) if self.source_widths else self.n_inputs * self.d_in

    @property
    def out_features(self) -> int:
        return sum(self.source_widths) if self.source_widths else self.n_outputs * int(self.d_out)

    @property
    def is_transcoder(self) -> bool:
        """Whether the decoder predicts another site than the encoder reads (an MLP's output from
        its input). ``transcoder`` says so even when the widths agree (SmolLM2's MLP maps 576 to
        576), so the input is never centred by the target's ``b_dec`` and the encoder is not tied."""
        return self.transcoder or self.in_features != self.out_features

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
    """What a training step needs: the scalar to minimise, named terms to log, and which
    latents fired.

    ``fired`` counts, per latent, the tokens of the batch on which it was active (dead-latent
    tracking). ``latents`` is the dense ``[batch, d_sae]`` code where it was built anyway; the
    sparse kernels never build it, so it may be ``None``.
    """

    loss: torch.Tensor
    terms: dict[str, torch.Tensor]
    fired: torch.Tensor
    reconstruction: torch.Tensor
    latents: torch.Tensor | None = None


class Dictionary(nn.Module, ABC):
    """Base class: parameters in SAELens layout, encode/decode, and per-architecture loss.

    ``unit_norm_decoder``: whether training keeps decoder rows at unit norm (projecting the
    row-parallel gradient away and renormalising after each step). Architectures whose
    penalty already accounts for the decoder norm (relu, gated) leave the rows free.
    """

    architecture: ClassVar[str] = ""
    unit_norm_decoder: ClassVar[bool] = True

    def __init__(self, cfg: DictionaryConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.init_parameters()
        self.reset_parameters()

    def init_parameters(self) -> None:
        """Create the parameters (SAELens layout); a family with another layout overrides this."""
        cfg = self.cfg
        self.W_enc = nn.Parameter(torch.empty(cfg.in_features, cfg.d_sae))
        self.b_enc = nn.Parameter(torch.zeros(cfg.d_sae))
        self.W_dec = nn.Parameter(torch.empty(cfg.d_sae, cfg.out_features))
        self.b_dec = nn.Parameter(torch.zeros(cfg.out_features))
        if cfg.skip_connection:
            self.W_skip = nn.Parameter(torch.zeros(cfg.in_features, cfg.out_features))

    def reset_parameters(self) -> None:
        """Unit-norm decoder rows and a tied (transposed) encoder, as Gao et al. and Conerly et al. do;
        a transcoder's encoder reads another space than its decoder writes, so it is drawn apart."""
        with torch.no_grad():
            nn.init.kaiming_uniform_(self.W_dec)
            self.W_dec /= self.W_dec.norm(dim=1, keepdim=True).clamp_min(1e-8)
            if not self.cfg.is_transcoder:
                self.W_enc.copy_(self.W_dec.T)
            else:
                nn.init.kaiming_uniform_(self.W_enc)

    def flatten_input(self, x: torch.Tensor) -> torch.Tensor:
        x = x.reshape(x.shape[0], -1) if x.dim() == 3 else x
        if x.shape[-1] != self.cfg.in_features:
            raise ShapeError(f"input has {x.shape[-1]} features, the dictionary expects "
                             f"{self.cfg.in_features} (n_inputs={self.cfg.n_inputs} x d_in={self.cfg.d_in})",
                             fix="check sae.d_in / sae.n_inputs against the activation store")
        return x

    @property
    def kind(self) -> str:
        """``sae`` (reconstructs its input), ``transcoder`` (predicts another site; skip included)
        or ``clt`` (cross-layer transcoder): what a folder may be loaded as."""
        return "transcoder" if self.cfg.is_transcoder else "sae"

    @property
    def subtracts_b_dec(self) -> bool:
        return self.cfg.apply_b_dec_to_input and not self.cfg.is_transcoder

    def centered_input(self, x: torch.Tensor) -> torch.Tensor:
        """The encoder's input: flattened, minus ``b_dec`` for plain SAEs."""
        x = self.flatten_input(x).to(self.W_enc.dtype)
        return x - self.b_dec if self.subtracts_b_dec else x

    def encoder_matmul(self, x: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        """``centered_input(x) @ W_enc + bias``; with ``fused_encoder`` the bias rides in the matmul
        and ``b_dec`` gets its gradient without a per-token input gradient (``dense.centered_linear``)."""
        if not self.cfg.fused_encoder:
            h = self.centered_input(x) @ self.W_enc
            return h if bias is None else h + bias
        x = self.flatten_input(x).to(self.W_enc.dtype)
        return centered_linear(x, self.W_enc, bias, self.b_dec if self.subtracts_b_dec else None)

    def pre_activation(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder_matmul(x, self.b_enc)

    def dense_decode(self, f: torch.Tensor) -> torch.Tensor:
        """``f @ W_dec + b_dec`` (the bias inside the matmul with ``fused_encoder``)."""
        if self.cfg.fused_encoder:
            return torch.addmm(self.b_dec, f, self.W_dec)
        return f @ self.W_dec + self.b_dec

    def norm_weighted_l1(self, f: torch.Tensor) -> torch.Tensor:
        """Mean over tokens of ``sum_i f_i ||W_dec_i||``, summed over tokens first (one
        reduction over ``[batch, d_sae]`` instead of a product and a reduction)."""
        norms = self.W_dec.norm(dim=1)
        if self.cfg.fused_encoder:
            return f.sum(0) @ norms.to(f.dtype) / f.shape[0]
        return (f * norms).sum(-1).mean()

    def flatten_target(self, x: torch.Tensor, target: torch.Tensor | None) -> torch.Tensor:
        """The reconstruction target as ``[batch, out_features]`` (``x`` itself for an SAE)."""
        y = x if target is None else target
        y = y.reshape(y.shape[0], -1) if y.dim() == 3 else y
        if y.shape[-1] != self.cfg.out_features:
            raise ShapeError(f"target has {y.shape[-1]} features, the dictionary outputs "
                             f"{self.cfg.out_features}",
                             fix="a transcoder needs sae.d_out set to the target width")
        return y.to(self.b_dec.dtype)

    def decode_flat(self, f: torch.Tensor) -> torch.Tensor:
        return self.dense_decode(f)

    def unflatten_output(self, out: torch.Tensor) -> torch.Tensor:
        if self.cfg.n_outputs > 1:
            out = out.reshape(out.shape[0], self.cfg.n_outputs, int(self.cfg.d_out))
        return out

    @abstractmethod
    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Latent activations ``[batch, d_sae]`` (non-negative, sparse)."""

    def decode(self, f: torch.Tensor) -> torch.Tensor:
        return self.unflatten_output(self.decode_flat(f))

    def skip(self, x: torch.Tensor) -> torch.Tensor | float:
        """The transcoder's linear skip path ``x @ W_skip`` (0 when there is none)."""
        if not self.cfg.skip_connection:
            return 0.0
        return self.flatten_input(x).to(self.W_skip.dtype) @ self.W_skip

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.decode_flat(self.encode(x)) + self.skip(x)
        return self.unflatten_output(out)

    def sparsity_scale(self, progress: float) -> float:
        """Linear warm-up factor of the sparsity coefficient (L1/L0) over ``sparsity_warmup``."""
        warm = self.cfg.sparsity_warmup
        return 1.0 if warm <= 0 else min(1.0, progress / warm)

    @staticmethod
    def reconstruction_loss(x_hat: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Squared error summed over features, averaged over the batch."""
        return (x_hat.float() - y.float()).pow(2).sum(-1).mean()

    def optimizer_groups(self, lr: float) -> list[dict[str, Any]]:
        """Parameter groups for the optimiser; architectures with parameters on another scale
        (JumpReLU's thresholds) give those their own learning rate."""
        return [{"params": list(self.parameters()), "lr": lr}]

    @torch.no_grad()
    def post_step(self) -> None:
        """Called after every optimiser step: restore the constraints the step may break."""
        if self.unit_norm_decoder:
            self.normalize_decoder()

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
    def project_decoder_grad(self) -> None:
        """Remove the part of each decoder row's gradient that would change its norm, so the
        optimiser moves rows along the unit sphere (renormalisation then only corrects drift)."""
        if self.W_dec.grad is not None:
            project_rows(self.W_dec.detach(), self.W_dec.grad)

    def input_blocks(self) -> list[int]:
        """Widths of the input blocks that training normalises separately: one for an SAE or a
        transcoder; crosscoders give one per source, since layers and models differ in norm."""
        return [self.cfg.in_features]

    @torch.no_grad()
    def fold_scaling(self, scale: float | torch.Tensor, out_scale: float | torch.Tensor | None = None) -> None:
        """Fold an input scaling ``x_scaled = scale * x`` (and a target scaling
        ``y_scaled = out_scale * y``, default ``scale``) into the weights so the saved
        dictionary takes and returns activations in the model's own units. Either scale may be
        a number or one factor per input (output) feature.

        Pre-activations are unchanged by the fold, so thresholds stay as they are.
        """
        s = torch.as_tensor(scale, dtype=self.W_enc.dtype, device=self.W_enc.device)
        o = s if out_scale is None else torch.as_tensor(out_scale, dtype=self.W_dec.dtype, device=self.W_dec.device)
        s_rows = s[:, None] if s.dim() else s
        self.W_enc.mul_(s_rows)
        self.W_dec.div_(o)
        self.b_dec.div_(o)
        if self.cfg.skip_connection:
            self.W_skip.mul_(s_rows / o)


@torch.no_grad()
def project_rows(w: torch.Tensor, grad: torch.Tensor) -> None:
    """In place, ``grad_i - (grad_i . w_i) w_i / |w_i|^2`` for each row ``i`` (three passes)."""
    sq = torch.linalg.vector_norm(w, dim=1).square_().clamp_min_(1e-16)
    dots = torch.einsum("ij,ij->i", grad, w)
    grad.addcmul_(w, (dots / sq).unsqueeze(1), value=-1.0)


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

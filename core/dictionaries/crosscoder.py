"""Crosscoders (Lindsey et al. 2024, "Sparse Crosscoders for Cross-Layer Features and Model
Diffing"): one set of latents that reads several sources at once (layers of one model, or
several models seeing the same tokens) and writes every one of them back (acausal).

The sources are stacked along the feature axis, ``x = [x_1; ...; x_S]``, and may differ in
width (AntiBERTy 512 and IgLM-S 192): ``W_enc [sum w_s, d_sae]``, ``W_dec [d_sae, sum w_s]``.
Latent ``i``'s decoder for source ``s`` is the block ``W_dec[i, slice_s]``; how much the latent
writes to each source (its per-source decoder norm) is what model diffing reads, so decoders
are left free (no unit norm) and the sparsity terms weigh each latent by the *sum over
sources* of its decoder norms, which also makes them blind to trading encoder for decoder
scale.

Training normalises each source to unit mean squared norm (``Dictionary.input_blocks``: one
factor per source, folded into the weights at save). The factors are kept in the buffer
``source_scale``, so ``source_decoder_norms`` reports norms in the normalised units the
latents were learned in; in model units a source with larger activations would look weaker.
"""

from __future__ import annotations

import torch

from core.dictionaries.base import Dictionary, DictionaryConfig, LossOutput, register
from core.dictionaries.batchtopk import BatchTopKSAE
from core.dictionaries.sparse import ActiveSet
from core.errors import ConfigError


def check_crosscoder_config(cfg: DictionaryConfig) -> None:
    """A crosscoder has at least two sources, writes back every source it reads (``n_outputs``
    defaults to ``n_inputs``), and has no skip."""
    if cfg.n_outputs == 1:
        cfg.n_outputs = cfg.n_inputs
    if cfg.n_inputs < 2:
        raise ConfigError(f"architecture {cfg.architecture!r} needs at least two sources, got sae.n_inputs="
                          f"{cfg.n_inputs}", fix="stack two or more aligned stores (data.root=[A, B])")
    if cfg.n_outputs != cfg.n_inputs or (not cfg.source_widths and int(cfg.d_out) != cfg.d_in):
        raise ConfigError(f"an acausal crosscoder writes back every source it reads: n_outputs={cfg.n_outputs} "
                          f"and d_out={cfg.d_out} must equal n_inputs={cfg.n_inputs} and d_in={cfg.d_in}",
                          fix="drop sae.n_outputs and sae.d_out")
    if cfg.skip_connection:
        raise ConfigError("crosscoders have no skip connection", fix="set sae.skip_connection=false")


class Crosscoder(Dictionary):
    """What both crosscoders share: the source blocks, per-source decoder norms and scales."""

    unit_norm_decoder = False

    def __init__(self, cfg: DictionaryConfig) -> None:
        check_crosscoder_config(cfg)
        super().__init__(cfg)
        self.register_buffer("source_scale", torch.ones(cfg.n_inputs, dtype=torch.float32))

    @property
    def kind(self) -> str:
        return "crosscoder"

    @property
    def source_widths(self) -> list[int]:
        return list(self.cfg.source_widths or [self.cfg.d_in] * self.cfg.n_inputs)

    def source_slices(self) -> list[slice]:
        out, start = [], 0
        for w in self.source_widths:
            out.append(slice(start, start + w))
            start += w
        return out

    def input_blocks(self) -> list[int]:
        return self.source_widths

    def split_sources(self, t: torch.Tensor) -> list[torch.Tensor]:
        """A ``[batch, sum w_s]`` (or ``[batch, S, d]``) tensor as one ``[batch, w_s]`` tensor per source."""
        flat = t.reshape(t.shape[0], -1)
        return list(flat.split(self.source_widths, dim=1))

    def source_decoder_norms(self) -> torch.Tensor:
        """``[n_sources, d_sae]``: each latent's decoder norm per source, in normalised units."""
        norms = torch.stack([torch.linalg.vector_norm(self.W_dec[:, sl], dim=1) for sl in self.source_slices()])
        return norms * self.source_scale.to(norms.dtype)[:, None]

    def decoder_norm_sum(self) -> torch.Tensor:
        """``[d_sae]``: the sum over sources of each latent's decoder norm (the crosscoder's weight)."""
        return self.source_decoder_norms().sum(0)

    def unflatten_output(self, out: torch.Tensor) -> torch.Tensor:
        widths = self.source_widths
        return out.reshape(out.shape[0], len(widths), widths[0]) if len(set(widths)) == 1 else out

    @torch.no_grad()
    def fold_scaling(self, scale: float | torch.Tensor, out_scale: float | torch.Tensor | None = None) -> None:
        super().fold_scaling(scale, out_scale)
        s = torch.as_tensor(scale, dtype=torch.float32).reshape(-1)
        if s.numel() == 1:
            s = s.expand(self.cfg.in_features)
        starts = torch.as_tensor([sl.start for sl in self.source_slices()])
        self.source_scale.mul_(s[starts].to(self.source_scale.device))


@register("crosscoder_l1")
class L1Crosscoder(Crosscoder):
    """The crosscoder of Anthropic's notes (Lindsey et al. 2024; Dec 2024 update): ReLU latents,
    loss ``sum_s ||x_s - x_hat_s||^2 + lambda * sum_i f_i * sum_s ||W_dec[i, s]||``. The penalty is
    the per-source norm *sum* (an L1 over sources), not the norm of the concatenated decoder, so
    writing to one source costs less than writing to two: exclusive latents are cheap."""

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.pre_activation(x))

    def loss(self, x: torch.Tensor, target: torch.Tensor | None = None, *,
             dead_mask: torch.Tensor | None = None, progress: float = 1.0) -> LossOutput:
        y = self.flatten_target(x, target)
        f = self.encode(x)
        x_hat = self.dense_decode(f)
        mse = self.reconstruction_loss(x_hat, y)
        penalty = f.sum(0) @ self.decoder_norm_sum().to(f.dtype) / f.shape[0]
        coef = self.cfg.l1_coefficient * self.sparsity_scale(progress)
        on = f.detach() > 0
        return LossOutput(loss=mse + coef * penalty,
                          terms={"mse": mse.detach(), "l1": penalty.detach(), "l0": on.sum(-1).float().mean()},
                          fired=on.sum(0), reconstruction=x_hat, latents=f)


@register("crosscoder_batchtopk")
class BatchTopKCrosscoder(Crosscoder, BatchTopKSAE):
    """The BatchTopK crosscoder of Minder et al. 2025 ("Overcoming sparsity artifacts in
    crosscoders"): the ``k * batch`` largest values of ``f_i * sum_s ||W_dec[i, s]||`` over the
    batch are kept (so the choice does not depend on how a latent splits its scale between
    encoder and decoder), with AuxK for dead latents and one learned threshold on that same
    score at inference. No L1 term, hence no pressure to shrink a latent's decoder in a source
    where it helps a little: the artifacts the paper traces to the L1 loss."""

    def selection_weights(self) -> torch.Tensor:
        return self.decoder_norm_sum().detach()

    def select(self, pre: torch.Tensor, k: int) -> ActiveSet:
        w = self.selection_weights().to(pre.dtype)
        if self.training and pre.device.type == "cpu" and not torch.compiler.is_compiling():
            score = torch.mul(pre, w, out=self._scratch.get("score", tuple(pre.shape), pre))
        else:
            score = pre * w
        return super().select(score, k)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:
            return super().encode(x)
        pre = self.pre_activation(x)
        score = pre * self.selection_weights().to(pre.dtype)
        return pre * (score > self.threshold.to(pre.dtype))

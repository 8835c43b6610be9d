"""TopK SAE (Gao et al. 2024, "Scaling and evaluating sparse autoencoders").

Each token keeps its ``k`` largest pre-activations; sparsity is fixed by construction, so
the loss is the reconstruction alone plus the AuxK term that gives dead latents a gradient:
the top ``k_aux`` dead latents are asked to reconstruct the residual error.
"""

from __future__ import annotations

import torch

from core.dictionaries.base import Dictionary, DictionaryConfig, LossOutput, register
from core.dictionaries.scratch import Scratch
from core.dictionaries.sparse import ActiveSet, gather_preactivation, sparse_decode
from core.errors import ConfigError


def dead_topk(pre: torch.Tensor, dead_mask: torch.Tensor, k_aux: int) -> torch.Tensor:
    """Per token, the indices of the ``k_aux`` largest pre-activations among dead latents.

    When fewer than half the latents are dead only their columns are read (a gather and a
    narrower top-k) instead of masking the whole ``[batch, d_sae]`` matrix.
    """
    dead_mask = dead_mask.to(pre.device)
    dead_idx = dead_mask.nonzero().squeeze(1)
    if 2 * dead_idx.numel() < pre.shape[1]:
        idx = pre.index_select(1, dead_idx).topk(k_aux, dim=-1).indices
        return dead_idx[idx]
    return pre.masked_fill(~dead_mask, float("-inf")).topk(k_aux, dim=-1).indices


def auxk_loss(sae: Dictionary, xc: torch.Tensor, pre: torch.Tensor, residual: torch.Tensor,
              dead_mask: torch.Tensor | None, *, center: torch.Tensor | None = None) -> torch.Tensor:
    """Gao et al.'s AuxK: dead latents' top ``k_aux`` reconstruct the residual, normalised by
    the residual's variance. Zero when no latent is dead.

    ``center``: when given, ``xc`` is the raw input and the sparse kernel subtracts ``center``
    itself (see ``gather_preactivation``)."""
    zero = residual.new_zeros(())
    if dead_mask is None:
        return zero
    n_dead = int(dead_mask.sum())
    if n_dead == 0:
        return zero
    k_aux = min(sae.cfg.aux_k or max(1, sae.cfg.out_features // 2), n_dead)
    if sae.cfg.sparse_decode:
        idx = dead_topk(pre.detach(), dead_mask, k_aux)
        active = ActiveSet.from_topk(idx, sae.cfg.d_sae)
        vals = torch.relu(gather_preactivation(xc, sae.W_enc, sae.b_enc, pre, active, center=center))
        e_hat = sparse_decode(vals, sae.W_dec, active)
    else:
        masked = pre.detach().masked_fill(~dead_mask.to(pre.device), float("-inf"))
        idx = masked.topk(k_aux, dim=-1).indices
        f = torch.zeros_like(pre).scatter(-1, idx, torch.relu(pre.gather(-1, idx)))
        e_hat = f @ sae.W_dec
    residual = residual.detach().float()
    denom = (residual - residual.mean(0)).pow(2).sum(-1).mean().clamp_min(1e-8)
    loss = (e_hat.float() - residual).pow(2).sum(-1).mean() / denom
    return torch.nan_to_num(loss, nan=0.0)


class TopKFamily(Dictionary):
    """Shared machinery: a selection rule over pre-activations, dense or sparse decoding, AuxK.

    ``reuse_preactivations``: on the CPU, while training, the sparse path writes each step's
    pre-activations into one reused tensor (see ``core.dictionaries.scratch``); switch it off
    to allocate afresh, as the GPU path always does."""

    reuse_preactivations: bool = True

    def __init__(self, cfg: DictionaryConfig) -> None:
        if not cfg.k or cfg.k <= 0:
            raise ConfigError(f"architecture {cfg.architecture!r} needs a positive sae.k, got {cfg.k}",
                              fix="set sae.k (active latents per token), e.g. sae.k=32")
        if cfg.k > cfg.d_sae:
            raise ConfigError(f"sae.k={cfg.k} exceeds sae.d_sae={cfg.d_sae}", fix="lower sae.k")
        super().__init__(cfg)
        self._scratch = Scratch()

    def _preactivation_out(self, n_rows: int) -> torch.Tensor | None:
        """The reused ``[n_rows, d_sae]`` tensor for ``addmm(out=...)``, or None to allocate.

        Its dtype is the autocast compute dtype when CPU autocast is on (``bf16-mixed``):
        ``addmm(out=...)`` into an fp32 tensor would silently run the product in fp32."""
        if (not self.reuse_preactivations or not self.training or self.W_enc.device.type != "cpu"
                or torch.compiler.is_compiling()):
            return None
        dtype = torch.get_autocast_dtype("cpu") if torch.is_autocast_enabled("cpu") else self.W_enc.dtype
        return self._scratch.get("pre", (n_rows, self.cfg.d_sae), self.W_enc, dtype=dtype)

    def encoder_preactivation(self, xin: torch.Tensor) -> torch.Tensor:
        """``xin @ W_enc + b_enc`` (no gradient), into the reused tensor where there is one; its
        dtype is what autocast would give (the operands are cast to the buffer's dtype)."""
        out = self._preactivation_out(xin.shape[0])
        if out is None:
            return torch.addmm(self.b_enc, xin, self.W_enc)
        dt = out.dtype
        return torch.addmm(self.b_enc.to(dt), xin.to(dt), self.W_enc.to(dt), out=out)

    def current_k(self, progress: float) -> int:
        """``k`` for this point of training: annealed linearly from ``k_anneal_from`` if set."""
        start = self.cfg.k_anneal_from
        if not start or self.cfg.k_anneal_fraction <= 0:
            return int(self.cfg.k)
        t = min(1.0, progress / self.cfg.k_anneal_fraction)
        return int(round(start + (self.cfg.k - start) * t))

    def select(self, pre: torch.Tensor, k: int) -> ActiveSet:
        """Active coordinates chosen from detached pre-activations."""
        idx = pre.topk(k, dim=-1).indices
        return ActiveSet.from_topk(idx, self.cfg.d_sae)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        pre = self.pre_activation(x)
        with torch.no_grad():
            active = self.select(pre.detach(), int(self.cfg.k))
        vals = torch.relu(pre[active.rows, active.cols])
        return active.to_dense(vals)

    def reconstruct_terms(self, y: torch.Tensor, vals: torch.Tensor, active: ActiveSet,
                          f: torch.Tensor | None, skip) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Reconstruction and its loss terms; Matryoshka overrides this to sum over prefixes."""
        if f is None:
            x_hat = sparse_decode(vals, self.W_dec, active) + self.b_dec + skip
        else:
            x_hat = f @ self.W_dec + self.b_dec + skip
        mse = self.reconstruction_loss(x_hat, y)
        return x_hat, {"mse": mse, "recon": mse}

    def loss(self, x: torch.Tensor, target: torch.Tensor | None = None, *,
             dead_mask: torch.Tensor | None = None, progress: float = 1.0) -> LossOutput:
        y = self.flatten_target(x, target)
        k = self.current_k(progress)
        self.progress = progress
        center = None
        if self.cfg.sparse_decode:
            xc = self.flatten_input(x).to(self.W_enc.dtype)
            center = self.b_dec if self.subtracts_b_dec else None
            with torch.no_grad():
                pre = self.encoder_preactivation(xc if center is None else xc - center)
                active = self.select(pre, k)
            vals = torch.relu(gather_preactivation(xc, self.W_enc, self.b_enc, pre, active, center=center))
            f = None
        else:
            xc = self.centered_input(x)
            pre = xc @ self.W_enc + self.b_enc
            with torch.no_grad():
                active = self.select(pre.detach(), k)
            vals = torch.relu(pre[active.rows, active.cols])
            f = active.to_dense(vals)
        x_hat, terms = self.reconstruct_terms(y, vals, active, f, self.skip(x))
        aux = auxk_loss(self, xc, pre, y - x_hat, dead_mask, center=center)
        loss = terms["recon"] + self.cfg.aux_coefficient * aux
        on = vals.detach() > 0
        fired = torch.bincount(active.cols[on], minlength=self.cfg.d_sae)
        terms.update({"aux": aux.detach(), "l0": on.sum() / y.shape[0]})
        return LossOutput(loss=loss, terms={n: t.detach() for n, t in terms.items()}, fired=fired,
                          reconstruction=x_hat, latents=f)


@register("topk")
class TopKSAE(TopKFamily):
    """Exactly the ``k`` largest pre-activations of every token (ReLU'd) are kept."""

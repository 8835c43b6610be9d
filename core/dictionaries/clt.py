"""Cross-layer transcoders (CLT; Ameisen et al. 2025, "Circuit Tracing", Anthropic).

An encoder per layer reads that layer's MLP input; the latents of layer ``l`` decode into the
MLP outputs of layer ``l`` and of every later layer of the range, never an earlier one (there
is no parameter that could). Shapes, for ``L`` layers and ``m = d_sae / L`` latents per layer:
input ``[batch, L, d_in]`` (the MLP inputs, layer-major), latents ``[batch, L * m]`` (layer
``l``'s at ``l*m:(l+1)*m``), output ``[batch, L, d_out]``. The loss is the sum over layers of
each layer's squared error (``reconstruction_loss`` over the flattened output).

Parameters, in the layout of circuit-tracer's CLT files (``core.checkpoint.clt``):
``W_enc [L, d_in, m]``, ``b_enc [L*m]``, ``W_dec.l [m, L-l, d_out]`` for each source layer,
``b_dec [L*d_out]``, optional per-layer skip ``W_skip [L, d_in, d_out]``.

Memory: ``L*m*(d_in + 1) + m*d_out*L(L+1)/2 + L*d_out`` parameters (plus ``L*d_in*d_out`` with
the skip): the decoder grows as ``L(L+1)/2`` blocks where ``L`` per-layer transcoders hold
``L``. Training in fp32 with Adam keeps weights, gradients and two moments, 16 bytes per
parameter. SmolLM2-135M (d 576) over all 30 layers at m = 4,608: decoder 4,608 x 576 x 465 =
1.23e9 parameters, 19.7 GB to train; 30 per-layer transcoders of that size hold 0.16e9.

Sparsity, one registered class each: ``clt_topk`` (each layer keeps its ``k`` largest per
token), ``clt_batchtopk`` (each layer keeps the ``k * batch`` largest of the batch; one learned
inference threshold per layer, so the saved folder reads as a JumpReLU CLT) and ``clt_relu``
(ReLU with ``l1_coefficient * sum_l,i f_li ||concatenated decoder row of (l, i)||``). The TopK
rules hold each latent's concatenated decoder row at unit norm; ReLU leaves it free.
"""

from __future__ import annotations

import dataclasses
from types import SimpleNamespace
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from core.dictionaries.base import Dictionary, DictionaryConfig, LossOutput, project_rows, register
from core.dictionaries.batchtopk import batch_select
from core.dictionaries.sparse import ActiveSet, gather_preactivation, sparse_decode
from core.dictionaries.topk import auxk_loss
from core.errors import ConfigError


class CrossLayerTranscoder(Dictionary):
    sparsity: ClassVar[str] = "topk"

    def __init__(self, cfg: DictionaryConfig) -> None:
        L = int(cfg.n_inputs)  # noqa: N806
        if int(cfg.n_outputs) != L:
            raise ConfigError(f"a cross-layer transcoder writes the layers it reads: n_inputs={L}, "
                              f"n_outputs={cfg.n_outputs}", fix="set sae.n_outputs equal to sae.n_inputs")
        if cfg.d_sae % L:
            raise ConfigError(f"sae.d_sae={cfg.d_sae} is not a multiple of the {L} layers",
                              fix=f"set sae.d_sae to layers x latents per layer, e.g. {L * (cfg.d_sae // L or 1)}")
        if self.sparsity != "relu" and not (cfg.k and 0 < cfg.k <= cfg.d_sae // L):
            raise ConfigError(f"{cfg.architecture} needs 0 < sae.k <= latents per layer ({cfg.d_sae // L}), got {cfg.k}",
                              fix="set sae.k (active latents per layer and token)")
        super().__init__(dataclasses.replace(cfg, transcoder=True))
        if self.sparsity == "batchtopk":
            self.register_buffer("threshold", torch.zeros(cfg.d_sae, dtype=torch.float32))
            self.register_buffer("threshold_updates", torch.zeros(L, dtype=torch.long))

    @property
    def kind(self) -> str:
        return "clt"

    @property
    def n_layers(self) -> int:
        return int(self.cfg.n_inputs)

    @property
    def per_layer(self) -> int:
        return self.cfg.d_sae // self.n_layers

    def init_parameters(self) -> None:
        cfg, L, m = self.cfg, self.n_layers, self.per_layer  # noqa: N806
        d_out = int(cfg.d_out)
        self.W_enc = nn.Parameter(torch.empty(L, cfg.d_in, m))
        self.b_enc = nn.Parameter(torch.zeros(L * m))
        self.W_dec = nn.ParameterList([nn.Parameter(torch.empty(m, L - i, d_out)) for i in range(L)])
        self.b_dec = nn.Parameter(torch.zeros(L * d_out))
        if cfg.skip_connection:
            self.W_skip = nn.Parameter(torch.zeros(L, cfg.d_in, d_out))

    def reset_parameters(self) -> None:
        """Random unit encoder directions per layer and unit-norm concatenated decoder rows."""
        with torch.no_grad():
            self.W_enc.normal_()
            self.W_enc /= self.W_enc.norm(dim=1, keepdim=True).clamp_min(1e-8)
            for w in self.W_dec:
                w.normal_()
            self.normalize_decoder()

    def rows(self, layer: int) -> torch.Tensor:
        """Layer ``layer``'s decoder as ``[m, (L - layer) * d_out]`` (a view: one row per latent)."""
        return self.W_dec[layer].view(self.per_layer, -1)

    def decoder_norms(self) -> torch.Tensor:
        """``[L*m]``: each latent's concatenated decoder row norm over the layers it writes."""
        return torch.cat([self.rows(i).norm(dim=1) for i in range(self.n_layers)])

    def layer_inputs(self, x: torch.Tensor) -> torch.Tensor:
        return self.flatten_input(x).to(self.W_enc.dtype).view(x.shape[0], self.n_layers, self.cfg.d_in)

    def _b_enc(self, layer: int) -> torch.Tensor:
        return self.b_enc[layer * self.per_layer:(layer + 1) * self.per_layer]

    def _select(self, layer: int, pre: torch.Tensor, progress: float) -> ActiveSet:
        k = int(self.cfg.k)
        warm = self.training and progress < self.cfg.batchtopk_token_warmup
        if self.sparsity == "topk" or warm:
            return ActiveSet.from_topk(pre.topk(k, dim=-1).indices, self.per_layer)
        active, smallest = batch_select(pre, k)
        if self.training and smallest is not None:
            self._update_threshold(layer, smallest)
        return active

    @torch.no_grad()
    def _update_threshold(self, layer: int, smallest: torch.Tensor) -> None:
        n = int(self.threshold_updates[layer])
        decay = min(self.cfg.threshold_decay, n / (n + 1))
        part = self.threshold[layer * self.per_layer:(layer + 1) * self.per_layer]
        part.mul_(decay).add_((1 - decay) * smallest.float())
        self.threshold_updates[layer] += 1

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        xs = self.layer_inputs(x)
        L, m = self.n_layers, self.per_layer  # noqa: N806
        pre = torch.baddbmm(self.b_enc.view(L, 1, m), xs.transpose(0, 1), self.W_enc)  # [L, B, m]
        if self.sparsity == "relu":
            f = torch.relu(pre)
        elif self.sparsity == "batchtopk" and not self.training:
            f = pre * (pre > self.threshold.view(L, 1, m).to(pre.dtype))
        else:
            parts = []
            for layer in range(L):
                with torch.no_grad():
                    active = self._select(layer, pre[layer].detach(), 1.0)
                parts.append(active.to_dense(torch.relu(pre[layer][active.rows, active.cols])))
            f = torch.stack(parts)
        return f.transpose(0, 1).reshape(x.shape[0], L * m)

    def _place(self, layer: int, contrib: torch.Tensor) -> torch.Tensor:
        """A source layer's ``[B, (L-layer)*d_out]`` contribution, zero-padded onto every layer."""
        return F.pad(contrib, (layer * int(self.cfg.d_out), 0))

    def decode_flat(self, f: torch.Tensor) -> torch.Tensor:
        f = f.view(f.shape[0], self.n_layers, self.per_layer).to(self.b_dec.dtype)
        out = self.b_dec.expand(f.shape[0], -1)
        for layer in range(self.n_layers):
            out = out + self._place(layer, f[:, layer] @ self.rows(layer))
        return out

    def dense_decode(self, f: torch.Tensor) -> torch.Tensor:
        return self.decode_flat(f)

    def skip(self, x: torch.Tensor) -> torch.Tensor | float:
        if not self.cfg.skip_connection:
            return 0.0
        out = torch.einsum("bld,lde->ble", self.layer_inputs(x).to(self.W_skip.dtype), self.W_skip)
        return out.reshape(x.shape[0], -1)

    def _aux(self, layer: int, xl: torch.Tensor, pre: torch.Tensor, residual: torch.Tensor,
             dead_mask: torch.Tensor | None) -> torch.Tensor:
        """Gao et al.'s AuxK for one source layer: its dead latents predict the residual of
        the layers it writes (``auxk_loss`` on a view of that layer's weights)."""
        m, d_out = self.per_layer, int(self.cfg.d_out)
        view = SimpleNamespace(
            cfg=SimpleNamespace(aux_k=self.cfg.aux_k, sparse_decode=self.cfg.sparse_decode, d_sae=m,
                                out_features=(self.n_layers - layer) * d_out),
            W_enc=self.W_enc[layer], b_enc=self._b_enc(layer), W_dec=self.rows(layer))
        dead = None if dead_mask is None else dead_mask[layer * m:(layer + 1) * m]
        return auxk_loss(view, xl, pre, residual[:, layer * d_out:], dead)

    def loss(self, x: torch.Tensor, target: torch.Tensor | None = None, *,
             dead_mask: torch.Tensor | None = None, progress: float = 1.0) -> LossOutput:
        y = self.flatten_target(x, target)
        xs = self.layer_inputs(x)
        x_hat = self.b_dec + self.skip(x)
        fired, pres, l0 = [], [], y.new_zeros(())
        penalty = y.new_zeros(())
        for layer in range(self.n_layers):
            xl, w, b = xs[:, layer], self.W_enc[layer], self._b_enc(layer)
            if self.sparsity == "relu":
                f = torch.relu(torch.addmm(b, xl, w))
                contrib = f @ self.rows(layer)
                penalty = penalty + f.sum(0) @ self.rows(layer).norm(dim=1) / f.shape[0]
                on = f.detach() > 0
                fired.append(on.sum(0))
                l0 = l0 + on.sum() / y.shape[0]
            else:
                with torch.no_grad():
                    pre = torch.addmm(b, xl, w)
                    active = self._select(layer, pre, progress)
                if self.cfg.sparse_decode:
                    vals = torch.relu(gather_preactivation(xl, w, b, pre, active))
                    contrib = sparse_decode(vals, self.rows(layer), active)
                else:
                    vals = torch.relu(torch.addmm(b, xl, w)[active.rows, active.cols])
                    contrib = active.to_dense(vals) @ self.rows(layer)
                on = vals.detach() > 0
                fired.append(torch.bincount(active.cols[on], minlength=self.per_layer))
                l0 = l0 + on.sum() / y.shape[0]
                pres.append(pre)
            x_hat = x_hat + self._place(layer, contrib)
        mse = self.reconstruction_loss(x_hat, y)
        terms = {"mse": mse, "l0": l0}
        if self.sparsity == "relu":
            coef = self.cfg.l1_coefficient * self.sparsity_scale(progress)
            loss = mse + coef * penalty
            terms["l1"] = penalty
        else:
            residual = y - x_hat
            aux = torch.stack([self._aux(layer, xs[:, layer], pres[layer], residual, dead_mask)
                               for layer in range(self.n_layers)]).mean()
            loss = mse + self.cfg.aux_coefficient * aux
            terms["aux"] = aux
        return LossOutput(loss=loss, terms={n: t.detach() for n, t in terms.items()},
                          fired=torch.cat(fired), reconstruction=x_hat)

    def norm_weighted_l1(self, f: torch.Tensor) -> torch.Tensor:
        return f.sum(0) @ self.decoder_norms().to(f.dtype) / f.shape[0]

    @torch.no_grad()
    def normalize_decoder(self) -> None:
        for layer in range(self.n_layers):
            rows = self.rows(layer)
            rows.div_(rows.norm(dim=1, keepdim=True).clamp_min(1e-8))

    @torch.no_grad()
    def project_decoder_grad(self) -> None:
        for layer, w in enumerate(self.W_dec):
            if w.grad is not None:
                project_rows(self.rows(layer).detach(), w.grad.view(self.per_layer, -1))

    @torch.no_grad()
    def fold_scaling(self, scale: float, out_scale: float | None = None) -> None:
        out_scale = scale if out_scale is None else out_scale
        self.W_enc.mul_(scale)
        for w in self.W_dec:
            w.div_(out_scale)
        self.b_dec.div_(out_scale)
        if self.cfg.skip_connection:
            self.W_skip.mul_(scale / out_scale)

    def predict_layer(self, target: int, latents: list[torch.Tensor], x_target: torch.Tensor | None = None) -> torch.Tensor:
        """Layer ``target``'s predicted MLP output ``[n, d_out]`` from the latents of layers
        ``0..target`` (``latents[l]``: ``[n, m]``) and, with a skip, that layer's input."""
        d = int(self.cfg.d_out)
        out = self.b_dec[target * d:(target + 1) * d]
        for layer in range(target + 1):
            out = out + latents[layer].to(self.b_dec.dtype) @ self.W_dec[layer][:, target - layer]
        if self.cfg.skip_connection and x_target is not None:
            out = out + x_target.to(self.W_skip.dtype) @ self.W_skip[target]
        return out

    def layer_view(self, layer: int) -> CLTLayer:
        """Layer ``layer``'s encoder as a one-input dictionary (for enrichment and feature views)."""
        if not 0 <= layer < self.n_layers:
            raise ConfigError(f"layer {layer} is outside this CLT's {self.n_layers} layers",
                              fix=f"use 0..{self.n_layers - 1} (positions within the CLT's layer range)")
        return CLTLayer(self, layer)


class CLTLayer(nn.Module):
    """One layer of a CLT seen as a single-input dictionary: ``encode`` gives that layer's
    ``m`` latents, ``W_dec`` their concatenated decoder rows ``[m, (L - layer) * d_out]``."""

    def __init__(self, clt: CrossLayerTranscoder, layer: int) -> None:
        super().__init__()
        self.clt, self.layer = clt, int(layer)
        self.cfg = dataclasses.replace(clt.cfg, n_inputs=1, n_outputs=clt.n_layers - layer, d_sae=clt.per_layer)

    @property
    def W_dec(self) -> torch.Tensor:  # noqa: N802
        return self.clt.rows(self.layer)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        x = x.reshape(x.shape[0], -1).to(self.clt.W_enc.dtype)
        pre = torch.addmm(self.clt._b_enc(self.layer), x, self.clt.W_enc[self.layer])
        rule = self.clt.sparsity
        if rule == "relu":
            return torch.relu(pre)
        if rule == "batchtopk":
            m = self.clt.per_layer
            t = self.clt.threshold[self.layer * m:(self.layer + 1) * m]
            return pre * (pre > t.to(pre.dtype))
        vals, idx = pre.topk(int(self.clt.cfg.k), dim=-1)
        return torch.zeros_like(pre).scatter(-1, idx, torch.relu(vals))


@register("clt_topk")
class TopKCLT(CrossLayerTranscoder):
    sparsity = "topk"


@register("clt_batchtopk")
class BatchTopKCLT(CrossLayerTranscoder):
    sparsity = "batchtopk"


@register("clt_relu")
class ReLUCLT(CrossLayerTranscoder):
    sparsity = "relu"
    unit_norm_decoder = False

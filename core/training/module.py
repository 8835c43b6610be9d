"""One LightningModule for every dictionary architecture.

The architecture owns its loss (``Dictionary.loss``); this module owns what is common:
input scaling, the learning-rate schedule, dead-latent counting (tokens since each latent
last fired, fed back to the loss as ``dead_mask`` for AuxK), the decoder-gradient projection
before each step and the architecture's constraints (``post_step``) after it.
"""

from __future__ import annotations

import math
from typing import Any

import lightning as L
import torch

from core.dictionaries.base import Dictionary
from core.training import optimizers as optim


def lr_lambda(step: int, *, total_steps: int, warmup_steps: int, decay_fraction: float) -> float:
    """Linear warm-up, constant, then linear decay to zero over the last ``decay_fraction``."""
    if warmup_steps > 0 and step < warmup_steps:
        return (step + 1) / warmup_steps
    decay_steps = int(total_steps * decay_fraction)
    if decay_steps <= 0:
        return 1.0
    start = total_steps - decay_steps
    if step < start:
        return 1.0
    return max(0.0, (total_steps - step) / decay_steps)


def split_batch(batch: Any) -> tuple[torch.Tensor, torch.Tensor | None]:
    """A batch is ``x`` (SAE, crosscoder) or ``(x, target)`` (transcoder)."""
    if isinstance(batch, (tuple, list)):
        return batch[0], (batch[1] if len(batch) > 1 else None)
    if isinstance(batch, dict):
        return batch["acts"], batch.get("target")
    return batch, None


class DictionaryModule(L.LightningModule):
    def __init__(self, sae: Dictionary, *, lr: float, total_steps: int, scale: float | torch.Tensor = 1.0,
                 target_scale: float | torch.Tensor | None = None, warmup_steps: int = 0, decay_fraction: float = 0.2,
                 betas: tuple[float, float] = (0.9, 0.999), dead_after_tokens: int | None = None,
                 fused_optimizer: bool = True, optimizer: str = "adam", compile: bool = False) -> None:
        super().__init__()
        optim.check_optimizer(optimizer)
        self.fused_optimizer = bool(fused_optimizer)
        self.optimizer_name = optimizer
        self.compile = bool(compile)
        self._train_loss = None
        self._params_are_train: bool | None = None
        self.sae = sae
        self.lr = float(lr)
        self.total_steps = max(1, int(total_steps))
        self.warmup_steps = int(warmup_steps)
        self.decay_fraction = float(decay_fraction)
        self.betas = tuple(betas)
        self.dead_after_tokens = int(dead_after_tokens or sae.cfg.dead_after_tokens)
        target_scale = scale if target_scale is None else target_scale
        self.register_buffer("scale", torch.as_tensor(scale, dtype=torch.float64).clone())
        self.register_buffer("target_scale", torch.as_tensor(target_scale, dtype=torch.float64).clone())
        self.register_buffer("tokens_since_fired", torch.zeros(sae.cfg.d_sae, dtype=torch.long))
        self.register_buffer("tokens_seen", torch.zeros((), dtype=torch.long))

    def dead_mask(self) -> torch.Tensor:
        return self.tokens_since_fired >= self.dead_after_tokens

    def progress(self) -> float:
        return min(1.0, self.global_step / self.total_steps)

    def scaled(self, batch: Any) -> tuple[torch.Tensor, torch.Tensor | None]:
        x, y = split_batch(batch)
        if self.scale.dim():  # one factor per feature (crosscoders): scale the flattened rows
            x = x.reshape(x.shape[0], -1)
        x = x.float() * self.scale.float()  # a tensor: no device-to-host sync per step on a GPU
        if y is not None:
            if self.target_scale.dim():
                y = y.reshape(y.shape[0], -1)
            y = y.float() * self.target_scale.float()
        return x, y

    def _log_due(self) -> bool:
        """Whether this step's training metrics are logged: every ``log_every_n_steps`` and at the
        last step. Seven ``self.log`` calls cost ~4.8 ms of host time a step on the 2-core CPU
        (a tiny SAE's step fell from 11.4 to 6.6 ms), a third of a 13 ms TopK step on an H200."""
        trainer = self._trainer
        if trainer is None:
            return True
        step = self.global_step + 1
        return step % max(1, int(trainer.log_every_n_steps)) == 0 or step >= self.total_steps

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, y = self.scaled(batch)
        out = self.train_loss(x, y, dead_mask=self.dead_mask(), progress=self.progress())
        self._count_fires(out.fired, x.shape[0])
        if not self._log_due():
            return out.loss
        n = x.shape[0]
        self.log("train/loss", out.loss.detach(), prog_bar=True, batch_size=n)
        for name, value in out.terms.items():
            self.log(f"train/{name}", value.float(), prog_bar=name in ("mse", "l0"), batch_size=n)
        self.log("train/dead_frac", self.dead_mask().float().mean(), batch_size=n)
        self.log("train/lr", self.optimizers().param_groups[0]["lr"], batch_size=n)
        return out.loss

    @property
    def train_loss(self):
        """``sae.loss``, through ``torch.compile`` when asked (compiled on first use, on its device).

        Measured on the 2-core CPU, d_sae 4,608, batch 4096 (``bench/train_throughput.py
        --compile``, bench/README.md): gated 1.25x and ReLU 1.19x per step after 5-8 s of
        compiling, the TopK family and JumpReLU 0.92-1.06x (their selection and sparse-decoder
        kernels are hand-fused already), so it is off by default. Dynamo recompiles once, when
        ``progress`` first leaves 0.0.
        """
        if not self.compile:
            return self.sae.loss
        if self._train_loss is None:
            self._train_loss = torch.compile(self.sae.loss)
        return self._train_loss

    @torch.no_grad()
    def _count_fires(self, fired: torch.Tensor, n_tokens: int) -> None:
        fired = fired.to(self.tokens_since_fired.device)
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            fired = fired.clone()
            torch.distributed.all_reduce(fired)
            n_tokens *= torch.distributed.get_world_size()
        self.tokens_since_fired += n_tokens
        self.tokens_since_fired.masked_fill_(fired > 0, 0)
        self.tokens_seen += n_tokens

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        x, y = self.scaled(batch)
        out = self.sae.loss(x, y, progress=1.0)
        target = self.sae.flatten_target(x, y)
        var = (target - target.mean(0)).pow(2).sum(-1).mean().clamp_min(1e-12)
        n = x.shape[0]
        self.log("val/mse", out.terms["mse"].float(), batch_size=n, sync_dist=True)
        self.log("val/fvu", out.terms["mse"].float() / var, batch_size=n, prog_bar=True, sync_dist=True)
        self.log("val/l0", out.terms["l0"].float(), batch_size=n, sync_dist=True)

    def on_before_optimizer_step(self, optimizer) -> None:
        if self.sae.unit_norm_decoder:
            self.sae.project_decoder_grad()

    def optimizer_step(self, *args, **kwargs) -> None:
        super().optimizer_step(*args, **kwargs)
        self.sae.post_step()

    def _raw_optimizer(self):
        opt = self.optimizers(use_pl_optimizer=False)
        return opt[0] if isinstance(opt, list) else opt

    def on_train_start(self) -> None:
        optim.set_mode(self._raw_optimizer(), True, params_are_train=self._params_are_train)

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        if self.optimizer_name in optim.SCHEDULE_FREE:
            factor = lr_lambda(self.global_step, total_steps=self.total_steps,
                               warmup_steps=self.warmup_steps, decay_fraction=0.0)
            for group, lr in zip(self._raw_optimizer().param_groups, self._group_lrs, strict=True):
                group["lr"] = lr * factor

    def _fitting(self) -> bool:
        return self._trainer is not None and self.trainer.state.fn == "fit"

    def on_validation_start(self) -> None:
        """Validate the model a schedule-free run would return (``x``), then go back to ``y``."""
        if self._fitting():
            optim.set_mode(self._raw_optimizer(), False)

    def on_validation_end(self) -> None:
        if self._fitting():
            optim.set_mode(self._raw_optimizer(), True)

    def on_train_end(self) -> None:
        """Leave the model (schedule-free: the average ``x``) in the parameters, constraints met."""
        opt = self._raw_optimizer()
        if optim.is_schedule_free(opt):
            optim.set_mode(opt, False)
            self.sae.post_step()

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        opt = self._raw_optimizer() if self._trainer is not None else None
        if opt is not None and optim.is_schedule_free(opt):
            checkpoint["schedule_free_params_are_train"] = optim.in_train_mode(opt)

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self._params_are_train = checkpoint.get("schedule_free_params_are_train")

    def use_fused_adam(self) -> bool:
        """Adam's single-kernel update (same arithmetic as the per-tensor loop, one pass over
        memory instead of about ten; on a 2-core CPU that is ~5x less optimiser time for an
        18k-latent SAE). Not with mixed precision plus gradient clipping, which Lightning refuses
        for optimisers that unscale their own gradients."""
        if not self.fused_optimizer:
            return False
        params = [p for p in self.sae.parameters() if p.requires_grad]
        if not params or any(p.device.type not in ("cpu", "cuda") or not p.is_floating_point() for p in params):
            return False
        trainer = self._trainer
        if trainer is not None and "mixed" in str(trainer.precision) and (trainer.gradient_clip_val or 0) > 0:
            return False
        return True

    def configure_optimizers(self):
        groups = self.sae.optimizer_groups(self.lr)
        opt = optim.build_optimizer(self.optimizer_name, groups, lr=self.lr, betas=self.betas,
                                    fused=self.optimizer_name == "adam" and self.use_fused_adam())
        if self.optimizer_name in optim.SCHEDULE_FREE:
            self._group_lrs = [g["lr"] for g in opt.param_groups]  # warm-up in on_train_batch_start
            return opt
        sched = torch.optim.lr_scheduler.LambdaLR(
            opt, lambda step: lr_lambda(step, total_steps=self.total_steps,
                                        warmup_steps=self.warmup_steps,
                                        decay_fraction=self.decay_fraction))
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


GAO_LR = 2e-4
SHORT_RUN_LR = 3e-3
SIGNUM_LR = 9.4e-3


SHORT_RUN_ARCHITECTURES = ("topk", "batchtopk", "matryoshka", "clt_topk", "clt_batchtopk", "crosscoder_batchtopk")


def default_lr(d_sae: int, architecture: str = "topk", optimizer: str = "adam") -> float:
    """Learning rate for the token budgets this tool trains on (1e5-1e7 tokens on a CPU).

    TopK family (where it was measured; other architectures keep ``gao_lr``):
    Gao et al.'s ``2e-4 / sqrt(d_sae / 16384)`` was tuned for runs of billions of tokens; at
    131k tokens of SmolLM2-135M activations (k 32, batch 4096, tied encoder fitted by
    ``fit_encoder_scale``) it leaves held-out FVU at 0.73 where 3e-3 reaches 0.16, and 3e-3 was
    the best of 1e-3 / 3e-3 / 6e-3 at d_sae 18,432 and of 1.5e-3 / 3e-3 / 6e-3 / 1.2e-2 at 4,608
    (bench/README.md). The Gao shrinkage is kept above 16,384 latents only; for much longer
    runs set ``trainer.lr`` (``gao_lr(d_sae)`` is Gao et al.'s value).

    ``signum`` (schedule-free sign descent) takes 9.4e-3 at every size. sparsify's rule for the
    same optimiser, ``5e-3 / sqrt(d_sae / 16384)``, gives that value at 4,608 latents (held-out
    FVU 0.063 after 32 steps of 4096 tokens) but at 18,432 its 4.7e-3 gives 0.241 where 9.4e-3
    gives 0.057 (6.6e-3: 0.122, 1e-2: 0.075, 1.25e-2: 0.093). Signum's lead is a short-run one:
    after 4 passes over the same 131k tokens Adam reaches 0.044 and signum 0.100 at 4,608
    latents, so Adam stays the default. ``adamw_schedulefree`` takes the Adam value.
    """
    if optimizer == "signum":
        return SIGNUM_LR
    if architecture not in SHORT_RUN_ARCHITECTURES:
        return gao_lr(d_sae)
    return SHORT_RUN_LR / math.sqrt(max(1.0, d_sae / 2**14))


def gao_lr(d_sae: int) -> float:
    """Gao et al.'s scaling of the Adam learning rate with dictionary size: 2e-4 / sqrt(d_sae / 16384)."""
    return GAO_LR / math.sqrt(d_sae / 2**14)

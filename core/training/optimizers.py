"""The optimisers a dictionary can be trained with, and the train/eval switch schedule-free ones need.

``adam`` (default) follows Gao et al.: Adam with a linear decay at the end. ``signum`` is sign
descent (Bernstein et al. 2018, "signSGD") inside Defazio et al.'s schedule-free averaging
(2024, the ``schedulefree`` package), with no decay; sparsify trains with the same pair by
default. ``adamw_schedulefree`` is that package's own schedule-free AdamW.

Schedule-free optimisers hold two points: the one gradients are taken at (``y``, in the
parameters while training) and the running average that is the model (``x``). ``set_mode``
swaps between them; evaluation, export and anything after ``fit`` must see ``x``.
"""

from __future__ import annotations

from typing import Any

import torch

from core.errors import ConfigError

OPTIMIZERS = ("adam", "signum", "adamw_schedulefree")
SCHEDULE_FREE = ("signum", "adamw_schedulefree")


class SignSGD(torch.optim.Optimizer):
    """Steepest descent in the max-norm: every weight moves by ``lr`` against its gradient's sign.

    The step ignores gradient magnitude, which is what lets a short run move far: a latent whose
    gradients are tiny (rarely selected by TopK) learns at the same rate as a busy one.
    """

    def __init__(self, params, lr: float = 1e-3) -> None:
        if not lr > 0:
            raise ValueError(f"SignSGD needs a positive learning rate, got {lr}")
        super().__init__(params, {"lr": lr})

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if params:
                torch._foreach_add_(params, torch._foreach_sign([p.grad for p in params]), alpha=-group["lr"])
        return loss


def schedule_free_signum(groups: list[dict[str, Any]], *, lr: float, momentum: float = 0.95):
    """``SignSGD`` inside ``schedulefree.ScheduleFreeWrapper``, typed as a ``torch.optim.Optimizer``.

    Lightning accepts only ``Optimizer`` instances and the wrapper is a plain object that
    delegates to its base optimiser, so the class below is both: the wrapper's methods come
    first and the attributes ``Optimizer`` code reads (``defaults``, hook dicts) are the base's.
    """
    from schedulefree import ScheduleFreeWrapper

    class ScheduleFreeSignum(ScheduleFreeWrapper, torch.optim.Optimizer):
        def __init__(self, base: torch.optim.Optimizer, momentum: float) -> None:
            ScheduleFreeWrapper.__init__(self, base, momentum=momentum)
            self.defaults = base.defaults
            for name, hooks in vars(base).items():
                if name.startswith("_optimizer_") and name.endswith("_hooks"):
                    setattr(self, name, hooks)

        def __repr__(self) -> str:
            return f"ScheduleFreeSignum(momentum={self.momentum}, {self.base!r})"

    return ScheduleFreeSignum(SignSGD(groups, lr=lr), momentum)


def build_optimizer(name: str, groups: list[dict[str, Any]], *, lr: float, betas: tuple[float, float],
                    fused: bool, momentum: float = 0.95):
    """The optimiser called ``name`` over ``groups`` (each group may carry its own ``lr``).

    ``momentum`` is the schedule-free wrapper's interpolation weight for ``signum`` (0.95, as
    sparsify); ``adamw_schedulefree`` uses ``betas[0]`` for the same role.
    """
    if name == "adam":
        return torch.optim.Adam(groups, lr=lr, betas=betas, fused=True if fused else None)
    if name == "signum":
        return schedule_free_signum(groups, lr=lr, momentum=momentum)
    if name == "adamw_schedulefree":
        from schedulefree import AdamWScheduleFree

        return AdamWScheduleFree(groups, lr=lr, betas=betas, warmup_steps=0, weight_decay=0.0)
    check_optimizer(name)
    raise AssertionError(f"optimizer {name!r} is listed but not built")


def check_optimizer(name: str) -> None:
    if name not in OPTIMIZERS:
        raise ConfigError(f"unknown trainer.optimizer {name!r}", fix=f"use one of {', '.join(OPTIMIZERS)}")


def is_schedule_free(opt) -> bool:
    return hasattr(opt, "train") and hasattr(opt, "eval") and not isinstance(opt, torch.nn.Module)


def in_train_mode(opt) -> bool:
    if hasattr(opt, "train_mode"):
        return bool(opt.train_mode)
    return bool(opt.param_groups[0].get("train_mode", False))


@torch.no_grad()
def set_mode(opt, train: bool, *, params_are_train: bool | None = None) -> None:
    """Put ``y`` (train) or ``x`` (eval) into the parameters of a schedule-free optimiser.

    ``params_are_train`` says which point the parameters hold when the optimiser's own flag cannot
    know: after a resume the wrapper is new, but the parameters came from a checkpoint.
    """
    if not is_schedule_free(opt):
        return
    if params_are_train is not None and hasattr(opt, "train_mode"):
        opt.train_mode = bool(params_are_train)
    opt.train() if train else opt.eval()

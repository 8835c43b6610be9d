"""The ``core`` evaluation: reconstruction and sparsity on the store's held-out split
(``core.eval.metrics``: MSE, FVU, cosine, L0, dead/dense fractions, shrinkage)."""

from __future__ import annotations

from dataclasses import dataclass

from core.eval.base import Eval, EvalContext, EvalResult


@dataclass
class CoreConfig:
    split: str = "val"
    max_tokens: int | None = None
    dense_threshold: float = 0.1


@dataclass
class CoreResult(EvalResult):
    n_tokens: int
    mse: float
    mse_per_token: float
    fvu: float
    explained_variance: float
    cosine: float
    l0: float
    dead_frac: float
    dense_frac: float
    l2_ratio: float
    relative_reconstruction_bias: float

    def headline(self) -> dict[str, float | None]:
        return {"fvu": self.fvu, "l0": self.l0, "cosine": self.cosine, "dead_frac": self.dead_frac,
                "relative_reconstruction_bias": self.relative_reconstruction_bias}


class CoreEval(Eval):
    name = "core"
    Config = CoreConfig

    def run(self, ctx: EvalContext) -> CoreResult:
        from core.eval.metrics import evaluate_dictionary

        c = self.config
        dm = ctx.datamodule
        loader = dm.val_dataloader() if c.split == "val" else dm.train_dataloader()
        m = evaluate_dictionary(ctx.sae, loader, max_tokens=c.max_tokens, dense_threshold=c.dense_threshold)
        return CoreResult(**m)

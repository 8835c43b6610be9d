"""Spliced evaluation: how much of the model's own loss survives when a dictionary's
reconstruction replaces the activation at its hook.

Causal LMs (and IgLM): next-token cross-entropy over real tokens. Masked protein LMs: a
pseudo-log-likelihood on a sample of residue positions, masked in one pass per batch (the
same positions for every condition). Each batch is scored clean, spliced (reconstruction
only), spliced with the error term (a check: must equal clean), zero-ablated and
mean-ablated. KL divergences are KL(clean || condition) per scored token, and

    loss recovered = (CE_ablation - CE_spliced) / (CE_ablation - CE_clean)

for zero- and mean-ablation (1 = as good as the clean model, 0 = no better than ablating),
the measure SAELens and SAEBench report.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from core.adapters.base import ModelAdapter
from core.adapters.interventions import Ablate, Splice
from core.eval.base import Eval, EvalContext, EvalResult
from core.eval.scoring import mean_activation, score_conditions, summarise, text_batches
from core.samples import Sample


def spliced_metrics(adapter: ModelAdapter, dictionary: nn.Module, hook: str, samples: Sequence[Sample], *,
                    batch_tokens: int = 4096, mask_fraction: float = 0.15, seed: int = 0,
                    mean: torch.Tensor | None = None, skip_special: bool = False) -> dict[str, Any]:
    """Cross-entropy and KL under each condition on ``samples``; see the module docstring."""
    adapter.check_hooks([hook])
    batches = text_batches(adapter, samples, batch_tokens)
    if mean is None:
        mean = mean_activation(adapter, hook, batches)
    interventions = {
        "spliced": Splice(dictionary, error_term=False, skip_special=skip_special),
        "spliced_with_error": Splice(dictionary, error_term=True, skip_special=skip_special),
        "zero_ablation": Ablate(None, skip_special=skip_special),
        "mean_ablation": Ablate(mean, skip_special=skip_special),
    }
    scores = score_conditions(adapter, batches, {k: {hook: fn} for k, fn in interventions.items()},
                              mask_fraction=mask_fraction, seed=seed)
    return summarise(scores, hook=hook, n_samples=len(samples), mask_fraction=mask_fraction)


def samples_from_store(store: Any, *, n: int = 64, holdout_fraction: float | None = 0.05, seed: int = 0) -> list:
    """Up to ``n`` samples (id, text) from a store's samples.tsv, held-out ones first
    (the same split by sample index as ``ActivationDataModule``)."""
    from core.store import holdout_mask, read_samples_tsv

    path = store.root / "samples.tsv"
    if not path.exists():
        return []
    table = read_samples_tsv(path)
    if "text" not in table.columns:
        return []
    if "sample" in table.columns:
        table = table.set_index("sample")
    idx = torch.as_tensor(table.index.to_numpy())
    if holdout_fraction:
        held = holdout_mask(idx, holdout_fraction, seed)
        table = table.iloc[torch.cat([held.nonzero().flatten(), (~held).nonzero().flatten()]).numpy()]
    meta_cols = [c for c in table.columns if c not in ("id", "text")]
    return [Sample(str(r["id"]), str(r["text"]), {c: r[c] for c in meta_cols if r[c] != ""})
            for _, r in table.head(n).iterrows()]


def spliced_evaluator(cfg: Any, ec: dict[str, Any], sae: nn.Module, dm: Any, adapter: Any = None) -> dict[str, Any]:
    """The ``spliced`` evaluation of ``stage=evaluate`` (``evals=[core,spliced]``).

    Loads ``cfg.model``, takes held-out samples (the data module's split) from the store's
    samples.tsv and splices the SAE in at the store's hook (a transcoder: in place of the MLP
    output its target store holds, ``core.eval.transcoder_splice``). Options under
    ``evaluate.spliced``: n_samples (64), batch_tokens (4096), mask_fraction (0.15), seed (0).
    """
    from core.adapters import load_adapter
    from core.errors import ConfigError, DataError

    if cfg.get("model") is None:
        raise ConfigError("the spliced evaluator needs the model the store was harvested from",
                          fix="add model=<its config> (e.g. model=antiberty) to the command")
    opts = dict(ec.get("spliced") or {})
    store = dm.store
    samples = samples_from_store(store, n=int(opts.get("n_samples", 64)),
                                 holdout_fraction=getattr(dm, "holdout_fraction", 0.05),
                                 seed=int(getattr(dm, "split_seed", 0)))
    if not samples:
        raise DataError("the store has no samples.tsv with sample texts", path=str(store.root),
                        fix="harvest with `sparsescope stage=harvest` (it writes samples.tsv), or leave "
                            "spliced out of evals=[...]")
    adapter = adapter or load_adapter(cfg.model)
    if adapter.name != store.model:
        import logging

        logging.getLogger("sparsescope").warning("store was harvested from %r, evaluating with %r",
                                                 store.model, adapter.name)
    sae = sae.to(getattr(adapter, "device", "cpu")).eval()
    kw = {"batch_tokens": int(opts.get("batch_tokens", 4096)), "mask_fraction": float(opts.get("mask_fraction", 0.15)),
          "seed": int(opts.get("seed", 0))}
    if getattr(sae, "kind", "sae") != "sae":
        from core.eval.transcoder_splice import transcoder_spliced_metrics

        sites = [(a.hook, b.hook) for a, b in zip(dm.stores, dm.target_stores, strict=True)]
        skip_first = store.meta.get("positions") == "skip_first"
        out = transcoder_spliced_metrics(adapter, [(sae, sites)], samples, skip_first=skip_first, **kw)
        out["hook"] = " + ".join(out.pop("hooks"))
        return out
    with torch.no_grad():
        return spliced_metrics(adapter, sae, store.hook, samples, **kw)


@dataclass
class SplicedConfig:
    n_samples: int = 64
    batch_tokens: int = 4096
    mask_fraction: float = 0.15
    seed: int = 0


@dataclass
class SplicedResult(EvalResult):
    objective: str
    hook: str
    n_scored_tokens: int
    n_samples: int
    ce_clean: float
    ce_spliced: float
    ce_spliced_with_error: float
    ce_zero_ablation: float
    ce_mean_ablation: float
    kl_spliced: float
    kl_spliced_with_error: float
    kl_zero_ablation: float
    kl_mean_ablation: float
    loss_recovered_zero: float
    loss_recovered_mean: float
    ce_delta: float
    mask_fraction: float | None = None

    def headline(self) -> dict[str, float | None]:
        return {"ce_delta": self.ce_delta, "loss_recovered_zero": self.loss_recovered_zero,
                "kl_spliced": self.kl_spliced}


class SplicedEval(Eval):
    """The ``spliced`` evaluation: the model's loss with the reconstruction spliced in (needs ``model=``)."""

    name = "spliced"
    Config = SplicedConfig

    def run(self, ctx: EvalContext) -> SplicedResult:
        from core.adapters import load_adapter

        if ctx.cfg.get("model") is not None and "adapter" not in ctx.shared:
            ctx.shared["adapter"] = load_adapter(ctx.cfg.model)
        out = spliced_evaluator(ctx.cfg, {"spliced": dataclasses.asdict(self.config)}, ctx.sae, ctx.datamodule,
                                adapter=ctx.shared.get("adapter"))
        return SplicedResult(**out)

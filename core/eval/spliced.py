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
import torch.nn.functional as F
from torch import nn

from core.adapters.base import Batch, ModelAdapter
from core.adapters.interventions import Ablate, Splice
from core.eval.base import Eval, EvalContext, EvalResult
from core.samples import Sample

CONDITIONS = ("clean", "spliced", "spliced_with_error", "zero_ablation", "mean_ablation")


def objective_of(adapter: ModelAdapter) -> str:
    """``mlm`` for masked protein LMs, else ``clm``."""
    return str(getattr(adapter, "objective", "clm"))


def _scored_positions(batch: Batch, objective: str, mask_fraction: float, gen: torch.Generator) -> torch.Tensor:
    """[B, T] bool: tokens whose prediction is scored (for clm: the token *predicted at* t)."""
    real = batch.attention_mask.bool()
    if objective == "clm":
        valid = torch.zeros_like(real)
        valid[:, :-1] = real[:, :-1] & real[:, 1:]
        return valid
    cand = real & (batch.positions >= 0)
    pick = (torch.rand(cand.shape, generator=gen) < mask_fraction) & cand
    for r in range(cand.shape[0]):  # every sequence contributes at least one position
        if cand[r].any() and not pick[r].any():
            idx = cand[r].nonzero().flatten()
            pick[r, idx[torch.randint(len(idx), (1,), generator=gen)]] = True
    return pick


def _masked(batch: Batch, scored: torch.Tensor, mask_id: int) -> Batch:
    ids = batch.input_ids.clone()
    ids[scored] = mask_id
    return Batch(ids, batch.attention_mask, batch.positions, batch.sample_index, batch.extra)


def _token_logprobs(logits: torch.Tensor, batch: Batch, scored: torch.Tensor, objective: str) -> tuple:
    """(log-probs of the scored predictions [n, V], targets [n])."""
    logp = F.log_softmax(logits.float(), dim=-1)
    if objective == "clm":
        targets = batch.input_ids[:, 1:][scored[:, :-1]]
        return logp[:, :-1][scored[:, :-1]], targets
    return logp[scored], batch.input_ids[scored]


def mean_activation(adapter: ModelAdapter, hook: str, batches: Sequence[Batch]) -> torch.Tensor:
    """Mean activation at ``hook`` over real tokens (for mean-ablation)."""
    total, count = None, 0
    for batch in batches:
        act = adapter.capture(batch, [hook])[hook].float()
        keep = batch.attention_mask.bool().to(act.device)
        s = act[keep].sum(0)
        total = s if total is None else total + s
        count += int(keep.sum())
    return total / max(count, 1)


def spliced_metrics(adapter: ModelAdapter, dictionary: nn.Module, hook: str, samples: Sequence[Sample], *,
                    batch_tokens: int = 4096, mask_fraction: float = 0.15, seed: int = 0,
                    mean: torch.Tensor | None = None, skip_special: bool = False) -> dict[str, Any]:
    """Cross-entropy and KL under each condition on ``samples``; see the module docstring."""
    from core.harvest import pack_batches, processing_order

    adapter.check_hooks([hook])
    objective = objective_of(adapter)
    if objective == "mlm" and getattr(adapter, "mask_token_id", None) is None:
        objective = "clm"
    samples = [s if isinstance(s, Sample) else Sample(f"#{i}", str(s)) for i, s in enumerate(samples)]
    order = processing_order(samples, len(samples))
    spans = pack_batches(samples, order, 0, batch_tokens, 256, lambda s: len(s.text) + 4)
    batches = [adapter.tokenize([samples[i] for i in order[b:e]], sample_index=order[b:e]) for b, e in spans]
    batches = [b for b in batches if len(b)]
    if mean is None:
        mean = mean_activation(adapter, hook, batches)
    interventions = {
        "spliced": Splice(dictionary, error_term=False, skip_special=skip_special),
        "spliced_with_error": Splice(dictionary, error_term=True, skip_special=skip_special),
        "zero_ablation": Ablate(None, skip_special=skip_special),
        "mean_ablation": Ablate(mean, skip_special=skip_special),
    }
    gen = torch.Generator().manual_seed(seed)
    ce = dict.fromkeys(CONDITIONS, 0.0)
    kl = dict.fromkeys(CONDITIONS[1:], 0.0)
    n = 0
    for batch in batches:
        scored = _scored_positions(batch, objective, mask_fraction, gen)
        if not scored.any():
            continue
        inp = _masked(batch, scored, adapter.mask_token_id) if objective == "mlm" else batch
        clean_lp, targets = _token_logprobs(adapter.forward(inp), batch, scored, objective)
        targets = targets.to(clean_lp.device)
        ce["clean"] += float(-clean_lp.gather(-1, targets[:, None]).sum())
        for name, fn in interventions.items():
            with adapter.intervene(hook, fn):
                lp, _ = _token_logprobs(adapter.forward(inp), batch, scored, objective)
            ce[name] += float(-lp.gather(-1, targets[:, None]).sum())
            kl[name] += float(F.kl_div(lp, clean_lp, log_target=True, reduction="sum"))
        n += int(targets.numel())
    if n == 0:
        from core.errors import DataError

        raise DataError("no tokens to score in the spliced evaluation", fix="give longer or more samples")
    out: dict[str, Any] = {"objective": objective, "hook": hook, "n_scored_tokens": n,
                           "n_samples": len(samples)}
    for k, v in ce.items():
        out[f"ce_{k}"] = v / n
    for k, v in kl.items():
        out[f"kl_{k}"] = v / n
    for ablation in ("zero_ablation", "mean_ablation"):
        gap = out[f"ce_{ablation}"] - out["ce_clean"]
        out[f"loss_recovered_{ablation.split('_')[0]}"] = \
            (out[f"ce_{ablation}"] - out["ce_spliced"]) / gap if abs(gap) > 1e-12 else float("nan")
    out["ce_delta"] = out["ce_spliced"] - out["ce_clean"]
    if objective == "mlm":
        out["mask_fraction"] = mask_fraction
    return out


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
    samples.tsv and splices the SAE in at the store's hook. Options under
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
    with torch.no_grad():
        return spliced_metrics(adapter, sae, store.hook, samples, batch_tokens=int(opts.get("batch_tokens", 4096)),
                               mask_fraction=float(opts.get("mask_fraction", 0.15)), seed=int(opts.get("seed", 0)))


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

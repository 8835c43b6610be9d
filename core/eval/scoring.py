"""Scoring a model under interventions: the clean pass and any set of conditions (each a
``{hook: intervention}`` applied together) on the same tokens, as cross-entropy and
KL(clean || condition) per scored token, and the loss recovered against an ablation.

Causal LMs (and IgLM): next-token cross-entropy over real tokens. Masked protein LMs: a
pseudo-log-likelihood on a sample of residue positions, masked in one pass per batch (the
same positions for every condition). ``core.eval.spliced`` (SAEs) and
``core.eval.transcoder_splice`` (transcoders) build their conditions on this.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import ExitStack
from typing import Any

import torch
import torch.nn.functional as F

from core.adapters.base import Batch, ModelAdapter
from core.samples import Sample


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


def text_batches(adapter: ModelAdapter, samples: Sequence[Sample], batch_tokens: int = 4096) -> list[Batch]:
    """Samples tokenised into length-sorted batches of about ``batch_tokens`` padded tokens."""
    from core.harvest import pack_batches, processing_order

    samples = [s if isinstance(s, Sample) else Sample(f"#{i}", str(s)) for i, s in enumerate(samples)]
    order = processing_order(samples, len(samples))
    spans = pack_batches(samples, order, 0, batch_tokens, 256, lambda s: len(s.text) + 4)
    batches = [adapter.tokenize([samples[i] for i in order[b:e]], sample_index=order[b:e]) for b, e in spans]
    return [b for b in batches if len(b)]


def mean_activations(adapter: ModelAdapter, hooks: Sequence[str], batches: Sequence[Batch], *,
                     skip_first: bool = False) -> dict[str, torch.Tensor]:
    """Mean activation at each hook over real tokens (for mean-ablation), one pass per batch;
    ``skip_first`` leaves out each row's first token, as a splice that skips it does."""
    total: dict[str, torch.Tensor] = {}
    count = 0
    for batch in batches:
        acts = adapter.capture(batch, list(hooks))
        keep = batch.attention_mask.bool()
        if skip_first:
            keep = keep & ~((keep.long().cumsum(-1) == 1) & keep)
        for h in hooks:
            act = acts[h].float()
            s = act[keep.to(act.device)].sum(0)
            total[h] = s if h not in total else total[h] + s
        count += int(keep.sum())
    return {h: t / max(count, 1) for h, t in total.items()}


def mean_activation(adapter: ModelAdapter, hook: str, batches: Sequence[Batch]) -> torch.Tensor:
    """Mean activation at ``hook`` over real tokens (for mean-ablation)."""
    return mean_activations(adapter, [hook], batches)[hook]


def score_conditions(adapter: ModelAdapter, batches: Sequence[Batch], conditions: dict[str, dict[str, Any]], *,
                     mask_fraction: float = 0.15, seed: int = 0) -> dict[str, Any]:
    """Cross-entropy of the clean model and of each condition (``{hook: intervention}``, all
    applied together), and KL(clean || condition), per scored token. The clean pass runs once
    per batch; every condition is scored on the same tokens (for a masked LM, the same masks)."""
    objective = objective_of(adapter)
    if objective == "mlm" and getattr(adapter, "mask_token_id", None) is None:
        objective = "clm"
    gen = torch.Generator().manual_seed(seed)
    ce = dict.fromkeys(["clean", *conditions], 0.0)
    kl = dict.fromkeys(conditions, 0.0)
    n = 0
    for batch in batches:
        scored = _scored_positions(batch, objective, mask_fraction, gen)
        if not scored.any():
            continue
        inp = _masked(batch, scored, adapter.mask_token_id) if objective == "mlm" else batch
        clean_lp, targets = _token_logprobs(adapter.forward(inp), batch, scored, objective)
        targets = targets.to(clean_lp.device)
        ce["clean"] += float(-clean_lp.gather(-1, targets[:, None]).sum())
        for name, fns in conditions.items():
            with ExitStack() as stack:
                for hook, fn in fns.items():
                    stack.enter_context(adapter.intervene(hook, fn))
                lp, _ = _token_logprobs(adapter.forward(inp), batch, scored, objective)
            ce[name] += float(-lp.gather(-1, targets[:, None]).sum())
            kl[name] += float(F.kl_div(lp, clean_lp, log_target=True, reduction="sum"))
        n += int(targets.numel())
    if n == 0:
        from core.errors import DataError

        raise DataError("no tokens to score in the spliced evaluation", fix="give longer or more samples")
    return {"objective": objective, "n_scored_tokens": n, "ce": {k: v / n for k, v in ce.items()},
            "kl": {k: v / n for k, v in kl.items()}}


def loss_recovered(ce_ablated: float, ce_spliced: float, ce_clean: float) -> float:
    """``(CE_ablation - CE_spliced) / (CE_ablation - CE_clean)``: 1 = clean, 0 = no better than ablating."""
    gap = ce_ablated - ce_clean
    return (ce_ablated - ce_spliced) / gap if abs(gap) > 1e-12 else float("nan")


def summarise(scores: dict[str, Any], **extra: Any) -> dict[str, Any]:
    """The flat metrics of one splice (``ce_<condition>``, ``kl_<condition>``, loss recovered
    against zero- and mean-ablation) from ``score_conditions`` over the standard conditions."""
    out: dict[str, Any] = {"objective": scores["objective"], **extra, "n_scored_tokens": scores["n_scored_tokens"]}
    for k, v in scores["ce"].items():
        out[f"ce_{k}"] = v
    for k, v in scores["kl"].items():
        out[f"kl_{k}"] = v
    for ablation in ("zero_ablation", "mean_ablation"):
        out[f"loss_recovered_{ablation.split('_')[0]}"] = loss_recovered(
            out[f"ce_{ablation}"], out["ce_spliced"], out["ce_clean"])
    out["ce_delta"] = out["ce_spliced"] - out["ce_clean"]
    if scores["objective"] != "mlm":
        out.pop("mask_fraction", None)
    return out

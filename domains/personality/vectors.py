"""Persona vectors (Chen et al. 2025) and the prompt-time monitor built on them.

A persona vector for a trait at a layer is the mean hidden state over the response tokens
of answers given under the high persona minus the same mean under the low persona (each
answer first averaged over its own tokens, then answers averaged). Projecting the hidden
state of the *last prompt token* onto it, before any answer is written, is the monitor:
Chen et al. find that this projection predicts how strongly the answer will express the
trait. Here the trait expression is the inventory score under the same persona.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch

from core.errors import DataError
from core.samples import Sample
from domains.personality.inventory import TRAITS


def masked_token_means(acts: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``acts [B, T, d]`` averaged over the tokens where ``mask [B, T]`` is true -> ``[B, d]``.

    A row with no selected token raises a DataError: an empty answer has no mean.
    """
    m = mask.to(acts.dtype)
    count = m.sum(1)
    if bool((count == 0).any()):
        raise DataError(f"{int((count == 0).sum())} samples have no response tokens",
                        fix="generate longer answers (max_new_tokens) or drop empty answers")
    return (acts * m[..., None]).sum(1) / count[:, None]


def resid_hooks(n_layers: int) -> list[str]:
    return [f"blocks.{i}.hook_resid_post" for i in range(n_layers)]


def sample_activations(adapter: Any, samples: Sequence[Sample], *, layers: Sequence[int] | None = None,
                       batch_size: int = 8, progress: bool = True) -> dict[str, torch.Tensor]:
    """Per sample and layer: mean over response tokens and the last prompt token's hidden state.

    Returns ``{"response_mean": [n, L, d], "last_prompt": [n, L, d], "layers": [L]}``.
    """
    layers = list(range(adapter.n_layers)) if layers is None else [int(x) for x in layers]
    hooks = [f"blocks.{i}.hook_resid_post" for i in layers]
    resp_out, last_out = [], []
    it = range(0, len(samples), batch_size)
    if progress:
        from tqdm.auto import tqdm

        it = tqdm(it, desc="persona activations", unit="batch")
    for start in it:
        chunk = list(samples[start:start + batch_size])
        batch = adapter.tokenize(chunk)
        acts = adapter.capture(batch, hooks)
        stacked = torch.stack([acts[h].float().cpu() for h in hooks], dim=2)  # [B, T, L, d]
        pos = batch.positions.cpu()
        n_prompt = torch.as_tensor([int(s.meta["n_prompt_tokens"]) for s in chunk])[:, None]
        real = batch.attention_mask.cpu().bool() & (pos >= 0)
        response = real & (pos >= n_prompt)
        last = real & (pos == n_prompt - 1)
        b, t, n_l, d = stacked.shape
        flat = stacked.reshape(b, t, n_l * d)
        resp_out.append(masked_token_means(flat, response).reshape(b, n_l, d))
        last_out.append(masked_token_means(flat, last).reshape(b, n_l, d))
    return {"response_mean": torch.cat(resp_out), "last_prompt": torch.cat(last_out),
            "layers": torch.as_tensor(layers)}


def persona_vectors(response_mean: torch.Tensor, labels: pd.DataFrame) -> dict[str, torch.Tensor]:
    """Trait letter -> ``[L, d]`` mean(high answers) - mean(low answers), per layer.

    ``labels`` has ``trait`` and ``pole`` per row of ``response_mean`` ([n, L, d]).
    """
    if len(labels) != response_mean.shape[0]:
        raise DataError(f"{len(labels)} labels for {response_mean.shape[0]} samples")
    trait = labels["trait"].to_numpy()
    pole = labels["pole"].to_numpy()
    out: dict[str, torch.Tensor] = {}
    for t in TRAITS:
        hi = torch.as_tensor(np.flatnonzero((trait == t) & (pole == "high")))
        lo = torch.as_tensor(np.flatnonzero((trait == t) & (pole == "low")))
        if len(hi) == 0 and len(lo) == 0:
            continue
        if len(hi) == 0 or len(lo) == 0:
            raise DataError(f"trait {t} has answers under only one pole ({len(hi)} high, {len(lo)} low)",
                            fix="generate answers under both a high and a low persona")
        out[t] = response_mean[hi].double().mean(0).float() - response_mean[lo].double().mean(0).float()
    if not out:
        raise DataError("no persona answers carry a trait", fix="include trait personas, not only the default")
    return out


def separation(response_mean: torch.Tensor, labels: pd.DataFrame, vectors: dict[str, torch.Tensor]) -> pd.DataFrame:
    """Per trait and layer: Cohen's d of the high vs low answers projected on the persona vector.

    It says at which depth the persona is most cleanly written into the residual stream.
    """
    rows = []
    trait = labels["trait"].to_numpy()
    pole = labels["pole"].to_numpy()
    for t, v in vectors.items():
        unit = v / v.norm(dim=-1, keepdim=True).clamp_min(1e-12)  # [L, d]
        proj = torch.einsum("nld,ld->nl", response_mean.float(), unit).numpy()
        hi, lo = proj[(trait == t) & (pole == "high")], proj[(trait == t) & (pole == "low")]
        pooled = np.sqrt((hi.var(0, ddof=1) + lo.var(0, ddof=1)) / 2) if min(len(hi), len(lo)) > 1 else np.nan
        d = (hi.mean(0) - lo.mean(0)) / np.maximum(pooled, 1e-12)
        for li in range(v.shape[0]):
            rows.append({"trait": t, "layer": li, "cohens_d": float(d[li]), "norm": float(v[li].norm())})
    return pd.DataFrame(rows)


def monitor_projection(last_prompt: torch.Tensor, vector: torch.Tensor) -> np.ndarray:
    """Projection of each sample's last prompt token (``[n, d]``) on the unit persona vector (``[d]``)."""
    unit = vector.float() / vector.float().norm().clamp_min(1e-12)
    return (last_prompt.float() @ unit).numpy()


def correlate(x: Sequence[float], y: Sequence[float]) -> dict[str, float]:
    """Pearson and Spearman correlation (with p-values); NaN when either side is constant."""
    from scipy import stats

    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if len(x) != len(y):
        raise DataError(f"cannot correlate {len(x)} with {len(y)} values")
    if len(x) < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
        nan = float("nan")
        return {"pearson": nan, "pearson_p": nan, "spearman": nan, "spearman_p": nan, "n": int(len(x))}
    pr = stats.pearsonr(x, y)
    sr = stats.spearmanr(x, y)
    return {"pearson": float(pr[0]), "pearson_p": float(pr[1]), "spearman": float(sr[0]),
            "spearman_p": float(sr[1]), "n": int(len(x))}


def monitor_table(last_prompt_layer: torch.Tensor, labels: pd.DataFrame, vectors_layer: dict[str, torch.Tensor],
                  inventory: pd.DataFrame) -> pd.DataFrame:
    """One row per (trait, persona): mean projection over that persona's questions, and its trait score.

    ``last_prompt_layer`` is ``[n, d]`` at the monitored layer; ``inventory`` has one row per
    (persona, trait) with the trait ``mean`` score under that persona.
    """
    score = inventory.set_index(["persona", "trait"])["mean"]
    rows = []
    for t, v in vectors_layer.items():
        proj = monitor_projection(last_prompt_layer, v)
        df = pd.DataFrame({"persona": labels["persona"].to_numpy(), "projection": proj})
        for persona, g in df.groupby("persona", sort=False):
            if (persona, t) not in score.index:
                continue
            p_trait = labels.loc[labels["persona"] == persona, "trait"].iloc[0]
            p_pole = labels.loc[labels["persona"] == persona, "pole"].iloc[0]
            rows.append({"trait": t, "persona": persona, "persona_trait": p_trait, "persona_pole": p_pole,
                         "projection": float(g["projection"].mean()), "score": float(score[(persona, t)])})
    return pd.DataFrame(rows)


def monitor_correlations(table: pd.DataFrame) -> dict[str, Any]:
    """Per trait: correlation across personas of projection and inventory score; plus their mean."""
    per = {t: correlate(g["projection"], g["score"]) for t, g in table.groupby("trait", sort=False)}
    pear = [v["pearson"] for v in per.values() if not np.isnan(v["pearson"])]
    spear = [v["spearman"] for v in per.values() if not np.isnan(v["spearman"])]
    # the same projection against the instructed pole (+1 high, -1 low, 0 other personas): does the
    # monitor read the persona even where the inventory does not register it?
    pole = {}
    for t, g in table.groupby("trait", sort=False):
        sign = np.where(g["persona_trait"] != t, 0.0, np.where(g["persona_pole"] == "high", 1.0, -1.0))
        pole[t] = correlate(g["projection"], sign)
    return {"per_trait": per, "mean_pearson": float(np.mean(pear)) if pear else float("nan"),
            "mean_spearman": float(np.mean(spear)) if spear else float("nan"), "vs_instructed_pole": pole}

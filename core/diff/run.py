"""One model diff of a crosscoder over its aligned stores: relative norms and classes, Latent
Scaling and the classes after it, FVU per source on the held-out samples, a per-latent table.
``core.stages.diff`` and the case studies call :func:`diff_crosscoder`."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from core.diff.norms import Cutoffs, class_counts, classify, relative_norm, source_norms
from core.diff.scaling import latent_scaling, ratios, reclassify, store_batches


@torch.no_grad()
def source_fvu(crosscoder: Any, stores: Sequence[Any], *, holdout_fraction: float = 0.05, split_seed: int = 0,
               batch_tokens: int = 4096) -> list[float]:
    """Fraction of variance unexplained per source on the data module's held-out samples."""
    from core.store import holdout_mask

    keep = lambda s: holdout_mask(s, holdout_fraction, split_seed).numpy()  # noqa: E731
    slices = crosscoder.source_slices()
    sse, sxx, n = np.zeros(len(slices)), np.zeros(len(slices)), 0
    sx = [torch.zeros(sl.stop - sl.start, dtype=torch.float64) for sl in slices]
    for x in store_batches(stores, batch_tokens, keep):
        x_hat = crosscoder(x).reshape(x.shape[0], -1).double()
        x = x.double()
        for i, sl in enumerate(slices):
            sse[i] += float((x[:, sl] - x_hat[:, sl]).pow(2).sum())
            sx[i] += x[:, sl].sum(0)
            sxx[i] += float(x[:, sl].pow(2).sum())
        n += x.shape[0]
    if n == 0:
        return [float("nan")] * len(slices)
    return [round(float(sse[i] / (sxx[i] - float(sx[i].pow(2).sum()) / n)), 4) for i in range(len(slices))]


@torch.no_grad()
def fire_counts(crosscoder: Any, stores: Sequence[Any], batch_tokens: int = 4096) -> np.ndarray:
    """How many tokens of the stores each latent fires on."""
    counts = torch.zeros(int(crosscoder.cfg.d_sae), dtype=torch.long)
    for x in store_batches(stores, batch_tokens):
        counts += (crosscoder.eval().encode(x) > 0).sum(0)
    return counts.numpy()


def diff_crosscoder(crosscoder: Any, stores: Sequence[Any], out_dir: str | Path, *, a: int = 0, b: int = 1,
                    names: Sequence[str] = ("a", "b"), cutoffs: Cutoffs | None = None, tau: float = 0.5,
                    floor: float = 3.0, batch_tokens: int = 4096, progress: bool = True) -> tuple[dict[str, Any], pd.DataFrame]:
    """Classes before and after Latent Scaling for sources ``a`` and ``b``; writes ``latents.tsv``."""
    from core.io import atomic_path

    cutoffs = cutoffs or Cutoffs()
    crosscoder = crosscoder.eval()
    norms = source_norms(crosscoder)
    total = sum(-(-int(n) // batch_tokens) for n in np.diff(stores[0].shard_offsets()))
    frame = latent_scaling(crosscoder, store_batches(stores, batch_tokens), a, b, progress=progress, total=total)
    alive = frame["fires_sum"].to_numpy() > 0
    r = relative_norm(norms[a], norms[b])
    before = classify(r, cutoffs, alive)
    nu = ratios(frame, before)
    after, why = reclassify(before, nu, tau=tau, floor=floor)
    latents = pd.DataFrame({"latent": np.arange(len(r)), f"norm_{names[0]}": norms[a], f"norm_{names[1]}": norms[b],
                            "relative_norm": r, "class": before, "class_after_scaling": after, "moved_by": why,
                            **{c: nu[c].to_numpy() for c in nu.columns},
                            "beta_eps_a": frame["beta_eps_a"], "beta_eps_b": frame["beta_eps_b"]})
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    with atomic_path(out_dir / "latents.tsv") as tmp:
        latents.to_csv(tmp, sep="\t", index=False)
    fvu = source_fvu(crosscoder, stores)
    excl = np.isin(before, ("a_only", "b_only"))
    summary = {
        "sources": list(names), "cutoffs": dataclasses.asdict(cutoffs),
        "relative_norm": f"0.5 * ((|d_{names[1]}| - |d_{names[0]}|) / max + 1): 0 = only {names[0]}, 1 = only {names[1]}",
        "before_scaling": class_counts(before), "after_scaling": class_counts(after),
        "latent_scaling": {"tau": tau, "noise_floor_factor": floor, "n_exclusive": int(excl.sum()),
                           "moved_by_shrinkage": int((why == "shrinkage").sum()),
                           "moved_by_decoupling": int((why == "decoupling").sum()),
                           "moved_by_both": int((why == "both").sum()),
                           "median_nu_eps": _median(nu["nu_eps"][excl]), "median_nu_r": _median(nu["nu_r"][excl]),
                           "median_nu_eps_null": _median(nu["nu_eps_null"][excl]),
                           "median_nu_r_null": _median(nu["nu_r_null"][excl])},
        "fvu": dict(zip([str(n) for n in _all_names(crosscoder, names, a, b)], fvu, strict=True)),
    }
    n = summary["before_scaling"]["n_latents"]
    summary.update({"n_latents": n, **{f"{k}_frac": summary["before_scaling"][f"{k}_frac"] for k in
                                       ("shared", "a_only", "b_only")},
                    **{f"{k}_frac_after_scaling": summary["after_scaling"][f"{k}_frac"] for k in
                       ("shared", "a_only", "b_only")}})
    return summary, latents


def _median(v) -> float | None:
    v = np.asarray(v, float)
    v = v[np.isfinite(v)]
    return round(float(np.median(v)), 4) if len(v) else None


def _all_names(crosscoder: Any, names: Sequence[str], a: int, b: int) -> list[str]:
    out = [f"source{i}" for i in range(len(crosscoder.source_widths))]
    out[a], out[b] = names[0], names[1]
    return out

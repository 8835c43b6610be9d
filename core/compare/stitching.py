"""Stitching a small and a large SAE (after Leask, Bussmann et al. 2024, "Stitching SAEs of
different sizes"; ICLR 2025 "Sparse autoencoders do not find canonical units of analysis").

The rule, exactly. ``r = x - x_hat_small`` is the small SAE's residual on held-out tokens and
``f_j`` the large SAE's activation of latent ``j`` (its own encoder, its own selection).
Adding latent ``j`` to the small SAE turns the squared error of a token into
``||r - f_j d_j||^2``, so its gain is

    gain_j = mean_t ( ||r_t||^2 - ||r_t - f_tj d_j||^2 ) = mean_t ( 2 f_tj <r_t, d_j> - f_tj^2 ||d_j||^2 ).

``j`` is **novel** when ``gain_j > tolerance * mean_t ||r_t||^2`` (default tolerance 0: the
held-out error strictly falls), **reconstruction** otherwise, and **dead** when it never
fires on the sample. A latent the small SAE already has (or a finer copy of one) adds its
contribution a second time and raises the error; a latent carrying information the small
SAE lacks lowers it.

The stitched family: starting from the small SAE, the novel latents are added in
``n_groups`` groups (largest gain first); then reconstruction latents are swapped in for
the small latents they replace. "Replace" is a graph: small and reconstruction latents are
joined where their decoder cosine is at least ``swap_cosine`` (0.7, the published proxy's
cut-off), and each connected component is swapped as a whole (its small latents out, its
large latents in), components ordered by how much each alone lowers the error, again in
``n_groups`` groups; a swap that alone does not lower the error is not made (a replacement
that reconstructs worse replaces nothing). Reconstruction latents with no small latent that
close are not added.
A stitched SAE's code is the small SAE's code on the kept latents beside the large SAE's
code on the added ones (for TopK SAEs each keeps its own selection), decoded with the small
SAE's ``b_dec``; its L0 is the sum of the two parts'.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch
from scipy.sparse.csgraph import connected_components

from core.errors import ConfigError


def check_sae(sae: torch.nn.Module, role: str) -> None:
    """Stitching reconstructs the input: transcoders and skip connections have another target."""
    cfg = sae.cfg
    if cfg.in_features != cfg.out_features or cfg.skip_connection:
        raise ConfigError(f"stitching needs SAEs that reconstruct their input; the {role} dictionary maps "
                          f"{cfg.in_features} inputs to {cfg.out_features} outputs"
                          + (" with a skip connection" if cfg.skip_connection else ""),
                          fix="set compare.stitching=false for transcoders")


def decoder_np(sae: torch.nn.Module) -> tuple[np.ndarray, np.ndarray]:
    return sae.W_dec.detach().float().cpu().numpy(), sae.b_dec.detach().float().cpu().numpy()


def squared_error(x: np.ndarray, x_hat: np.ndarray) -> np.ndarray:
    return ((x - x_hat) ** 2).sum(axis=1)


def novelty_gain(x: torch.Tensor, codes_small: sp.csr_matrix, small: torch.nn.Module,
                 codes_large: sp.csr_matrix, large: torch.nn.Module, *, chunk: int = 65536) -> tuple[np.ndarray, float]:
    """Per large latent, the mean drop in squared error from adding it alone to the small SAE;
    and the small SAE's mean squared error per token."""
    xs = x.float().cpu().numpy()
    d_s, b_s = decoder_np(small)
    r = xs - (codes_small @ d_s + b_s)
    d_l, _ = decoder_np(large)
    coo = codes_large.tocoo()
    rows, cols, vals = coo.row, coo.col, coo.data.astype(np.float64)
    dots = np.empty(len(vals), dtype=np.float64)
    for i in range(0, len(vals), chunk):
        s = slice(i, i + chunk)
        dots[s] = np.einsum("ij,ij->i", r[rows[s]], d_l[cols[s]])
    sq_norm = (d_l.astype(np.float64) ** 2).sum(axis=1)
    per = 2.0 * vals * dots - vals ** 2 * sq_norm[cols]
    gain = np.bincount(cols, weights=per, minlength=codes_large.shape[1]) / max(xs.shape[0], 1)
    return gain, float(squared_error(xs, xs - r).mean())


def classify(gain: np.ndarray, codes_large: sp.csr_matrix, mse_small: float, tolerance: float = 0.0) -> np.ndarray:
    """``novel`` / ``reconstruction`` / ``dead`` per large latent (the rule in the module docstring)."""
    fires = np.asarray((codes_large != 0).sum(axis=0)).ravel()
    out = np.where(gain > tolerance * mse_small, "novel", "reconstruction").astype(object)
    out[fires == 0] = "dead"
    return out


def swap_components(similarity: np.ndarray, reconstruction: np.ndarray,
                    swap_cosine: float = 0.7) -> list[tuple[np.ndarray, np.ndarray]]:
    """Connected groups ``(small latents, large latents)`` of the graph joining small latents to
    reconstruction latents at decoder cosine >= ``swap_cosine``; only groups with both sides."""
    n_s, n_l = similarity.shape
    edge = (similarity >= swap_cosine) & reconstruction[None, :]
    i, j = np.nonzero(edge)
    adj = sp.coo_matrix((np.ones(len(i)), (i, n_s + j)), shape=(n_s + n_l, n_s + n_l))
    _, label = connected_components(adj, directed=False)
    groups: dict[int, tuple[list[int], list[int]]] = {}
    for node in np.unique(np.r_[i, n_s + j]):
        side = groups.setdefault(int(label[node]), ([], []))
        (side[0] if node < n_s else side[1]).append(int(node if node < n_s else node - n_s))
    return [(np.array(s), np.array(l_)) for s, l_ in groups.values() if s and l_]


class StitchEvaluator:
    """Held-out error and L0 of any stitched SAE (kept small latents + added large latents)."""

    def __init__(self, x: torch.Tensor, codes_small: sp.csr_matrix, small: torch.nn.Module,
                 codes_large: sp.csr_matrix, large: torch.nn.Module) -> None:
        self.x = x.float().cpu().numpy()
        self.cs, self.cl = codes_small.tocsr(), codes_large.tocsr()
        self.cs_cols, self.cl_cols = self.cs.tocsc(), self.cl.tocsc()
        self.ds, self.bs = decoder_np(small)
        self.dl, self.bl = decoder_np(large)
        self.fire_s = np.asarray((self.cs != 0).sum(axis=0)).ravel()
        self.fire_l = np.asarray((self.cl != 0).sum(axis=0)).ravel()
        centred = self.x - self.x.mean(axis=0)
        self.variance = float((centred ** 2).sum(axis=1).mean())

    def evaluate(self, keep_small: np.ndarray, add_large: np.ndarray) -> dict[str, float]:
        x_hat = self.cs @ (self.ds * keep_small[:, None]) + self.cl @ (self.dl * add_large[:, None]) + self.bs
        return self._metrics(x_hat, self.fire_s[keep_small].sum() + self.fire_l[add_large].sum())

    def original(self, which: str) -> dict[str, float]:
        codes, dec, b, fires = ((self.cs, self.ds, self.bs, self.fire_s) if which == "small"
                                else (self.cl, self.dl, self.bl, self.fire_l))
        return self._metrics(codes @ dec + b, fires.sum())

    def swap_gain(self, small_ids: np.ndarray, large_ids: np.ndarray, residual: np.ndarray) -> float:
        """Mean drop in squared error from this swap alone (``residual`` = x - x_hat_small),
        computed on the tokens where the swapped latents fire."""
        cs, cl = self.cs_cols[:, small_ids], self.cl_cols[:, large_ids]
        rows = np.union1d(cs.indices, cl.indices)
        delta = cs.tocsr()[rows] @ self.ds[small_ids] - cl.tocsr()[rows] @ self.dl[large_ids]
        r = residual[rows]
        return float(-(2.0 * (r * delta).sum(axis=1) + (delta ** 2).sum(axis=1)).sum() / self.x.shape[0])

    def _metrics(self, x_hat: np.ndarray, n_fired: float) -> dict[str, float]:
        mse = float(squared_error(self.x, x_hat).mean())
        return {"mse_per_token": mse, "fvu": mse / max(self.variance, 1e-12),
                "l0": float(n_fired) / max(self.x.shape[0], 1)}


def _groups(n: int, n_groups: int) -> list[int]:
    """Cumulative counts for ``n`` items in ``n_groups`` steps (each step adds at least one)."""
    if n == 0:
        return []
    return sorted({max(1, round(n * (k + 1) / n_groups)) for k in range(min(n_groups, n))})


def stitched_family(ev: StitchEvaluator, gain: np.ndarray, classes: np.ndarray,
                    components: list[tuple[np.ndarray, np.ndarray]], *, n_groups: int = 8) -> pd.DataFrame:
    """MSE and L0 along the family: small -> + novel groups -> + swapped groups."""
    n_s, n_l = ev.ds.shape[0], ev.dl.shape[0]
    keep, add = np.ones(n_s, bool), np.zeros(n_l, bool)
    rows = [{"step": 0, "stage": "small", "n_small_kept": n_s, "n_large_added": 0, **ev.evaluate(keep, add)}]
    novel = np.flatnonzero(classes == "novel")
    novel = novel[np.argsort(-gain[novel], kind="stable")]
    for count in _groups(len(novel), n_groups):
        add[novel[:count]] = True
        rows.append({"step": len(rows), "stage": "add_novel", "n_small_kept": int(keep.sum()),
                     "n_large_added": int(add.sum()), **ev.evaluate(keep, add)})
    residual = ev.x - (ev.cs @ ev.ds + ev.bs)
    gains = [ev.swap_gain(c[0], c[1], residual) for c in components]
    order = [components[i] for i in np.argsort(-np.asarray(gains), kind="stable") if gains[i] > 0]
    done = 0
    for count in _groups(len(order), n_groups):
        for small_ids, large_ids in order[done:count]:
            keep[small_ids] = False
            add[large_ids] = True
        done = count
        rows.append({"step": len(rows), "stage": "swap", "n_small_kept": int(keep.sum()),
                     "n_large_added": int(add.sum()), **ev.evaluate(keep, add)})
    out = pd.DataFrame(rows)
    out.attrs["swaps_made"] = len(order)
    return out


@dataclass
class StitchResult:
    features: pd.DataFrame
    family: pd.DataFrame
    originals: dict[str, dict[str, float]]
    summary: dict[str, Any]


def stitch(small: torch.nn.Module, large: torch.nn.Module, x: torch.Tensor, *,
           codes_small: sp.csr_matrix | None = None, codes_large: sp.csr_matrix | None = None,
           tolerance: float = 0.0, swap_cosine: float = 0.7, n_groups: int = 8) -> StitchResult:
    """Classify the large SAE's latents against the small one and build the stitched family."""
    from core.compare.activations import encode_sparse
    from core.compare.matching import cosine_matrix

    check_sae(small, "small")
    check_sae(large, "large")
    codes_small = encode_sparse(small, x) if codes_small is None else codes_small
    codes_large = encode_sparse(large, x) if codes_large is None else codes_large
    gain, mse_small = novelty_gain(x, codes_small, small, codes_large, large)
    classes = classify(gain, codes_large, mse_small, tolerance)
    sim = cosine_matrix(small.W_dec, large.W_dec)
    max_cos = sim.max(axis=0)
    components = swap_components(sim, classes == "reconstruction", swap_cosine)
    ev = StitchEvaluator(x, codes_small, small, codes_large, large)
    family = stitched_family(ev, gain, classes, components, n_groups=n_groups)
    originals = {f"small ({small.cfg.d_sae})": ev.original("small"), f"large ({large.cfg.d_sae})": ev.original("large")}
    features = pd.DataFrame({"latent": np.arange(len(gain)), "class": classes, "gain": gain,
                             "relative_gain": gain / max(mse_small, 1e-12), "max_cos_small": np.round(max_cos, 4),
                             "best_small": sim.argmax(axis=0)})
    live = classes != "dead"
    proxy = max_cos < swap_cosine
    mse = family["mse_per_token"].to_numpy()
    lo, hi = originals[f"large ({large.cfg.d_sae})"]["mse_per_token"], originals[f"small ({small.cfg.d_sae})"]["mse_per_token"]
    summary = {
        "rule": f"novel iff adding the latent alone lowers the held-out squared error by more than "
                f"{tolerance:g} x the small SAE's (gain > {tolerance:g} * mse_small); dead if it never fires",
        "n_novel": int((classes == "novel").sum()), "n_reconstruction": int((classes == "reconstruction").sum()),
        "n_dead": int((~live).sum()),
        "novel_frac_of_live": round(float((classes[live] == "novel").mean()), 4) if live.any() else 0.0,
        "cosine_proxy_agreement": round(float((proxy[live] == (classes[live] == "novel")).mean()), 4) if live.any() else 0.0,
        "n_swap_groups": len(components), "n_swaps_made": int(family.attrs.get("swaps_made", 0)),
        "swap_cosine": swap_cosine,
        "mse_small": round(hi, 6), "mse_large": round(lo, 6),
        "family_mse_monotone": bool(np.all(np.diff(mse) <= 1e-9 * max(hi, 1.0))),
        "family_between_small_and_large": bool(np.all((mse[1:] <= hi + 1e-9) & (mse[1:] >= lo - 1e-9))),
        "family_end": {k: round(float(v), 6) for k, v in family.iloc[-1][["mse_per_token", "fvu", "l0"]].items()},
        "n_tokens": int(x.shape[0]),
    }
    return StitchResult(features=features, family=family, originals=originals, summary=summary)

"""Latent Scaling (Minder et al. 2025, "Overcoming sparsity artifacts in crosscoders"): is an
"exclusive" latent really absent from the other source?

A latent with (almost) no decoder in source ``o`` may still carry information that ``o`` has:
the L1 loss can shrink its decoder there to zero while ``o``'s reconstruction error keeps what
it would have written (*complete shrinkage*), or other latents may reconstruct the same thing
in ``o`` (*latent decoupling*). Latent Scaling asks how much of ``o``'s error, and of ``o``'s
reconstruction without the latent, moves with the latent's activation, against the same for
the latent's own source.

Minder et al. fit a scalar ``beta`` along the latent's own decoder direction, which needs both
sources in one space (a base and a chat model). Two different models (AntiBERTy and IgLM)
share no basis, so here the direction is fitted too: for a target ``y`` (per token, one source,
normalised units) the least-squares vector ``v_j = sum_x (f_j - mean f_j)(y - mean y) /
sum_x (f_j - mean f_j)^2`` is the closed-form per-unit-activation footprint of latent ``j`` in
``y`` (with one source space, ``beta`` is ``v_j``'s component along ``d_j``, also reported).
For an exclusive latent of source ``s`` with other source ``o``:

    nu_eps = |v_j(eps_o + f_j d_j^o)| / |v_j(eps_s + f_j d_j^s)|   (error, latent's part added back)
    nu_r   = |v_j(xhat_o - f_j d_j^o)| / |v_j(xhat_s)|              (reconstruction without it)

Near 0: exclusive. A latent is re-classed as shared when either ratio exceeds ``tau`` and three
times its own noise floor: the same ratio with the activations shifted by half a batch
(tokens paired at random), which is what a free direction picks up from noise alone.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from core.errors import ConfigError


def store_batches(stores: Sequence[Any], batch_tokens: int = 4096,
                  keep: Any = None) -> Iterator[torch.Tensor]:
    """Rows of aligned stores side by side (``[n, sum d]``), in store order."""
    base = stores[0]
    offsets = base.shard_offsets()
    for lo, hi in zip(offsets[:-1], offsets[1:], strict=True):
        parts = [s.read_rows(lo, hi, ("acts", "sample")) for s in stores]
        x = torch.cat([p["acts"].float() for p in parts], dim=1)
        if keep is not None:
            x = x[torch.as_tensor(keep(parts[0]["sample"].numpy()), dtype=torch.bool)]
        yield from x.split(int(batch_tokens))


class _Sums:
    """Running sums for one source: ``F^T y`` for error and reconstruction (and shifted F)."""

    def __init__(self, d_sae: int, width: int) -> None:
        z = lambda *s: torch.zeros(*s, dtype=torch.float64)  # noqa: E731
        self.fe, self.fr, self.fe_null, self.fr_null = (z(d_sae, width) for _ in range(4))
        self.se, self.sr = z(width), z(width)

    def add(self, f: torch.Tensor, f_null: torch.Tensor, eps: torch.Tensor, rec: torch.Tensor) -> None:
        e, r = eps.double(), rec.double()
        self.fe += f.T @ e
        self.fr += f.T @ r
        self.fe_null += f_null.T @ e
        self.fr_null += f_null.T @ r
        self.se += e.sum(0)
        self.sr += r.sum(0)


@torch.no_grad()
def latent_scaling(crosscoder: Any, batches: Iterable[torch.Tensor], a: int = 0, b: int = 1, *,
                   progress: bool = True, total: int | None = None) -> pd.DataFrame:
    """Per latent the footprint norms in sources ``a`` and ``b`` (see the module docstring)."""
    n_src = len(crosscoder.source_widths)
    if not (0 <= a < n_src and 0 <= b < n_src and a != b):
        raise ConfigError(f"sources {a} and {b} are not two distinct sources of a {n_src}-source crosscoder",
                          fix=f"choose two of 0..{n_src - 1}")
    crosscoder = crosscoder.eval()
    d_sae = int(crosscoder.cfg.d_sae)
    slices, scale = crosscoder.source_slices(), crosscoder.source_scale.double()
    sums = {s: _Sums(d_sae, slices[s].stop - slices[s].start) for s in (a, b)}
    s1 = torch.zeros(d_sae, dtype=torch.float64)
    s2 = torch.zeros(d_sae, dtype=torch.float64)
    s1n = torch.zeros(d_sae, dtype=torch.float64)
    n = 0
    for x in tqdm(batches, desc="latent scaling", unit="batch", total=total, disable=not progress):
        f = crosscoder.encode(x).float()
        x_hat = crosscoder.dense_decode(f).reshape(x.shape[0], -1)
        x = x.reshape(x.shape[0], -1)
        f_null = f.roll(x.shape[0] // 2, dims=0) if x.shape[0] > 1 else f
        fd = f.double()
        s1 += fd.sum(0)
        s2 += fd.pow(2).sum(0)
        s1n += f_null.double().sum(0)
        for s in (a, b):
            sl = slices[s]
            sums[s].add(fd, f_null.double(), (x[:, sl] - x_hat[:, sl]) * float(scale[s]),
                        x_hat[:, sl] * float(scale[s]))
        n += x.shape[0]
    if n == 0:
        raise ConfigError("latent scaling got no tokens", fix="pass a non-empty store")
    s2c = (s2 - s1.pow(2) / n).clamp_min(1e-12)
    out: dict[str, Any] = {"fires_sum": s1.numpy(), "f2_centred": s2c.numpy()}
    for s, tag in ((a, "a"), (b, "b")):
        m = sums[s]
        d = (crosscoder.W_dec[:, slices[s]].double() * scale[s])  # latent's decoder, normalised units
        mean_e, mean_r = m.se / n, m.sr / n
        own = s2[:, None] * d - (s1.pow(2) / n)[:, None] * d  # centred sum_x f_j * f_j d_j
        eps_plus = m.fe - s1[:, None] * mean_e + own
        rec_full = m.fr - s1[:, None] * mean_r
        rec_wo = rec_full - own
        null_e = m.fe_null - s1n[:, None] * mean_e
        null_r = m.fr_null - s1n[:, None] * mean_r
        for name, v in (("eps", eps_plus), ("rec", rec_full), ("rec_wo", rec_wo), ("eps_null", null_e),
                        ("rec_null", null_r)):
            out[f"{name}_{tag}"] = (v.norm(dim=1) / s2c).numpy()
        dn = d.pow(2).sum(1).clamp_min(1e-24)
        out[f"beta_eps_{tag}"] = ((eps_plus * d).sum(1) / (s2c * dn)).numpy()
        out[f"beta_rec_{tag}"] = ((rec_full * d).sum(1) / (s2c * dn)).numpy()
    frame = pd.DataFrame(out)
    frame.index.name = "latent"
    return frame


def ratios(frame: pd.DataFrame, classes: Sequence[str]) -> pd.DataFrame:
    """``nu_eps``, ``nu_r`` and their noise floors for the exclusive latents (NaN for others)."""
    c = np.asarray(classes, dtype=object)
    own = np.where(c == "a_only", "a", "b")
    oth = np.where(c == "a_only", "b", "a")
    pick = lambda col, who: np.array([frame[f"{col}_{w}"].iat[i] for i, w in enumerate(who)])  # noqa: E731
    excl = np.isin(c, ("a_only", "b_only"))
    with np.errstate(invalid="ignore", divide="ignore"):
        nu_e = pick("eps", oth) / pick("eps", own)
        nu_r = pick("rec_wo", oth) / pick("rec", own)
        null_e = pick("eps_null", oth) / pick("eps", own)
        null_r = pick("rec_null", oth) / pick("rec", own)
    out = pd.DataFrame({"nu_eps": nu_e, "nu_r": nu_r, "nu_eps_null": null_e, "nu_r_null": null_r}, index=frame.index)
    out[~excl] = np.nan
    return out


def reclassify(classes: Sequence[str], nu: pd.DataFrame, tau: float = 0.5, floor: float = 3.0) -> tuple[np.ndarray, np.ndarray]:
    """Classes after Latent Scaling and, per latent, why an exclusive one was moved
    (``shrinkage`` when nu_eps flags it, ``decoupling`` when nu_r does, ``both``)."""
    c = np.asarray(classes, dtype=object).copy()
    shrink = (nu["nu_eps"] > tau) & (nu["nu_eps"] > floor * nu["nu_eps_null"])
    decouple = (nu["nu_r"] > tau) & (nu["nu_r"] > floor * nu["nu_r_null"])
    why = np.full(len(c), "", dtype=object)
    why[shrink.to_numpy()] = "shrinkage"
    why[decouple.to_numpy()] = "decoupling"
    why[(shrink & decouple).to_numpy()] = "both"
    moved = np.isin(c, ("a_only", "b_only")) & (why != "")
    c[moved] = "shared"
    return c, why

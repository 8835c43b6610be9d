"""Which IMGT region and which amino acid each latent fires on, and how groups of latents differ.

For every latent, over a token sample: the share of its firing residues that lie in each IMGT
region (FR1-FR4, CDR1-CDR3) and that are each amino acid. Its *region* is the region holding
most of its firing residues and *region purity* that share (1.0: fires only inside one
region); likewise its *amino acid* and *amino-acid purity*. A group of latents (e.g. the novel
vs the reconstruction latents of a stitching) is then summarised by how many are CDR latents,
region-specific (purity >= 0.8) or residue-specific (amino-acid purity >= 0.5), beside the
share of residues that are CDR residues (what a latent firing at random would show).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

REGIONS = ("FR1", "CDR1", "FR2", "CDR2", "FR3", "CDR3", "FR4")
REGION_PURE = 0.8
AA_PURE = 0.5


def latent_concepts(codes: sp.csr_matrix, indicator: sp.csr_matrix, names: list[str]) -> pd.DataFrame:
    """Per latent: firing tokens, its region and amino acid with their purities.

    ``codes [n_tokens, n_latents]`` and ``indicator [n_tokens, n_concepts]`` hold the same tokens;
    concept names follow ``domains.protein.studies.antibody_regions`` (``IMGT:<region>``, ``aa:<X>``)."""
    fired = codes.copy()
    fired.data = (fired.data != 0).astype(np.float32)
    n_fire = np.asarray(fired.sum(axis=0)).ravel()
    counts = (fired.T @ indicator).toarray()
    share = counts / np.maximum(n_fire, 1)[:, None]
    reg = [names.index(f"IMGT:{r}") for r in REGIONS if f"IMGT:{r}" in names]
    aas = [i for i, n in enumerate(names) if n.startswith("aa:")]
    out = pd.DataFrame({"latent": np.arange(codes.shape[1]), "fires": n_fire.astype(np.int64)})
    if reg:
        out["region"] = np.array([names[i][5:] for i in reg])[share[:, reg].argmax(axis=1)]
        out["region_purity"] = share[:, reg].max(axis=1).round(4)
    if aas:
        out["amino_acid"] = np.array([names[i][3:] for i in aas])[share[:, aas].argmax(axis=1)]
        out["aa_purity"] = share[:, aas].max(axis=1).round(4)
    return out


def cdr_token_share(indicator: sp.csr_matrix, names: list[str]) -> float:
    cols = [names.index(f"IMGT:{r}") for r in REGIONS if r.startswith("CDR") and f"IMGT:{r}" in names]
    return float((indicator[:, cols].sum(axis=1) > 0).mean()) if cols else float("nan")


def by_group(concepts: pd.DataFrame, group: np.ndarray, n_tokens: int) -> dict[str, dict[str, Any]]:
    """Summary per group label (latents that never fire are left out)."""
    out: dict[str, dict[str, Any]] = {}
    live = concepts["fires"].to_numpy() > 0
    for label in pd.unique(group[live]):
        part = concepts[live & (group == label)]
        row: dict[str, Any] = {"n": int(len(part)),
                               "median_firing_rate": round(float(np.median(part["fires"])) / max(n_tokens, 1), 5)}
        if "region" in part:
            row["cdr_latent_share"] = round(float(part["region"].str.startswith("CDR").mean()), 4)
            row["region_specific_share"] = round(float((part["region_purity"] >= REGION_PURE).mean()), 4)
            row["median_region_purity"] = round(float(part["region_purity"].median()), 4)
            row["regions"] = {r: int(n) for r, n in part["region"].value_counts().items()}
        if "amino_acid" in part:
            row["aa_specific_share"] = round(float((part["aa_purity"] >= AA_PURE).mean()), 4)
            row["median_aa_purity"] = round(float(part["aa_purity"].median()), 4)
        out[str(label)] = row
    return out

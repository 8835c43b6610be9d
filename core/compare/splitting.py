"""Feature splitting across widths: which features of a wider dictionary refine which of a narrower one.

Each feature of the large dictionary gets at most one parent: the small feature whose
decoder direction is closest (``parent_by="cosine"``), kept when the cosine is at least
``min_cosine`` and (with a token sample) the parent fires on at least ``min_coactivation``
of the tokens where the child fires (a finer feature fires on a subset of its parent's
tokens). ``parent_by="coactivation"`` picks instead the small feature that fires on the
largest share of the child's tokens, kept at ``min_coactivation`` (and ``min_cosine``, which
may be set to -1): the behavioural view, which finds Matryoshka refinements whose decoder
directions are far from their parents'. Children that fire on fewer than ``min_child_fires``
sample tokens get no parent by co-activation (a share of two tokens says little). Reading the tree:

- ``one_to_one``: small features with exactly one child (kept as they were);
- ``one_to_many``: small features with two or more children (split finer);
- ``orphan``: small features with no child (gone, or merged into something else);
- ``unparented``: large features with no parent (new directions).

For a Matryoshka dictionary the "small" dictionary is a prefix of its own latents and the
children are sought among the latents the next prefix adds; the parent stays in the larger
prefix, so there ``orphan`` means "not refined", not "lost".
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch

from core.compare.activations import coactivation
from core.compare.matching import cosine_matrix


@dataclass
class SplitTree:
    """Parent -> child edges between a small and a large set of features."""

    edges: pd.DataFrame
    n_small: int
    n_large: int
    child_offset: int = 0

    def children_per_parent(self) -> np.ndarray:
        return np.bincount(self.edges["parent"].to_numpy(np.int64), minlength=self.n_small)

    def counts(self) -> dict[str, float | int]:
        per = self.children_per_parent()
        split = per[per >= 2]
        return {"n_small": self.n_small, "n_large": self.n_large,
                "one_to_one": int((per == 1).sum()), "one_to_many": int((per >= 2).sum()),
                "orphan": int((per == 0).sum()), "unparented": int(self.n_large - len(self.edges)),
                "children_of_split_parents_mean": round(float(split.mean()), 2) if len(split) else 0.0,
                "children_max": int(per.max()) if len(per) else 0}

    def table(self) -> pd.DataFrame:
        """The whole tree as rows: every edge, every orphan (child -1), every unparented (parent -1)."""
        orphans = np.flatnonzero(self.children_per_parent() == 0)
        parented = set(self.edges["child"].tolist())
        unparented = [j for j in range(self.child_offset, self.child_offset + self.n_large) if j not in parented]
        extra = pd.DataFrame({"parent": np.r_[orphans, np.full(len(unparented), -1)],
                              "child": np.r_[np.full(len(orphans), -1), unparented]}).astype(np.int64)
        out = pd.concat([self.edges, extra], ignore_index=True)
        return out.sort_values(["parent", "child"], kind="stable").reset_index(drop=True)


def split_tree(small: torch.Tensor, large: torch.Tensor, *, coact: np.ndarray | None = None,
               min_cosine: float = 0.7, min_coactivation: float = 0.5, child_offset: int = 0,
               similarity: np.ndarray | None = None, parent_by: str = "cosine",
               child_fires: np.ndarray | None = None, min_child_fires: int = 5) -> SplitTree:
    """Tree from decoder rows ``small [n_s, d]`` and ``large [n_l, d]``; ``coact[i, j]`` is
    ``P(small i fires | large j fires)`` on a token sample (None: decoder cosine alone).
    Child ids are ``child_offset + j`` (a Matryoshka prefix's new latents keep their own ids)."""
    if parent_by not in ("cosine", "coactivation"):
        raise ValueError(f"parent_by must be cosine or coactivation, not {parent_by!r}")
    if parent_by == "coactivation" and coact is None:
        raise ValueError("parent_by='coactivation' needs the co-activation matrix of a token sample")
    sim = cosine_matrix(small, large) if similarity is None else similarity
    parent = (sim if parent_by == "cosine" else coact).argmax(axis=0)
    cos = sim[parent, np.arange(sim.shape[1])]
    keep = cos >= min_cosine
    co = np.full(len(parent), np.nan, dtype=np.float32)
    if coact is not None:
        co = coact[parent, np.arange(sim.shape[1])]
        keep &= co >= min_coactivation
    if parent_by == "coactivation" and child_fires is not None:
        keep &= np.asarray(child_fires) >= min_child_fires
    j = np.flatnonzero(keep)
    edges = pd.DataFrame({"parent": parent[j].astype(np.int64), "child": (j + child_offset).astype(np.int64),
                          "cosine": np.round(cos[j], 4), "coactivation": np.round(co[j], 4)})
    return SplitTree(edges=edges, n_small=int(sim.shape[0]), n_large=int(sim.shape[1]), child_offset=child_offset)


def nested_trees(decoder: torch.Tensor, prefixes: Sequence[int], codes: sp.csr_matrix | None = None,
                 **kw) -> dict[tuple[int, int], SplitTree]:
    """One tree per consecutive pair of Matryoshka prefixes ``(p, q)``: parents are latents
    ``[0, p)``, children are sought among latents ``[p, q)``."""
    out = {}
    sizes = sorted(int(p) for p in prefixes)
    for p, q in zip(sizes[:-1], sizes[1:], strict=True):
        co = None if codes is None else coactivation(codes[:, :p], codes[:, p:q])
        fires = None if codes is None else np.diff(codes[:, p:q].tocsc().indptr)
        out[(p, q)] = split_tree(decoder[:p], decoder[p:q], coact=co, child_offset=p, child_fires=fires, **kw)
    return out

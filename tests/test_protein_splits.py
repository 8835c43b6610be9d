"""Homology-aware splits: clusters and groups never straddle train/valid/test."""

from __future__ import annotations

import random
import shutil

import pytest

from core.errors import MissingDependencyError
from domains.protein.records import ProteinRecord
from domains.protein.splits import assign_splits, make_splits, mmseqs_binary, mmseqs_clusters

needs_mmseqs = pytest.mark.skipif(shutil.which("mmseqs") is None, reason="mmseqs2 not installed")


def _families(n_fam: int = 12, per: int = 5, length: int = 120, seed: int = 3) -> list[ProteinRecord]:
    """Families of near-identical sequences (5 % point mutations), unrelated between families."""
    rng = random.Random(seed)
    aa = "ACDEFGHIKLMNPQRSTVWY"
    out = []
    for f in range(n_fam):
        root = [rng.choice(aa) for _ in range(length)]
        for m in range(per):
            s = list(root)
            for i in rng.sample(range(length), length // 20):
                s[i] = rng.choice(aa)
            out.append(ProteinRecord(f"fam{f}_m{m}", "".join(s), meta={"family": f"fam{f}"}))
    return out


@pytest.fixture(autouse=True)
def _own_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("SPARSESCOPE_CACHE", str(tmp_path / "cache"))


@needs_mmseqs
def test_mmseqs_finds_the_families_and_splits_keep_them_whole():
    recs = _families()
    clusters = mmseqs_clusters(recs, min_seq_id=0.5, coverage=0.8)
    fam_of = {r.id: r.meta["family"] for r in recs}
    # every cluster holds one family, and each family is one cluster
    by_cluster = {}
    for rid, rep in clusters.items():
        by_cluster.setdefault(rep, set()).add(fam_of[rid])
    assert all(len(f) == 1 for f in by_cluster.values())
    assert len(by_cluster) == 12
    table = make_splits(recs, min_seq_id=0.5, fractions=(0.6, 0.2, 0.2), seed=1)
    assert (table.groupby("cluster")["split"].nunique() == 1).all()
    assert set(table["split"]) == {"train", "valid", "test"}
    assert (table.split == "train").sum() > (table.split == "test").sum()


@needs_mmseqs
def test_random_split_does_mix_families():
    recs = _families()
    table = make_splits(recs, method="random", seed=0, fractions=(0.5, 0.25, 0.25))
    table["family"] = [r.meta["family"] for r in recs]
    assert (table.groupby("family")["split"].nunique() > 1).any()


def test_groups_and_clusters_merge():
    ids = [f"s{i}" for i in range(40)]
    clusters = {i: f"c{int(i[1:]) // 4}" for i in ids}  # 10 clusters of 4
    groups = {"s3": "g0", "s4": "g0", "s11": "g1", "s12": "g1"}  # link c0-c1 and c2-c3
    split = assign_splits(ids, clusters, groups=groups, fractions=(0.5, 0.25, 0.25), seed=5)
    comp = {}
    for i in ids:
        c = clusters[i]
        comp.setdefault(c, set()).add(split[i])
    assert all(len(s) == 1 for s in comp.values())
    assert split["s0"] == split["s7"] and split["s8"] == split["s15"]
    counts = {k: list(split.values()).count(k) for k in ("train", "valid", "test")}
    assert counts["train"] >= 16 and counts["valid"] >= 4 and counts["test"] >= 4


def test_missing_mmseqs_names_the_package():
    with pytest.raises(MissingDependencyError) as err:
        mmseqs_binary("mmseqs-not-installed-here")
    assert "mmseqs2" in str(err.value) and "split.method=random" in str(err.value)

"""Train/valid/test splits that keep homologous proteins together.

Scoring a feature on near-copies of the proteins that selected it overstates how well it
generalises. Clustering with MMseqs2 (``easy-cluster`` at a minimum identity and coverage,
30 % / 80 % by default) and then dealing whole clusters to the splits keeps every pair of
homologues on one side. Extra grouping constraints (both chains of one antibody, isoforms
of one gene) are merged with the clusters by union-find, so a group never straddles splits
either. ``method="random"`` splits sequences independently, when that is what is wanted.
"""

from __future__ import annotations

import hashlib
import logging
import random
import shutil
import subprocess
import tempfile
from collections import defaultdict
from collections.abc import Mapping, Sequence
from pathlib import Path

import pandas as pd

from core.cache import cache_dir
from core.errors import ConfigError, DataError, MissingDependencyError
from core.io import atomic_path
from domains.protein.records import ProteinRecord

log = logging.getLogger(__name__)

SPLITS = ("train", "valid", "test")


def mmseqs_binary(name: str = "mmseqs") -> str:
    path = shutil.which(name)
    if path is None:
        raise MissingDependencyError(
            "MMseqs2 is not installed (needed for homology-aware splits)",
            fix="install the Debian/Ubuntu package 'mmseqs2' (sudo apt-get install -y mmseqs2) or "
                "conda install -c bioconda mmseqs2; or set split.method=random")
    return path


def mmseqs_clusters(records: Sequence[ProteinRecord], *, min_seq_id: float = 0.3, coverage: float = 0.8,
                    cov_mode: int = 0, threads: int = 2, cache: bool = True,
                    binary: str = "mmseqs") -> dict[str, str]:
    """Cluster representative of each record id, from ``mmseqs easy-cluster``.

    Results are cached under the user cache dir, keyed by the sequences and the settings.
    """
    if not 0 < min_seq_id <= 1 or not 0 < coverage <= 1:
        raise ConfigError(f"min_seq_id={min_seq_id} and coverage={coverage} must lie in (0, 1]",
                          fix="e.g. split.min_seq_id=0.3 split.coverage=0.8")
    exe = mmseqs_binary(binary)
    h = hashlib.sha256()
    for r in records:
        h.update(f">{r.id}\n{r.sequence}\n".encode())
    h.update(f"{min_seq_id}|{coverage}|{cov_mode}".encode())
    cached = cache_dir("mmseqs") / f"clusters_{h.hexdigest()[:20]}.tsv" if cache else None
    if cached is not None and cached.exists():
        return _read_cluster_tsv(cached)
    with tempfile.TemporaryDirectory(prefix="sparsescope_mmseqs_") as tmp:
        tmp = Path(tmp)
        fasta = tmp / "in.fasta"
        fasta.write_text("".join(f">{r.id}\n{r.sequence}\n" for r in records))
        cmd = [exe, "easy-cluster", str(fasta), str(tmp / "res"), str(tmp / "work"),
               "--min-seq-id", str(min_seq_id), "-c", str(coverage), "--cov-mode", str(cov_mode),
               "--threads", str(threads), "-v", "1"]
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            raise DataError(f"mmseqs easy-cluster failed (exit {proc.returncode}): "
                            f"{(proc.stderr or proc.stdout).strip()[-400:]}",
                            fix="check the sequences (MMseqs2 needs non-empty protein sequences)")
        result = tmp / "res_cluster.tsv"
        clusters = _read_cluster_tsv(result)
        if cached is not None:
            with atomic_path(cached) as out:
                shutil.copyfile(result, out)
    missing = [r.id for r in records if r.id not in clusters]
    for rid in missing:
        clusters[rid] = rid
    return clusters


def _read_cluster_tsv(path: Path) -> dict[str, str]:
    out = {}
    for line in path.read_text().splitlines():
        if line.strip():
            rep, member = line.split("\t")[:2]
            out[member] = rep
    return out


def _union_find(ids: Sequence[str], links: Sequence[Mapping[str, str]]) -> dict[str, str]:
    parent = {i: i for i in ids}

    def find(x: str) -> str:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for mapping in links:
        first: dict[str, str] = {}
        for rid in ids:
            key = mapping.get(rid)
            if key is None:
                continue
            if key in first:
                a, b = find(rid), find(first[key])
                if a != b:
                    parent[a] = b
            else:
                first[key] = rid
    return {i: find(i) for i in ids}


def assign_splits(ids: Sequence[str], clusters: Mapping[str, str] | None = None, *,
                  fractions: Sequence[float] = (0.8, 0.1, 0.1), seed: int = 0,
                  groups: Mapping[str, str] | None = None,
                  weights: Mapping[str, float] | None = None) -> dict[str, str]:
    """Deal whole components (clusters merged with ``groups``) to train/valid/test.

    Components are shuffled (``seed``) and each goes to the split furthest below its target
    share of ``weights`` (default: one per sequence), so shares come out close to
    ``fractions`` even with a few large clusters. With neither clusters nor groups every
    sequence is its own component (a random split).
    """
    if len(fractions) != 3 or any(f < 0 for f in fractions) or sum(fractions) <= 0:
        raise ConfigError(f"split fractions {list(fractions)} must be three non-negative numbers",
                          fix="e.g. split.fractions=[0.8,0.1,0.1]")
    total_f = float(sum(fractions))
    target = [f / total_f for f in fractions]
    links = [m for m in (clusters, groups) if m]
    comp = _union_find(list(ids), links) if links else {i: i for i in ids}
    members: dict[str, list[str]] = defaultdict(list)
    for rid in ids:
        members[comp[rid]].append(rid)
    order = sorted(members)
    random.Random(seed).shuffle(order)
    w = {rid: float(weights[rid]) if weights else 1.0 for rid in ids}
    total = sum(w.values()) or 1.0
    filled = [0.0, 0.0, 0.0]
    out: dict[str, str] = {}
    for c in order:
        size = sum(w[r] for r in members[c])
        deficit = [target[k] - filled[k] / total for k in range(3)]
        k = max(range(3), key=lambda i: (deficit[i], -i))
        for r in members[c]:
            out[r] = SPLITS[k]
        filled[k] += size
    return out


def make_splits(records: Sequence[ProteinRecord], *, method: str = "mmseqs", min_seq_id: float = 0.3,
                coverage: float = 0.8, fractions: Sequence[float] = (0.8, 0.1, 0.1), seed: int = 0,
                group_key: str | None = None, threads: int = 2) -> pd.DataFrame:
    """Split table: one row per record with ``id``, ``cluster`` and ``split``.

    ``method``: ``"mmseqs"`` (homology-aware) or ``"random"``. ``group_key`` names a
    ``meta`` field whose equal values must share a split (e.g. ``"pair"`` for antibodies).
    """
    ids = [r.id for r in records]
    if method == "mmseqs":
        clusters = mmseqs_clusters(records, min_seq_id=min_seq_id, coverage=coverage, threads=threads)
    elif method == "random":
        clusters = {i: i for i in ids}
    else:
        raise ConfigError(f"unknown split method {method!r}", fix="use split.method=mmseqs or random")
    groups = {r.id: str(r.meta[group_key]) for r in records if group_key and group_key in r.meta} or None
    split = assign_splits(ids, clusters if method == "mmseqs" else None, fractions=fractions, seed=seed,
                          groups=groups)
    frame = pd.DataFrame({"id": ids, "cluster": [clusters[i] for i in ids], "split": [split[i] for i in ids]})
    counts = frame["split"].value_counts().to_dict()
    log.info("splits (%s): %s sequences in %d clusters -> %s", method, len(ids), frame["cluster"].nunique(),
             counts)
    return frame


def cached_splits(records: Sequence, sp: Mapping, run_dir: str | Path) -> pd.DataFrame:
    """The split table of ``run_dir/data/splits.tsv`` when it covers exactly ``records``,
    else a new one from ``make_splits`` with the config ``sp``, written atomically."""
    from core.io import atomic_path

    path = Path(run_dir) / "data" / "splits.tsv"
    if path.exists():
        table = pd.read_csv(path, sep="\t", dtype=str)
        if set(table["id"]) == {r.id for r in records}:
            return table
    table = make_splits(records, method=str(sp.method), min_seq_id=float(sp.min_seq_id),
                        coverage=float(sp.coverage), fractions=tuple(sp.fractions), seed=int(sp.seed),
                        group_key=sp.get("group_key"))
    with atomic_path(path) as tmp:
        table.to_csv(tmp, sep="\t", index=False)
    return table

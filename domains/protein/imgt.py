"""IMGT numbering of antibody chains with ANARCII, and the framework/CDR regions it implies.

ANARCII (BSD-3, ships its models) numbers a chain as a list of ``((IMGT position,
insertion code), residue)`` with ``'-'`` where the chain has no residue, plus the chain type
(H, K, L). The IMGT regions are fixed ranges of those positions (Lefranc et al. 2003):
FR1 1-26, CDR1 27-38, FR2 39-55, CDR2 56-65, FR3 66-104, CDR3 105-117, FR4 118-128.
Insertions (111A, 112A...) take the region of their position.

Numbering is slow on a CPU (a sequence-to-sequence model decodes each chain), so results
are cached per sequence in a SQLite file under the user cache dir, keyed by the ANARCII
version, mode and sequence; a second run over the same chains is instant.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import io
import json
import logging
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from core.cache import cache_dir
from core.errors import MissingDependencyError

log = logging.getLogger(__name__)

IMGT_REGIONS: tuple[tuple[str, int, int], ...] = (
    ("FR1", 1, 26), ("CDR1", 27, 38), ("FR2", 39, 55), ("CDR2", 56, 65),
    ("FR3", 66, 104), ("CDR3", 105, 117), ("FR4", 118, 128),
)
REGION_NAMES: tuple[str, ...] = tuple(r[0] for r in IMGT_REGIONS)
CHAIN_TYPES = {"H": "heavy", "K": "kappa", "L": "lambda"}


def region_of(position: int) -> str | None:
    """IMGT region of an IMGT position (``None`` outside 1-128)."""
    for name, lo, hi in IMGT_REGIONS:
        if lo <= position <= hi:
            return name
    return None


@dataclass
class Numbering:
    """One chain's numbering: per residue (sequence index, IMGT position, insertion)."""

    chain_type: str | None
    residues: list[tuple[int, int, str]] = field(default_factory=list)
    score: float | None = None
    error: str | None = None

    @property
    def chain(self) -> str | None:
        return CHAIN_TYPES.get(self.chain_type or "")

    def regions(self) -> list[str | None]:
        """Region per numbered residue, in the order of :attr:`residues`."""
        return [region_of(pos) for _, pos, _ in self.residues]

    def region_spans(self) -> list[tuple[str, int, int]]:
        """``(region, start, end_exclusive)`` runs over sequence indices."""
        spans: list[tuple[str, int, int]] = []
        for (idx, _pos, _), reg in zip(self.residues, self.regions(), strict=True):
            if reg is None:
                continue
            if spans and spans[-1][0] == reg and spans[-1][2] == idx:
                spans[-1] = (reg, spans[-1][1], idx + 1)
            else:
                spans.append((reg, idx, idx + 1))
        return spans

    def to_json(self) -> str:
        return json.dumps({"chain_type": self.chain_type, "residues": self.residues, "score": self.score,
                           "error": self.error})

    @classmethod
    def from_json(cls, text: str) -> Numbering:
        d = json.loads(text)
        return cls(d["chain_type"], [tuple(r) for r in d["residues"]], d["score"], d["error"])


def from_anarcii(sequence: str, result: dict) -> Numbering:
    """Convert one ANARCII result (``numbering``, ``chain_type``, ``query_start``...) for ``sequence``.

    Numbered residues are matched to the sequence from ``query_start`` on; a residue that
    disagrees with the sequence marks the whole numbering as failed rather than shifting
    every region by one.
    """
    if result.get("error") or not result.get("numbering"):
        return Numbering(None, [], result.get("score"), str(result.get("error") or "not numbered"))
    idx = int(result.get("query_start") or 0)
    residues: list[tuple[int, int, str]] = []
    for (pos, ins), aa in result["numbering"]:
        if aa == "-":
            continue
        if idx >= len(sequence) or sequence[idx] != aa:
            return Numbering(result.get("chain_type"), [], result.get("score"),
                             f"numbered residue {aa!r} at IMGT {pos}{ins.strip()} does not match "
                             f"sequence index {idx}")
        residues.append((idx, int(pos), str(ins).strip()))
        idx += 1
    score = result.get("score")
    return Numbering(result.get("chain_type"), residues, float(score) if score is not None else None, None)


class NumberingCache:
    """Per-sequence numbering results in SQLite (safe for several processes)."""

    def __init__(self, path: str | Path | None = None, *, tag: str = "") -> None:
        self.path = Path(path) if path else cache_dir("anarcii") / "numbering.sqlite"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.tag = tag
        with self._connect() as db:
            db.execute("CREATE TABLE IF NOT EXISTS numbering (key TEXT PRIMARY KEY, value TEXT)")

    def _connect(self) -> sqlite3.Connection:
        return sqlite3.connect(self.path, timeout=60)

    def key(self, sequence: str) -> str:
        return hashlib.sha256(f"{self.tag}|{sequence}".encode()).hexdigest()

    def get_many(self, sequences: Sequence[str]) -> dict[str, Numbering]:
        keys = {self.key(s): s for s in sequences}
        out: dict[str, Numbering] = {}
        with contextlib.closing(self._connect()) as db:
            items = list(keys)
            for i in range(0, len(items), 500):
                chunk = items[i:i + 500]
                q = f"SELECT key, value FROM numbering WHERE key IN ({','.join('?' * len(chunk))})"
                for k, v in db.execute(q, chunk):
                    out[keys[k]] = Numbering.from_json(v)
        return out

    def put_many(self, items: dict[str, Numbering]) -> None:
        with contextlib.closing(self._connect()) as db, db:
            db.executemany("INSERT OR REPLACE INTO numbering VALUES (?, ?)",
                           [(self.key(s), n.to_json()) for s, n in items.items()])


def export_numbering(sequences: Sequence[str], path: str | Path, *, mode: str = "speed") -> Path:
    """Write the cached numbering of ``sequences`` to a gzipped TSV that :func:`import_numbering` reads.

    Lets a case study ship the numbering of its default chains, so a fresh machine skips the
    slow first ANARCII pass; the file records the ANARCII version and mode it came from.
    """
    import gzip

    from core.io import atomic_path

    tag = f"anarcii={anarcii_version()}|mode={mode}|scheme=imgt"
    found = NumberingCache(tag=tag).get_many(list(dict.fromkeys(sequences)))
    with atomic_path(path) as tmp, gzip.open(tmp, "wt") as fh:
        fh.write(f"# {tag}\n")
        for seq, n in found.items():
            fh.write(f"{seq}\t{n.to_json()}\n")
    return Path(path)


def import_numbering(path: str | Path, cache: NumberingCache | None = None, *, mode: str = "speed") -> int:
    """Seed the cache from an :func:`export_numbering` file made with the same ANARCII version and
    mode (other files are ignored, so numbering is never mixed across versions); returns the count."""
    import gzip

    tag = f"anarcii={anarcii_version()}|mode={mode}|scheme=imgt"
    cache = cache or NumberingCache(tag=tag)
    with gzip.open(path, "rt") as fh:
        head = fh.readline().strip()
        if head != f"# {tag}":
            log.info("not using %s: made with %s, this is %s", path, head[2:], tag)
            return 0
        items = {}
        for line in fh:
            seq, _, js = line.rstrip("\n").partition("\t")
            if seq and js:
                items[seq] = Numbering.from_json(js)
    cache.put_many(items)
    return len(items)


def anarcii_version() -> str:
    try:
        from importlib.metadata import version

        return version("anarcii")
    except Exception:  # noqa: BLE001 - no metadata means not installed
        return "missing"


def number_chains(sequences: Sequence[str], *, mode: str = "speed", batch_size: int = 64,
                  ncpu: int = 2, cache: NumberingCache | bool | None = True, chunk: int = 256,
                  progress: bool = True) -> list[Numbering]:
    """IMGT numbering for each sequence (same order); cached ones are not recomputed.

    ``mode``: ANARCII's ``"speed"`` or ``"accuracy"``. New results are written to the cache
    every ``chunk`` sequences, so an interrupted run keeps what it finished.
    """
    tag = f"anarcii={anarcii_version()}|mode={mode}|scheme=imgt"
    store = cache if isinstance(cache, NumberingCache) else (NumberingCache(tag=tag) if cache else None)
    if isinstance(store, NumberingCache) and not store.tag:
        store.tag = tag
    done = store.get_many(list(set(sequences))) if store else {}
    todo = sorted({s for s in sequences if s not in done})
    if todo:
        try:
            from anarcii import Anarcii
        except ImportError:
            raise MissingDependencyError("anarcii (IMGT numbering of antibodies) is not installed",
                                         fix="pip install anarcii") from None
        model = _anarcii(Anarcii, mode, batch_size, ncpu)
        from tqdm.auto import tqdm

        bar = tqdm(total=len(todo), desc="IMGT numbering (anarcii)", unit="chain", disable=not progress)
        for i in range(0, len(todo), chunk):
            part = todo[i:i + chunk]
            with contextlib.redirect_stdout(io.StringIO()):
                raw = model.number({f"s{j}": s for j, s in enumerate(part)})
            new = {s: from_anarcii(s, raw.get(f"s{j}", {})) for j, s in enumerate(part)}
            done.update(new)
            if store:
                store.put_many(new)
            bar.update(len(part))
        bar.close()
    return [done[s] for s in sequences]


@functools.lru_cache(maxsize=2)
def _anarcii(cls, mode: str, batch_size: int, ncpu: int):
    """One ANARCII model per process and setting (loading costs ~6 s; streaming callers number
    batch after batch)."""
    import torch

    threads = torch.get_num_threads()
    model = cls(seq_type="antibody", mode=mode, batch_size=batch_size, cpu=True, ncpu=ncpu, verbose=False)
    torch.set_num_threads(threads)
    return model


class ImgtRegions:
    """Per-residue IMGT numbering and region of antibody chains, for ``sparsescope annotate``.

    Called on a batch of samples, returns per sample ``{"position", "imgt", "region"}`` over the
    numbered residues (0-based positions), or None for a chain ANARCII cannot number (a
    non-antibody protein, a fragment), so mixed inputs simply lack the region bar."""

    name = "IMGT"

    def __init__(self, mode: str = "speed", batch_size: int = 64, ncpu: int = 2) -> None:
        from domains.protein.tracks import REGION_COLOURS

        self.mode, self.batch_size, self.ncpu = mode, int(batch_size), int(ncpu)
        self.colours = dict(REGION_COLOURS)

    def __call__(self, samples: Sequence) -> list[dict | None]:
        nums = number_chains([s.text for s in samples], mode=self.mode, batch_size=self.batch_size,
                             ncpu=self.ncpu, progress=False)
        out: list[dict | None] = []
        for n in nums:
            if n.error or not n.residues:
                out.append(None)
                continue
            out.append({"position": [i for i, _, _ in n.residues],
                        "imgt": [f"{pos}{ins}" for _, pos, ins in n.residues], "region": n.regions()})
        return out

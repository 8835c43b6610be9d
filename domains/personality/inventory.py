"""Big Five inventories in the Machine Personality Inventory (MPI) CSV format.

MPI (Jiang et al. 2023) stores one statement per row with four columns: ``label_raw`` (the
facet, e.g. "Anxiety"), ``text`` (a verb phrase completed as "You <text>."), ``label_ocean``
(the trait letter O, C, E, A or N) and ``key`` (1 when agreeing raises the trait, -1 when it
lowers it). The same loader reads the published files from disk and the built-in inventory
that ships with this package, so the scoring code never knows which one it got.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from core.errors import DataError

TRAITS: dict[str, str] = {
    "O": "openness",
    "C": "conscientiousness",
    "E": "extraversion",
    "A": "agreeableness",
    "N": "neuroticism",
}
COLUMNS = ("label_raw", "text", "label_ocean", "key")
BUILTIN_PATH = Path(__file__).resolve().parent / "data" / "inventory.csv"


@dataclass(frozen=True)
class Item:
    """One inventory statement; ``key`` is +1 (agreeing raises the trait) or -1 (reverse-keyed)."""

    id: str
    facet: str
    text: str
    trait: str
    key: int

    def statement(self) -> str:
        """The statement as the model reads it: "You <text>."."""
        body = self.text.strip().rstrip(".").strip()
        if body[:1].isupper() and not body[:2].isupper() and not body.startswith("I "):
            body = body[0].lower() + body[1:]
        return f"You {body}."


def _parse_key(raw: str) -> int | None:
    try:
        value = float(raw.strip())
    except ValueError:
        return None
    return int(value) if value in (1.0, -1.0) else None


def load_inventory(path: str | Path, *, traits: Sequence[str] | None = None) -> list[Item]:
    """Read an MPI-format CSV; every bad row raises a DataError naming the file and the row.

    ``traits`` keeps only those trait letters (all five by default).
    """
    path = Path(path)
    if not path.exists():
        raise DataError("inventory file not found", path=str(path),
                        fix="give the path of an MPI-format CSV (label_raw,text,label_ocean,key)")
    with open(path, newline="", encoding="utf-8-sig") as fh:
        reader = csv.DictReader(fh)
        header = [h.strip() for h in (reader.fieldnames or [])]
        missing = [c for c in COLUMNS if c not in header]
        if missing:
            raise DataError(f"missing column {', '.join(repr(c) for c in missing)} (found {header})",
                            path=str(path), fix=f"the header must contain {', '.join(COLUMNS)}")
        items: list[Item] = []
        for n, row in enumerate(reader, start=1):
            row = {(k or "").strip(): (v or "") for k, v in row.items()}
            where = f"row {n} (line {n + 1})"
            trait = row["label_ocean"].strip().upper()
            if trait not in TRAITS:
                raise DataError(f"unknown trait letter {row['label_ocean']!r}", path=str(path), record=where,
                                fix=f"label_ocean must be one of {', '.join(TRAITS)}")
            key = _parse_key(row["key"])
            if key is None:
                raise DataError(f"unknown key {row['key']!r}", path=str(path), record=where,
                                fix="key must be 1 (agreeing raises the trait) or -1 (reverse-keyed)")
            text = row["text"].strip()
            if not text:
                raise DataError("empty statement text", path=str(path), record=where,
                                fix="write the statement in the text column")
            items.append(Item(id=f"{trait}{n:03d}", facet=row["label_raw"].strip(), text=text, trait=trait,
                              key=key))
    if traits is not None:
        wanted = {t.upper() for t in traits}
        unknown = sorted(wanted - set(TRAITS))
        if unknown:
            raise DataError(f"unknown trait letter {unknown[0]!r} requested", path=str(path),
                            fix=f"choose traits from {', '.join(TRAITS)}")
        items = [it for it in items if it.trait in wanted]
    if not items:
        raise DataError("the inventory has no items", path=str(path),
                        fix="add statements, one per row, or select traits that the file contains")
    return items


def builtin_inventory(*, traits: Sequence[str] | None = None) -> list[Item]:
    """The project's own 40-item inventory: eight statements per trait, four of each key."""
    return load_inventory(BUILTIN_PATH, traits=traits)


def stratified_halves(items: Sequence[Item], seed: int = 0) -> tuple[list[int], list[int]]:
    """Split item indices into two halves with each trait and key spread evenly across them.

    Steering sweeps choose a strength on one half and report on the other; a plain random
    split of 40 items could leave a trait with one item in a half.
    """
    import numpy as np

    rng = np.random.default_rng(seed)
    first: list[int] = []
    second: list[int] = []
    groups: dict[tuple[str, int], list[int]] = {}
    for i, it in enumerate(items):
        groups.setdefault((it.trait, it.key), []).append(i)
    flip = 0
    for key in sorted(groups):
        idx = [groups[key][j] for j in rng.permutation(len(groups[key]))]
        cut = (len(idx) + flip) // 2
        flip = 1 - flip if len(idx) % 2 else flip
        first.extend(idx[:cut])
        second.extend(idx[cut:])
    return sorted(first), sorted(second)

"""A protein as every reader returns it, and the checks every reader applies.

Readers differ in what they carry (FASTA: id and sequence; Swiss-Prot and UniProt TSV:
features, keywords, cross-references) but hand back the same :class:`ProteinRecord`, so
concepts, splits and harvest never care where a protein came from.

Bad input is a fact of life with public files: a record with digits in its sequence, an
empty record, one longer than the model takes, an id seen twice. :class:`InputPolicy`
decides whether such a record stops the run (``on_error="stop"``, the default: a run that
silently drops data is worse than one that stops) or is skipped and counted
(``on_error="skip"``); every message names the file, the line and the record.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from core.errors import ConfigError, DataError
from core.samples import Sample
from domains.protein.features import Feature

log = logging.getLogger(__name__)

STANDARD_AA = "ACDEFGHIKLMNPQRSTVWY"
# IUPAC extras that protein language models accept: unknown, ambiguous, rare residues.
EXTENDED_AA = "XBZUOJ"


@dataclass
class ProteinRecord:
    """One protein: id, sequence and whatever annotation its source carried."""

    id: str
    sequence: str
    features: list[Feature] = field(default_factory=list)
    keywords: list[str] = field(default_factory=list)
    xrefs: dict[str, list[str]] = field(default_factory=dict)
    cofactors: list[tuple[str, str | None]] = field(default_factory=list)
    meta: dict[str, Any] = field(default_factory=dict)

    def to_sample(self) -> Sample:
        """The model's view: id, residues and small metadata (no feature lists)."""
        meta = {k: v for k, v in self.meta.items() if isinstance(v, (str, int, float, bool))}
        return Sample(id=self.id, text=self.sequence, meta=meta)


@dataclass
class InputPolicy:
    """What counts as a bad record and what happens to it.

    ``on_error``: ``"stop"`` raises the first problem as a ``DataError``; ``"skip"`` drops the
    record, logs it and counts it by reason in :attr:`skipped`. ``max_length`` (residues,
    ``None`` for no limit) guards models with a context limit (ESM-2 takes 1022 residues).
    ``alphabet``: ``"standard"`` (20 amino acids) or ``"extended"`` (also X, B, Z, U, O, J).
    """

    on_error: str = "stop"
    max_length: int | None = None
    min_length: int = 1
    alphabet: str = "extended"
    skipped: Counter = field(default_factory=Counter)
    messages: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.on_error not in ("stop", "skip"):
            raise ConfigError(f"on_error must be 'stop' or 'skip', got {self.on_error!r}",
                              fix="set on_error=stop or on_error=skip")
        if self.alphabet not in ("standard", "extended"):
            raise ConfigError(f"alphabet must be 'standard' or 'extended', got {self.alphabet!r}",
                              fix="set domain.alphabet=standard or domain.alphabet=extended")
        self._letters = frozenset(STANDARD_AA + (EXTENDED_AA if self.alphabet == "extended" else ""))

    def reject(self, reason: str, message: str, *, path: str, line: int | None, record: str | None,
               fix: str) -> None:
        """Raise or count one bad record (``reason`` is the counter key: malformed, empty, ...)."""
        where = f"{path}:{line}" if line is not None else path
        err = DataError(message, path=where, record=record, fix=fix)
        if self.on_error == "stop":
            raise err
        self.skipped[reason] += 1
        if len(self.messages) < 50:
            self.messages.append(str(err).splitlines()[0])
        log.warning("skipped: %s", str(err).splitlines()[0])

    def clean_sequence(self, seq: str) -> str:
        """Upper-case, drop whitespace and one trailing stop ``*``."""
        seq = "".join(seq.split()).upper()
        return seq[:-1] if seq.endswith("*") else seq

    def check(self, rec: ProteinRecord, *, path: str, line: int | None, seen: set[str]) -> bool:
        """True when ``rec`` passes; otherwise reject it (raise or count) and return False."""
        rid = rec.id
        if not rid:
            self.reject("malformed", "record has no id", path=path, line=line, record="(no id)",
                        fix="give every record an id after '>' (FASTA) or an AC line (Swiss-Prot)")
            return False
        if rid in seen:
            self.reject("duplicate_id", f"id {rid!r} appears more than once", path=path, line=line,
                        record=rid, fix="make ids unique, or set harvest.on_error=skip (annotate.on_error, domain.on_error) to keep the first")
            return False
        if len(rec.sequence) < self.min_length:
            what = "empty sequence" if not rec.sequence else f"sequence of {len(rec.sequence)} residues"
            self.reject("empty" if not rec.sequence else "too_short",
                        f"{what} (minimum {self.min_length})", path=path, line=line, record=rid,
                        fix="remove the record or set harvest.on_error=skip (annotate.on_error, domain.on_error)")
            return False
        bad = sorted(set(rec.sequence) - self._letters)
        if bad:
            pos = min(rec.sequence.index(c) for c in bad) + 1
            self.reject("bad_characters", f"non-amino-acid characters {bad} (first at residue {pos})",
                        path=path, line=line, record=rid,
                        fix="use one-letter amino-acid codes (unknown residues as X), or "
                            "set harvest.on_error=skip (annotate.on_error, domain.on_error)")
            return False
        if self.max_length is not None and len(rec.sequence) > self.max_length:
            self.reject("too_long", f"{len(rec.sequence)} residues, over the limit of {self.max_length}",
                        path=path, line=line, record=rid,
                        fix="raise domain.max_length if the model takes it, or set harvest.on_error=skip (annotate.on_error, domain.on_error)")
            return False
        seen.add(rid)
        return True

    def summary(self) -> dict[str, int]:
        return dict(self.skipped)

"""UniProt sequence features in one shape, whichever file they came from.

Swiss-Prot flat files (``FT`` lines, read by Biopython) and UniProt REST TSV columns
(``BINDING 12; /ligand="ATP"; /ligand_id="ChEBI:CHEBI:30616"; /evidence="..."``) describe
the same features; both are turned into :class:`Feature` so concept building has one input.

Locations follow UniProt's notation: ``12`` (one residue), ``12..19`` (a span; for
``DISULFID`` the two bonded cysteines), ``<1..50`` / ``10..>200`` (the feature extends past
the given end), ``?25`` / ``265..?274`` (uncertain position, value given), ``?`` or ``?..28``
(unknown position), and ``P12345:10..20`` (a position on another entry). Positions are
kept 0-based, end exclusive; uncertain ones are kept and flagged, unknown ones are dropped
by the concept builder and counted.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

# The feature keys the concept builder knows, with the TSV column that carries each
# (UniProt REST ``fields=`` names) and the qualifier that names a sub-concept.
FEATURE_COLUMNS: dict[str, str] = {
    "ACT_SITE": "ft_act_site",
    "BINDING": "ft_binding",
    "DISULFID": "ft_disulfid",
    "CARBOHYD": "ft_carbohyd",
    "LIPID": "ft_lipid",
    "MOD_RES": "ft_mod_res",
    "SIGNAL": "ft_signal",
    "TRANSIT": "ft_transit",
    "HELIX": "ft_helix",
    "TURN": "ft_turn",
    "STRAND": "ft_strand",
    "COILED": "ft_coiled",
    "COMPBIAS": "ft_compbias",
    "DOMAIN": "ft_domain",
    "MOTIF": "ft_motif",
    "REGION": "ft_region",
    "ZN_FING": "ft_zn_fing",
    "DNA_BIND": "ft_dna_bind",
    "REPEAT": "ft_repeat",
    "SITE": "ft_site",
    "CROSSLNK": "ft_crosslnk",
    "TRANSMEM": "ft_transmem",
    "TOPO_DOM": "ft_topo_dom",
    "INTRAMEM": "ft_intramem",
    "PROPEP": "ft_propep",
}

# The same columns as labelled in the UniProt website's TSV download (InterPLM reads these).
FEATURE_LABELS: dict[str, str] = {
    "ACT_SITE": "Active site", "BINDING": "Binding site", "DISULFID": "Disulfide bond",
    "CARBOHYD": "Glycosylation", "LIPID": "Lipidation", "MOD_RES": "Modified residue",
    "SIGNAL": "Signal peptide", "TRANSIT": "Transit peptide", "HELIX": "Helix", "TURN": "Turn",
    "STRAND": "Beta strand", "COILED": "Coiled coil", "COMPBIAS": "Compositional bias",
    "DOMAIN": "Domain [FT]", "MOTIF": "Motif", "REGION": "Region", "ZN_FING": "Zinc finger",
    "DNA_BIND": "DNA binding", "REPEAT": "Repeat", "SITE": "Site", "CROSSLNK": "Cross-link",
    "TRANSMEM": "Transmembrane", "TOPO_DOM": "Topological domain", "INTRAMEM": "Intramembrane",
    "PROPEP": "Propeptide",
}

_TSV_ENTRY = re.compile(r"(?:^|;\s*)(" + "|".join(FEATURE_COLUMNS) + r") ")
_QUALIFIER = re.compile(r'/(\w+)="((?:[^"]|"")*)"')
_POSITION = re.compile(r"^([<>?]?)(\d*)([<>]?)$")


@dataclass(frozen=True)
class Feature:
    """One annotated feature of one protein.

    ``start``/``end``: 0-based, end exclusive; ``None`` when UniProt gives the position as
    unknown. ``uncertain``: the location used ``?``, ``<`` or ``>``. ``foreign``: the location
    points into another entry (``P12345:10``) and says nothing about this sequence.
    """

    type: str
    start: int | None
    end: int | None
    qualifiers: dict[str, str] = field(default_factory=dict, hash=False, compare=True)
    uncertain: bool = False
    foreign: bool = False

    @property
    def known(self) -> bool:
        return self.start is not None and self.end is not None and not self.foreign

    @property
    def length(self) -> int:
        return (self.end - self.start) if self.known else 0


class LocationError(ValueError):
    """A location string that is not UniProt notation (the parsers add file and record)."""


def _position(token: str) -> tuple[int | None, bool]:
    """``'12'`` -> (12, False); ``'<1'``/``'?25'`` -> (value, True); ``'?'`` -> (None, True)."""
    token = token.strip()
    m = _POSITION.match(token)
    if not m or (not m.group(2) and m.group(1) != "?"):
        raise LocationError(f"bad position {token!r}")
    value = int(m.group(2)) if m.group(2) else None
    return value, bool(m.group(1) or m.group(3))


def parse_location(text: str) -> tuple[int | None, int | None, bool, bool]:
    """UniProt location text -> (start0, end_exclusive, uncertain, foreign)."""
    text = text.strip()
    foreign = False
    if ":" in text:
        foreign = True
        text = text.split(":", 1)[1]
    if ".." in text:
        a, b = text.split("..", 1)
        start, ua = _position(a)
        end, ub = _position(b)
        uncertain = ua or ub
    else:
        start, uncertain = _position(text)
        end = start
    if start is None or end is None:
        return None, None, True, foreign
    if end < start:
        raise LocationError(f"location {text!r} ends before it starts")
    return start - 1, end, uncertain, foreign


def parse_tsv_features(cell: str | None, expected_type: str | None = None) -> list[Feature]:
    """Parse one UniProt REST TSV feature cell (several features joined by ``; ``).

    ``expected_type`` checks that the cell holds the column's own key (``ft_binding`` holds
    ``BINDING`` entries); a mismatch raises ``LocationError`` so the reader can name the column.
    """
    if cell is None or not isinstance(cell, str) or not cell.strip():
        return []
    cell = cell.strip()
    starts = [m for m in _TSV_ENTRY.finditer(cell) if cell.count('"', 0, m.start()) % 2 == 0]
    if not starts or starts[0].start() != 0:
        raise LocationError(f"feature cell does not start with a feature key: {cell[:40]!r}")
    out = []
    for i, m in enumerate(starts):
        key = m.group(1)
        if expected_type and key != expected_type:
            raise LocationError(f"found {key} in the {expected_type} column")
        body_end = starts[i + 1].start() if i + 1 < len(starts) else len(cell)
        body = cell[m.end():body_end].strip().rstrip(";")
        loc, _, rest = body.partition(";")
        start, end, uncertain, foreign = parse_location(loc)
        quals = {k: v.replace('""', '"') for k, v in _QUALIFIER.findall(rest)}
        out.append(Feature(key, start, end, quals, uncertain, foreign))
    return out


def from_biopython(seqfeature) -> Feature:
    """Convert a ``Bio.SeqFeature.SeqFeature`` read by ``Bio.SwissProt`` into a :class:`Feature`."""
    from Bio.SeqFeature import (
        AfterPosition,
        BeforePosition,
        ExactPosition,
        UncertainPosition,
        UnknownPosition,
    )

    loc = seqfeature.location
    quals = {k: (v if isinstance(v, str) else " ".join(map(str, v)))
             for k, v in seqfeature.qualifiers.items()}
    foreign = bool(getattr(loc, "ref", None))
    if loc is None or isinstance(loc.start, UnknownPosition) or isinstance(loc.end, UnknownPosition):
        return Feature(seqfeature.type, None, None, quals, True, foreign)
    uncertain = any(isinstance(p, (BeforePosition, AfterPosition, UncertainPosition))
                    or not isinstance(p, ExactPosition) for p in (loc.start, loc.end))
    return Feature(seqfeature.type, int(loc.start), int(loc.end), quals, uncertain, foreign)


_COFACTOR_NAME = re.compile(r"Name=([^;]+);")
_COFACTOR_XREF = re.compile(r"Xref=ChEBI:(CHEBI:\d+)")


def parse_cofactors(text: str | None) -> list[tuple[str, str | None]]:
    """Cofactor names (and ChEBI ids) from a ``COFACTOR:`` comment or a ``cc_cofactor`` cell.

    ``COFACTOR: Name=Zn(2+); Xref=ChEBI:CHEBI:29105; Evidence={...}; Note=...;`` may repeat
    several blocks; each ``Name=`` starts one cofactor and the ``Xref`` after it belongs to it.
    """
    if not text or not isinstance(text, str):
        return []
    out: list[tuple[str, str | None]] = []
    pieces = re.split(r"(?=Name=)", text)
    for piece in pieces:
        m = _COFACTOR_NAME.match(piece)
        if not m:
            continue
        x = _COFACTOR_XREF.search(piece)
        out.append((m.group(1).strip(), x.group(1) if x else None))
    return out

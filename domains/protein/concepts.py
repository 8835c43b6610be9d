"""Swiss-Prot annotations as concepts: per residue (features) and per protein (keywords, GO...).

Per residue, every feature type gives an ``<TYPE>_any`` concept and, where its qualifier
names something (the ``note`` of a domain, the ``ligand`` of a binding site), a sub-concept
``<TYPE>:<value>`` kept when at least ``min_count`` features carry that value (rarer ones
still count towards ``_any``; features without the qualifier too). Disulfide bonds mark
their two cysteines as one instance; cofactors are the binding sites whose ligand is a
cofactor named in the entry's ``COFACTOR`` comment (InterPLM's "Cofactor" concept);
amino-acid identity is its own group so reports can set it apart. Positions are residue
indices from 0, the same ``position`` that protein adapters write into the activation store.

Unknown positions (``?``) are skipped and counted; uncertain ones (``<1``, ``?25``) are used
as given and counted; features pointing into another entry are skipped and counted. The
counts travel in :attr:`ResidueConcepts.notes`.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

import pandas as pd

from domains.protein.features import Feature
from domains.protein.records import STANDARD_AA, ProteinRecord


@dataclass(frozen=True)
class FeatureSpec:
    """How one feature type becomes concepts."""

    qualifier: str | None  # the qualifier whose value names a sub-concept
    kind: str  # "token": recall over residues; "instance": recall over features
    group: str


FEATURE_SPECS: dict[str, FeatureSpec] = {
    "ACT_SITE": FeatureSpec("note", "token", "site"),
    "BINDING": FeatureSpec("ligand", "instance", "site"),
    "SITE": FeatureSpec("note", "token", "site"),
    "DNA_BIND": FeatureSpec("note", "instance", "site"),
    "CARBOHYD": FeatureSpec("note", "token", "ptm"),
    "LIPID": FeatureSpec("note", "token", "ptm"),
    "MOD_RES": FeatureSpec("note", "token", "ptm"),
    "CROSSLNK": FeatureSpec("note", "token", "ptm"),
    "DISULFID": FeatureSpec(None, "token", "ptm"),
    "SIGNAL": FeatureSpec("note", "instance", "processing"),
    "TRANSIT": FeatureSpec("note", "instance", "processing"),
    "PROPEP": FeatureSpec("note", "instance", "processing"),
    "HELIX": FeatureSpec(None, "instance", "secondary_structure"),
    "STRAND": FeatureSpec(None, "instance", "secondary_structure"),
    "TURN": FeatureSpec(None, "instance", "secondary_structure"),
    "COILED": FeatureSpec(None, "instance", "structure"),
    "TRANSMEM": FeatureSpec("note", "instance", "structure"),
    "INTRAMEM": FeatureSpec("note", "instance", "structure"),
    "TOPO_DOM": FeatureSpec("note", "instance", "structure"),
    "COMPBIAS": FeatureSpec("note", "instance", "family"),
    "DOMAIN": FeatureSpec("note", "instance", "family"),
    "MOTIF": FeatureSpec("note", "instance", "family"),
    "REGION": FeatureSpec("note", "instance", "family"),
    "REPEAT": FeatureSpec("note", "instance", "family"),
    "ZN_FING": FeatureSpec("note", "instance", "family"),
}

# The set InterPLM evaluates on Swiss-Prot (its UniProt columns); the default.
INTERPLM_TYPES: tuple[str, ...] = (
    "ACT_SITE", "BINDING", "DISULFID", "CARBOHYD", "LIPID", "MOD_RES", "SIGNAL", "TRANSIT",
    "HELIX", "TURN", "STRAND", "COILED", "COMPBIAS", "DOMAIN", "MOTIF", "REGION", "ZN_FING",
)

# ``full``: every feature type the builder knows, InterPLM's plus the membrane topology types
# (transmembrane, intramembrane, topological domain), DNA binding, sites, cross-links and
# propeptides that InterPLM leaves out.
CONCEPT_SETS: dict[str, tuple[str, ...]] = {"interplm": INTERPLM_TYPES, "full": tuple(FEATURE_SPECS)}


def feature_types_of(concept_set: str | None, feature_types: Sequence[str] | None = None) -> list[str]:
    """The feature types of a named concept set, or the explicit list when one is given."""
    from core.errors import ConfigError

    if feature_types:
        unknown = sorted(set(feature_types) - set(FEATURE_SPECS))
        if unknown:
            raise ConfigError(f"unknown Swiss-Prot feature types {unknown}", fix=f"use types from {sorted(FEATURE_SPECS)}")
        return list(feature_types)
    name = concept_set or "interplm"
    if name not in CONCEPT_SETS:
        raise ConfigError(f"unknown concept set {name!r}", fix=f"domain.concepts.set: one of {sorted(CONCEPT_SETS)}")
    return list(CONCEPT_SETS[name])


_TRAILING_INDEX = re.compile(r"\s+\d+$")


def subconcept_value(feature: Feature, spec: FeatureSpec, strip_index: bool = True) -> str | None:
    """The qualifier value naming this feature's sub-concept (``"EF-hand 2"`` -> ``"EF-hand"``)."""
    if spec.qualifier is None:
        return None
    value = feature.qualifiers.get(spec.qualifier)
    if not value:
        return None
    value = value.split(";")[0].strip()
    return _TRAILING_INDEX.sub("", value) if strip_index else value


@dataclass
class ResidueConcepts:
    """Spans and concept table, ready for ``ConceptMatrix.from_spans``."""

    spans: pd.DataFrame  # sample, start, end, concept, instance
    concepts: pd.DataFrame  # name, kind, source, group
    notes: dict[str, int] = field(default_factory=dict)

    def matrix(self, tokens: pd.DataFrame):
        """The ``ConceptMatrix`` over ``tokens`` (``sample``, ``position`` rows)."""
        from core.enrich.concepts import ConceptMatrix

        cm = ConceptMatrix.from_spans(self.spans, tokens, self.concepts)
        cm.notes.update({f"annotation_{k}": v for k, v in self.notes.items()})
        return cm


def residue_tokens(records: Sequence[ProteinRecord], max_residues: int | None = None,
                   sample_index: Sequence[int] | None = None) -> pd.DataFrame:
    """One row per residue: ``sample`` (index into ``records`` unless given) and ``position`` from 0."""
    import numpy as np

    idx = list(sample_index) if sample_index is not None else list(range(len(records)))
    lengths = np.array([min(len(r.sequence), max_residues or len(r.sequence)) for r in records],
                       dtype=np.int64)
    sample = np.repeat(np.asarray(idx, dtype=np.int64), lengths)
    position = np.arange(lengths.sum()) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    return pd.DataFrame({"sample": sample, "position": position})


def residue_concepts(records: Sequence[ProteinRecord], *, feature_types: Sequence[str] = INTERPLM_TYPES,
                     min_count: int = 10, include_amino_acids: bool = True, include_cofactors: bool = True,
                     strip_note_index: bool = True,
                     sample_index: Sequence[int] | None = None) -> ResidueConcepts:
    """Per-residue concepts of ``records`` (sample ``i`` = ``records[i]`` unless ``sample_index``)."""
    unknown = [t for t in feature_types if t not in FEATURE_SPECS]
    if unknown:
        from core.errors import ConfigError

        raise ConfigError(f"unknown feature types {unknown}",
                          fix=f"choose from {sorted(FEATURE_SPECS)}")
    idx = list(sample_index) if sample_index is not None else list(range(len(records)))
    wanted = set(feature_types)
    notes: Counter = Counter()

    # Pass 1: count sub-concept values so rare ones fold into _any only.
    counts: Counter = Counter()
    for rec in records:
        for f in rec.features:
            spec = FEATURE_SPECS.get(f.type)
            if f.type in wanted and spec is not None:
                v = subconcept_value(f, spec, strip_note_index)
                if v is not None:
                    counts[(f.type, v)] += 1
    kept = {k for k, n in counts.items() if n >= min_count}
    notes["subconcept_values_below_min_count"] = sum(1 for k in counts if k not in kept)

    rows: list[tuple[int, int, int, str, object]] = []
    names: dict[str, tuple[str, str, str]] = {}

    def add(sample: int, start: int, end: int, name: str, key: object, kind: str, group: str, source: str):
        rows.append((sample, start, end, name, key))
        names.setdefault(name, (kind, source, group))

    cof_counts: Counter = Counter()
    for s, rec in zip(idx, records, strict=True):
        n = len(rec.sequence)
        cof_names = {c[0] for c in rec.cofactors} if include_cofactors else set()
        cof_ids = {c[1] for c in rec.cofactors if c[1]} if include_cofactors else set()
        for j, f in enumerate(rec.features):
            spec = FEATURE_SPECS.get(f.type)
            if f.type not in wanted or spec is None:
                continue
            if f.foreign:
                notes["foreign_position_skipped"] += 1
                continue
            if not f.known:
                notes["unknown_position_skipped"] += 1
                continue
            if f.uncertain:
                notes["uncertain_position_used"] += 1
            if f.start >= n:
                notes["out_of_range_skipped"] += 1
                continue
            if f.end > n:
                notes["out_of_range_clipped"] += 1
            end = min(f.end, n)
            key = (s, j)
            if f.type == "DISULFID":
                pieces = [(f.start, f.start + 1)] if f.end - f.start <= 1 else [
                    (f.start, f.start + 1), (end - 1, end)]
                if f.end > n:
                    pieces = pieces[:1]
            else:
                pieces = [(f.start, end)]
            names_here = [f"{f.type}_any"]
            v = subconcept_value(f, spec, strip_note_index)
            if v is not None and (f.type, v) in kept:
                names_here.append(f"{f.type}:{v}")
            if f.type == "BINDING" and include_cofactors:
                lig = f.qualifiers.get("ligand")
                lig_id = f.qualifiers.get("ligand_id", "").replace("ChEBI:", "")
                if lig in cof_names or (lig_id and lig_id in cof_ids):
                    names_here.append("COFACTOR_any")
                    cof_counts[lig] += 1
                    names_here.append(f"COFACTOR:{lig}")
            for name in names_here:
                group = "cofactor" if name.startswith("COFACTOR") else spec.group
                kind = "token" if name.startswith("COFACTOR") else spec.kind
                for a, b in pieces:
                    add(s, a, b, name, key, kind, group, "uniprot")
        if include_amino_acids:
            seq = rec.sequence
            i = 0
            while i < n:
                k = i
                while k + 1 < n and seq[k + 1] == seq[i]:
                    k += 1
                aa = seq[i] if seq[i] in STANDARD_AA else "other"
                add(s, i, k + 1, f"aa:{aa}", s, "token", "amino_acid", "sequence")
                i = k + 1

    # Rare cofactor sub-concepts fold into COFACTOR_any like any other qualifier.
    rare_cof = {f"COFACTOR:{c}" for c, k in cof_counts.items() if k < min_count}
    rows = [r for r in rows if r[3] not in rare_cof]
    for name in rare_cof:
        names.pop(name, None)
    spans = pd.DataFrame(rows, columns=["sample", "start", "end", "concept", "instance"])
    order = sorted(names, key=lambda x: (names[x][2] == "amino_acid", names[x][2], x))
    table = pd.DataFrame([{"name": x, "kind": names[x][0], "source": names[x][1], "group": names[x][2]}
                          for x in order], columns=["name", "kind", "source", "group"])
    return ResidueConcepts(spans, table, dict(notes))


def protein_labels(records: Sequence[ProteinRecord], *, min_count: int = 5,
                   databases: Sequence[str] = ("GO", "Pfam", "InterPro"), keywords: bool = True,
                   cofactors: bool = True, sample_index: Sequence[int] | None = None) -> pd.DataFrame:
    """Protein-level labels: one boolean column per keyword / GO term / family seen ``min_count`` times.

    Indexed by sample index (the sample-level label format of the enrichment); columns are
    ``KW:<keyword>``, ``GO:<GO id>``, ``Pfam:<id>``, ``InterPro:<id>``, ``COFACTOR:<name>``.
    Labels carried by every protein are dropped: they cannot separate anything.
    """
    idx = list(sample_index) if sample_index is not None else list(range(len(records)))
    per: list[set[str]] = []
    for rec in records:
        labels: set[str] = set()
        if keywords:
            labels.update(f"KW:{k}" for k in rec.keywords)
        for db in databases:
            labels.update(x if x.startswith(f"{db}:") else f"{db}:{x}" for x in rec.xrefs.get(db, []))
        if cofactors:
            labels.update(f"COFACTOR:{c[0]}" for c in rec.cofactors)
        per.append(labels)
    counts = Counter(x for labels in per for x in labels)
    cols = sorted(x for x, k in counts.items() if min_count <= k < len(records))
    data = {c: [c in labels for labels in per] for c in cols}
    return pd.DataFrame(data, index=pd.Index(idx, name="sample"), dtype=bool)

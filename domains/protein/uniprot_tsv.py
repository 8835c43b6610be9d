"""Read UniProtKB TSV tables (REST ``format=tsv`` or the website's download) into proteins.

A table may be headed by the REST field names (``accession``, ``ft_binding``...) or by the
column labels UniProt writes into its TSV (``Entry``, ``Binding site``...); both are
accepted. These are the columns InterPLM builds its Swiss-Prot concepts from.
"""

from __future__ import annotations

import csv
import re
from pathlib import Path

from core.errors import DataError
from domains.protein.chunks import open_text, user_file_errors
from domains.protein.features import FEATURE_COLUMNS, FEATURE_LABELS, LocationError, parse_cofactors
from domains.protein.features import parse_tsv_features as _parse_cell
from domains.protein.records import InputPolicy, ProteinRecord

# Non-feature columns: REST field name -> TSV label.
PLAIN_COLUMNS: dict[str, str] = {
    "accession": "Entry", "id": "Entry Name", "sequence": "Sequence", "length": "Length",
    "protein_name": "Protein names", "organism_name": "Organism", "organism_id": "Organism (ID)",
    "cc_cofactor": "Cofactor", "keyword": "Keywords", "go_id": "Gene Ontology IDs",
    "xref_pfam": "Pfam", "xref_interpro": "InterPro", "reviewed": "Reviewed",
    "xref_alphafolddb": "AlphaFoldDB",
}

# What InterPLM requests from the REST API (and what the downloader asks for by default).
INTERPLM_FIELDS: tuple[str, ...] = (
    "accession", "id", "reviewed", "protein_name", "organism_name", "length", "sequence",
    "ft_act_site", "ft_binding", "cc_cofactor", "ft_disulfid", "ft_carbohyd", "ft_lipid",
    "ft_mod_res", "ft_signal", "ft_transit", "ft_helix", "ft_turn", "ft_strand", "ft_coiled",
    "ft_compbias", "ft_domain", "ft_motif", "ft_region", "ft_zn_fing", "keyword", "go_id",
    "xref_pfam", "xref_interpro", "xref_alphafolddb",
)


def _norm(label: str) -> str:
    return re.sub(r"[\s_]+", "", label.strip().lower())


def _column_map() -> dict[str, str]:
    """Normalised header -> REST field name."""
    out = {}
    for field_name, label in PLAIN_COLUMNS.items():
        out[_norm(field_name)] = field_name
        out[_norm(label)] = field_name
    for key, field_name in FEATURE_COLUMNS.items():
        out[_norm(field_name)] = field_name
        out[_norm(FEATURE_LABELS[key])] = field_name
    out[_norm("Entry name")] = "id"
    return out


_FIELD_TO_KEY = {v: k for k, v in FEATURE_COLUMNS.items()}


def _split_list(cell: str | None, sep: str = ";") -> list[str]:
    if not cell:
        return []
    return [x.strip() for x in cell.split(sep) if x.strip()]


@user_file_errors
def read_uniprot_tsv(path: str | Path, policy: InputPolicy | None = None) -> list[ProteinRecord]:
    """Proteins of a UniProtKB TSV table; a bad feature cell names its column, line and entry."""
    policy = policy or InputPolicy()
    path = str(path)
    colmap = _column_map()
    out: list[ProteinRecord] = []
    seen: set[str] = set()
    with open_text(path) as fh:
        reader = csv.reader(fh, delimiter="\t", quoting=csv.QUOTE_NONE)
        header = next(reader, None)
        if not header:
            policy.reject("malformed", "empty table (no header line)", path=path, line=1, record=None,
                          fix="download the table again with format=tsv")
            return out
        fields = [colmap.get(_norm(h)) for h in header]
        if "accession" not in fields or "sequence" not in fields:
            raise DataError(f"header lacks an Entry/accession or Sequence column: {header[:8]}",
                            path=f"{path}:1", fix="request fields=accession,sequence,... from the UniProt REST API")
        for n, row in enumerate(reader, start=2):
            if not any(c.strip() for c in row):
                continue
            if len(row) != len(header):
                policy.reject("malformed", f"{len(row)} columns where the header has {len(header)}",
                              path=path, line=n, record=row[0] if row else None,
                              fix="check the file is tab-separated and not truncated")
                continue
            rec = _row_to_record(row, fields, header, policy, path, n)
            if rec is None:
                continue
            rec.meta.update(source=Path(path).name, line=n)
            if policy.check(rec, path=path, line=n, seen=seen):
                out.append(rec)
    return out


def _row_to_record(row: list[str], fields: list[str | None], header: list[str], policy: InputPolicy,
                   path: str, line: int) -> ProteinRecord | None:
    cells = {f: c for f, c in zip(fields, row, strict=True) if f}
    acc = cells.get("accession", "").strip()
    features = []
    for f, c in cells.items():
        key = _FIELD_TO_KEY.get(f)
        if key is None or not c.strip():
            continue
        try:
            features.extend(_parse_cell(c, key))
        except LocationError as err:
            label = header[fields.index(f)]
            policy.reject("malformed", f"column {label!r}: {err}", path=path, line=line, record=acc,
                          fix="fix the cell or set harvest.on_error=skip (annotate.on_error, domain.on_error)")
            return None
    xrefs = {}
    for f, db in (("go_id", "GO"), ("xref_pfam", "Pfam"), ("xref_interpro", "InterPro")):
        ids = _split_list(cells.get(f))
        if ids:
            xrefs[db] = ids
    meta = {"entry_name": cells.get("id", ""), "description": cells.get("protein_name", ""),
            "organism": cells.get("organism_name", ""), "terms": {}}
    if "reviewed" in cells:
        meta["reviewed"] = cells["reviewed"].strip().lower() == "reviewed"
    return ProteinRecord(id=acc, sequence=policy.clean_sequence(cells.get("sequence", "")),
                         features=features, keywords=_split_list(cells.get("keyword")), xrefs=xrefs,
                         cofactors=parse_cofactors(cells.get("cc_cofactor")), meta=meta)

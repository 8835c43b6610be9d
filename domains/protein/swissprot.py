"""Read UniProtKB/Swiss-Prot flat files (``uniprot_sprot.dat[.gz]``) with ``Bio.SwissProt``.

Each record keeps its features (``FT``), keywords (``KW``), cross-references (``DR``: GO,
Pfam, InterPro...) and cofactors (``CC -!- COFACTOR``). A record Biopython cannot parse, or
whose sequence disagrees with its ``ID`` line length (a truncated file), is reported with
the file, its line and its entry name.
"""

from __future__ import annotations

import io
from pathlib import Path

from Bio import SwissProt

from domains.protein.chunks import flatfile_chunks, line_of, user_file_errors
from domains.protein.features import from_biopython, parse_cofactors
from domains.protein.records import InputPolicy, ProteinRecord

XREF_DATABASES = ("GO", "Pfam", "InterPro", "PROSITE", "SMART", "PDB", "CATH", "SUPFAM")


@user_file_errors
def read_swissprot(path: str | Path, policy: InputPolicy | None = None,
                   xref_databases: tuple[str, ...] = XREF_DATABASES) -> list[ProteinRecord]:
    """Proteins of a Swiss-Prot flat file, in file order; the id is the primary accession."""
    policy = policy or InputPolicy()
    path = str(path)
    out: list[ProteinRecord] = []
    seen: set[str] = set()
    for line, chunk in flatfile_chunks(path):
        name = _entry_name(chunk)
        if not chunk.rstrip().endswith("//"):
            policy.reject("malformed", "record has no closing '//' line (truncated file?)", path=path,
                          line=line, record=name, fix="re-download the file or remove the partial record")
            continue
        try:
            raw = SwissProt.read(io.StringIO(chunk))
        except SwissProt.SwissProtParserError as err:
            policy.reject("malformed", f"cannot parse record: {err}", path=path,
                          line=line_of(chunk, line, err.line), record=name,
                          fix="fix the line or set harvest.on_error=skip (annotate.on_error, domain.on_error)")
            continue
        except (ValueError, IndexError, KeyError) as err:
            policy.reject("malformed", f"cannot parse record: {err}", path=path, line=line, record=name,
                          fix="fix the record or set harvest.on_error=skip (annotate.on_error, domain.on_error)")
            continue
        seq = policy.clean_sequence(raw.sequence)
        if raw.sequence_length and raw.sequence_length != len(seq):
            policy.reject("malformed", f"ID line says {raw.sequence_length} AA but the SQ block holds "
                                       f"{len(seq)} residues", path=path, line=line, record=name,
                          fix="re-download the file; the record is truncated or edited")
            continue
        rec = _to_record(raw, seq, xref_databases)
        rec.meta.update(source=Path(path).name, line=line)
        if policy.check(rec, path=path, line=line, seen=seen):
            out.append(rec)
    return out


def _entry_name(chunk: str) -> str:
    for raw_line in chunk.splitlines():
        if raw_line.startswith("ID "):
            parts = raw_line.split()
            return parts[1] if len(parts) > 1 else "(no ID)"
    return "(no ID line)"


def _to_record(raw: SwissProt.Record, seq: str, dbs: tuple[str, ...]) -> ProteinRecord:
    xrefs: dict[str, list[str]] = {}
    terms: dict[str, str] = {}
    for ref in raw.cross_references:
        if ref and ref[0] in dbs and len(ref) > 1:
            xrefs.setdefault(ref[0], []).append(ref[1])
            if len(ref) > 2 and ref[2] not in ("-", ""):
                terms[ref[1]] = ref[2]
    cofactors = []
    for comment in raw.comments:
        if comment.startswith("COFACTOR:"):
            cofactors.extend(parse_cofactors(comment))
    keywords = [k.strip().rstrip(".") for k in raw.keywords if k.strip()]
    meta = {"entry_name": raw.entry_name, "description": raw.description.strip(),
            "organism": raw.organism.strip().rstrip("."),
            "taxonomy_id": raw.taxonomy_id[0] if raw.taxonomy_id else "",
            "reviewed": raw.data_class == "Reviewed", "terms": terms}
    return ProteinRecord(id=raw.accessions[0] if raw.accessions else raw.entry_name, sequence=seq,
                         features=[from_biopython(f) for f in raw.features], keywords=keywords,
                         xrefs=xrefs, cofactors=cofactors, meta=meta)

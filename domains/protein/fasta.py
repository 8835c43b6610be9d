"""Read protein FASTA files (plain or .gz) with Biopython, one checked record at a time."""

from __future__ import annotations

import io
from pathlib import Path

from Bio import SeqIO

from domains.protein.chunks import fasta_chunks, user_file_errors
from domains.protein.records import InputPolicy, ProteinRecord


@user_file_errors
def read_fasta(path: str | Path, policy: InputPolicy | None = None) -> list[ProteinRecord]:
    """Proteins of a FASTA file, in file order.

    The id is the first word of the header (UniProt headers ``sp|P12345|NAME_HUMAN ...``
    give the accession); the rest of the header goes to ``meta["description"]``.
    """
    policy = policy or InputPolicy()
    path = str(path)
    out: list[ProteinRecord] = []
    seen: set[str] = set()
    for line, chunk in fasta_chunks(path):
        if not chunk.startswith(">"):
            policy.reject("malformed", "text before the first '>' header", path=path, line=line,
                          record="(before first header)",
                          fix="remove the text or start it with '>' and an id")
            continue
        try:
            rec = SeqIO.read(io.StringIO(chunk), "fasta")
        except ValueError as err:
            policy.reject("malformed", f"cannot parse FASTA record ({err})", path=path, line=line,
                          record=chunk.splitlines()[0][:60], fix="fix or remove the record")
            continue
        rid = _accession(rec.id)
        desc = rec.description[len(rec.id):].strip()
        meta = {"description": desc, "source": Path(path).name, "line": line}
        if rid != rec.id:
            meta["entry_name"] = rec.id.split("|")[2]
        protein = ProteinRecord(id=rid, sequence=policy.clean_sequence(str(rec.seq)), meta=meta)
        if policy.check(protein, path=path, line=line, seen=seen):
            out.append(protein)
    return out


def _accession(header_id: str) -> str:
    parts = header_id.split("|")
    if len(parts) >= 3 and parts[0] in ("sp", "tr"):
        return parts[1]
    return header_id


def write_fasta(records: list[ProteinRecord], path: str | Path) -> Path:
    """Write ``>id`` + sequence lines (what MMseqs2 and other tools read); atomic."""
    from core.io import write_text

    lines = []
    for r in records:
        lines.append(f">{r.id}")
        lines.extend(r.sequence[i:i + 60] for i in range(0, len(r.sequence), 60))
    write_text(path, "\n".join(lines) + "\n")
    return Path(path)

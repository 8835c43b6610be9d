"""One entry point over the protein readers, for commands that take "a file of proteins".

``sparsescope annotate`` accepts a FASTA, a UniProt TSV or a Swiss-Prot flat file (each
plain or gzipped); the format is told by the file name, else by its first line, and the file
is read by that format's reader under the usual :class:`InputPolicy`, so a bad record stops
the run with its file, line and id (or is skipped and counted with ``on_error=skip``).
"""

from __future__ import annotations

from pathlib import Path

from core.errors import ConfigError, DataError
from core.samples import Sample
from domains.protein.chunks import open_text, user_file_errors
from domains.protein.records import InputPolicy

SUFFIXES = {".fasta": "fasta", ".fa": "fasta", ".faa": "fasta", ".fas": "fasta", ".tsv": "uniprot_tsv",
            ".tab": "uniprot_tsv", ".dat": "swissprot", ".sp": "swissprot"}


@user_file_errors
def detect_format(path: str | Path) -> str:
    """``fasta`` | ``uniprot_tsv`` | ``swissprot`` from the suffix (``.gz`` looked through), else the first line."""
    p = Path(path)
    suffix = Path(p.stem).suffix if p.suffix == ".gz" else p.suffix
    if suffix.lower() in SUFFIXES:
        return SUFFIXES[suffix.lower()]
    with open_text(p) as fh:
        first = next((line for line in fh if line.strip()), "")
    if first.startswith(">"):
        return "fasta"
    if first.startswith("ID   "):
        return "swissprot"
    if "\t" in first:
        return "uniprot_tsv"
    raise DataError("cannot tell the file format (not FASTA '>', Swiss-Prot 'ID   ' or a TSV header)",
                    path=str(p), fix="name the file .fasta, .tsv or .dat, or set annotate.reader.format")


def read_samples(path: str | Path, *, format: str = "auto", on_error: str = "stop", alphabet: str = "extended",
                 min_length: int = 1, max_length: int | None = None) -> tuple[list[Sample], dict[str, int]]:
    """The proteins of ``path`` as samples (id, sequence, small metadata) and the skipped counts."""
    from domains.protein.fasta import read_fasta
    from domains.protein.swissprot import read_swissprot
    from domains.protein.uniprot_tsv import read_uniprot_tsv

    readers = {"fasta": read_fasta, "uniprot_tsv": read_uniprot_tsv, "swissprot": read_swissprot}
    fmt = detect_format(path) if format == "auto" else format
    if fmt not in readers:
        raise ConfigError(f"unknown protein file format {fmt!r}", fix=f"use one of {['auto', *readers]}")
    policy = InputPolicy(on_error=on_error, alphabet=alphabet, min_length=int(min_length),
                         max_length=int(max_length) if max_length else None)
    records = readers[fmt](str(path), policy)
    return [r.to_sample() for r in records], policy.summary()

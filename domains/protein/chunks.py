"""Cut a sequence file into its records while remembering the line each one starts on.

Biopython parses a record well but cannot say on which line of a large file a bad record
sits, nor carry on past it. Splitting first, then handing each record's text to
Biopython, gives both: exact line numbers in messages and a skip-and-continue mode.
"""

from __future__ import annotations

import gzip
import io
from collections.abc import Iterator
from pathlib import Path

from core.errors import DataError


def open_text(path: str | Path) -> io.TextIOBase:
    """Open a plain or gzip-compressed text file; a missing file is a ``DataError`` with the path."""
    path = Path(path)
    if not path.exists():
        raise DataError("file not found", path=str(path), fix="check the path in the domain config")
    if path.suffix == ".gz":
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8", errors="replace")
    return open(path, encoding="utf-8", errors="replace")


def fasta_chunks(path: str | Path) -> Iterator[tuple[int, str]]:
    """Yield ``(first line number, record text)``; text before the first ``>`` is its own chunk."""
    with open_text(path) as fh:
        start, buf = 1, []
        for n, line in enumerate(fh, start=1):
            if line.startswith(">"):
                if buf and any(x.strip() for x in buf):
                    yield start, "".join(buf)
                start, buf = n, [line]
            else:
                buf.append(line)
        if buf and any(x.strip() for x in buf):
            yield start, "".join(buf)


def flatfile_chunks(path: str | Path) -> Iterator[tuple[int, str]]:
    """Yield ``(first line number, record text)`` for Swiss-Prot/EMBL-style records ending in ``//``.

    Trailing text without a closing ``//`` (a truncated download) is yielded too, so the
    reader reports it instead of losing it.
    """
    with open_text(path) as fh:
        start, buf = 1, []
        for n, line in enumerate(fh, start=1):
            if not buf and not line.strip():
                start = n + 1
                continue
            buf.append(line)
            if line.startswith("//"):
                yield start, "".join(buf)
                start, buf = n + 1, []
        if buf and any(x.strip() for x in buf):
            yield start, "".join(buf)


def line_of(chunk: str, first_line: int, needle: str | None) -> int:
    """Line number of ``needle`` inside ``chunk`` (the chunk's first line when not found)."""
    if needle:
        needle = needle.rstrip("\n")
        for i, line in enumerate(chunk.splitlines()):
            if line.rstrip("\n") == needle:
                return first_line + i
    return first_line

"""Cut a sequence file into its records while remembering the line each one starts on.

Biopython parses a record well but cannot say on which line of a large file a bad record
sits, nor carry on past it. Splitting first, then handing each record's text to
Biopython, gives both: exact line numbers in messages and a skip-and-continue mode.
"""

from __future__ import annotations

import csv
import functools
import gzip
import io
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

from core.errors import DataError

F = TypeVar("F", bound=Callable)
FILE_ERRORS = (OSError, EOFError, zlib.error, csv.Error, UnicodeError)


def user_file_errors(reader: F) -> F:
    """Turn what a user's file can make the libraries raise (a corrupt gzip, a folder given as a
    file, a NUL byte in a table...) into one ``DataError`` naming the file, for every reader."""
    @functools.wraps(reader)
    def wrapped(path, *args, **kwargs):
        try:
            return reader(path, *args, **kwargs)
        except FILE_ERRORS as err:
            raise DataError(f"cannot read the file ({type(err).__name__}: {' '.join(str(err).split())[:160]})",
                            path=str(path), fix="check that it is a complete, uncompressed or gzip text file "
                                                "in the format named (re-download it if it was cut)") from None
    return wrapped  # type: ignore[return-value]


def open_text(path: str | Path) -> io.TextIOBase:
    """Open a plain or gzip-compressed text file; a missing file is a ``DataError`` with the path."""
    path = Path(path)
    if not path.exists():
        raise DataError("file not found", path=str(path), fix="check the path in the domain config")
    if path.is_dir():
        raise DataError("is a folder, not a file", path=str(path), fix="give the file inside it")
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

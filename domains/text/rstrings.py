"""Character vectors from an R lazy-load database (``Rdata.rdb``), as CRAN data packages ship them.

Jane Austen's novels reach Debian as ``r-cran-janeaustenr``: each novel is one character vector
(one element per line of the book), serialised in R's XDR format and zlib-compressed, the
objects laid end to end in ``Rdata.rdb``. The one Python reader of that format (``rdata``)
pulls xarray; reading a vector of strings needs only the few record types below (R Internals,
"Serialization Formats"), so this module reads those and refuses anything else by name.
"""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

from core.errors import DataError

STRSXP, CHARSXP = 16, 9
NA_LENGTH = -1


def _objects(blob: bytes) -> list[bytes]:
    """Each zlib-compressed object of an ``.rdb`` file (a 4-byte length, then the stream)."""
    out, pos = [], 0
    while pos < len(blob):
        expected = struct.unpack(">I", blob[pos:pos + 4])[0]
        d = zlib.decompressobj()
        raw = d.decompress(blob[pos + 4:])
        if len(raw) != expected:
            raise DataError(f"object at byte {pos} inflates to {len(raw)} bytes, not {expected}")
        out.append(raw)
        pos = len(blob) - len(d.unused_data)
    return out


def _strings(raw: bytes, where: str) -> list[str]:
    """The elements of one serialised character vector (version-3 XDR stream)."""
    if raw[:2] != b"X\n":
        raise DataError(f"{where}: not an XDR serialisation (starts {raw[:2]!r})")
    version = struct.unpack(">i", raw[2:6])[0]
    pos = 14
    if version == 3:
        n_enc = struct.unpack(">i", raw[pos:pos + 4])[0]
        pos += 4 + n_enc
    flags, n = struct.unpack(">ii", raw[pos:pos + 8])
    if flags & 0xFF != STRSXP:
        raise DataError(f"{where}: object of R type {flags & 0xFF}, not a character vector (16)")
    pos += 8
    out: list[str] = []
    for _ in range(n):
        flags, length = struct.unpack(">ii", raw[pos:pos + 8])
        if flags & 0xFF != CHARSXP:
            raise DataError(f"{where}: element of R type {flags & 0xFF}, not a string (9)")
        pos += 8
        if length == NA_LENGTH:
            out.append("")
            continue
        out.append(raw[pos:pos + length].decode("utf-8", errors="replace"))
        pos += length
    return out


def read_character_vectors(path: Path) -> list[list[str]]:
    """Every character vector in ``path`` (an ``Rdata.rdb``), in file order."""
    path = Path(path)
    try:
        return [_strings(raw, f"{path} object {i}") for i, raw in enumerate(_objects(path.read_bytes()))]
    except (struct.error, zlib.error) as exc:
        raise DataError(f"cannot read {path} as an R lazy-load database: {exc}", path=str(path)) from None

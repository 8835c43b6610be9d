"""User-facing errors.

A ``UserError`` is a mistake in the user's input or configuration. The CLI prints its
message alone, on one line (no traceback), and exits non-zero, so every message must name
the file, the record and the fix.
"""

from __future__ import annotations


class UserError(Exception):
    """A problem the user can fix: bad input file, bad config, missing optional tool."""

    exit_code = 2

    def __init__(self, message: str, *, path: str | None = None, record: str | None = None,
                 fix: str | None = None) -> None:
        parts = []
        if path:
            parts.append(f"{path}")
        if record:
            parts.append(f"record {record}")
        head = ": ".join(parts)
        message = " ".join(str(message).split())
        text = f"{head}: {message}" if head else message
        if fix:
            text += f" -- fix: {fix}"
        super().__init__(text)
        self.message, self.path, self.record, self.fix = message, path, record, fix


class DataError(UserError):
    """Malformed or invalid data file (FASTA, flat file, activations with NaN...)."""


class ConfigError(UserError):
    """An unknown key, an unknown architecture, an out-of-range layer."""


class ChecksumError(DataError):
    """A shard whose sha256 does not match its manifest."""


class ShapeError(DataError):
    """A checkpoint or matrix whose shapes do not match what it claims."""


class MissingDependencyError(UserError):
    """An optional tool (mmseqs2, chromium, sae-lens) is not installed."""


class OfflineError(UserError):
    """A model or data set that had to be downloaded but could not be."""

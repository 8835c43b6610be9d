"""The unit every domain feeds into a model: a sample with a stable id, its text and metadata.

Protein domains put a residue sequence in ``text``; language domains put a prompt (already
rendered, chat template included). ``meta`` carries whatever concepts and behaviour
measures need later (chain type, occupation, persona, answers...).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class Sample:
    id: str
    text: str
    meta: dict[str, Any] = field(default_factory=dict)


def read_sample_file(reader: Mapping[str, Any] | None, path: str | Path, *, on_error: str | None = None,
                     key: str = "harvest.fasta") -> tuple[list[Sample], dict[str, int]]:
    """The samples of a user's file, read by the domain reader the config names.

    Every entry point that takes "a file of sequences" (harvest, annotate) comes through here,
    so one file gives the same samples, the same skips and the same message everywhere.
    ``reader`` is a ``{_target_: ...}`` mapping whose callable takes ``(path, **options)`` and
    returns samples or ``(samples, skipped counts)``; ``on_error`` (stop | skip) is passed on.
    """
    from hydra.utils import instantiate

    from core.errors import ConfigError, DataError

    p = Path(str(path)).expanduser()
    if not p.is_file():
        what = "is a folder, not a file" if p.is_dir() else "does not exist"
        raise DataError(f"input file {what}", path=str(p), fix=f"set {key} to a sequence file")
    if not reader or not reader.get("_target_"):
        raise ConfigError(f"no reader for {key}", fix="add +harvest=default (the protein reader), or set "
                          "the reader's _target_, e.g. domains.protein.readers.read_samples")
    options = {"on_error": on_error} if on_error else {}
    try:
        read = instantiate(dict(reader), _partial_=True, _convert_="all")
    except Exception as err:
        raise ConfigError(f"cannot build the reader {reader.get('_target_')!r} ({str(err).splitlines()[0][:160]})",
                          fix="name an importable function that takes a path") from None
    got = read(str(p), **options)
    samples, skipped = got if isinstance(got, tuple) else (list(got), {})
    if not samples:
        raise DataError("no sequences in the input file" + (f" (all skipped: {skipped})" if skipped else ""),
                        path=str(p), fix="give a file with at least one well-formed record")
    return list(samples), dict(skipped)

"""Knowledge-conflict examples in the NQ-Swap format (Longpre et al. 2021; Zhao et al. 2024).

Each record has a ``question``, the original passage ``org_context`` with its answers
``org_answer`` (a list of aliases), and a substituted passage ``sub_context`` in which the
answer entity was swapped for ``sub_answer``. Macnoise uses the same fields. Records load
from local JSON (a list), JSONL or parquet files, or from the hub through
``datasets.load_dataset`` when a network is available.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from core.errors import DataError, OfflineError

REQUIRED_FIELDS = ("question", "org_context", "org_answer", "sub_context", "sub_answer")


@dataclass
class ConflictExample:
    """One question with an original and a substituted (conflicting) context."""

    id: str
    question: str
    org_context: str
    org_answer: list[str]
    sub_context: str
    sub_answer: list[str]
    meta: dict[str, Any] = field(default_factory=dict)

    def to_record(self) -> dict[str, Any]:
        return {"id": self.id, "question": self.question, "org_context": self.org_context,
                "org_answer": list(self.org_answer), "sub_context": self.sub_context,
                "sub_answer": list(self.sub_answer), **({"meta": self.meta} if self.meta else {})}


def _answers(value: Any, name: str, where: str, path: str) -> list[str]:
    if isinstance(value, str):
        value = [value]
    try:
        out = [str(v) for v in list(value) if str(v).strip()]
    except TypeError:
        out = []
    if not out:
        raise DataError(f"field {name!r} must be a non-empty answer or list of answers, got {value!r}",
                        path=path, record=where, fix=f"give at least one answer string in {name!r}")
    return out


def example_from_record(rec: dict[str, Any], row: int, path: str = "<records>") -> ConflictExample:
    """Validate one record; a missing or empty field raises a DataError naming the field and the row."""
    if not isinstance(rec, dict):
        raise DataError(f"expected an object with fields {list(REQUIRED_FIELDS)}, got {type(rec).__name__}",
                        path=path, record=f"row {row}")
    where = f"row {row}" + (f" (id {rec['id']})" if rec.get("id") is not None else "")
    missing = [f for f in REQUIRED_FIELDS if f not in rec or rec[f] is None]
    if missing:
        raise DataError(f"missing field(s) {missing}; NQ-Swap records need {list(REQUIRED_FIELDS)}",
                        path=path, record=where, fix="add the missing fields or drop the record")
    for f in ("question", "org_context", "sub_context"):
        if not str(rec[f]).strip():
            raise DataError(f"field {f!r} is empty", path=path, record=where, fix=f"give {f!r} some text")
    meta = {k: v for k, v in rec.items() if k not in REQUIRED_FIELDS and k != "id"}
    return ConflictExample(id=str(rec.get("id", row)), question=str(rec["question"]).strip(),
                           org_context=str(rec["org_context"]).strip(),
                           org_answer=_answers(rec["org_answer"], "org_answer", where, path),
                           sub_context=str(rec["sub_context"]).strip(),
                           sub_answer=_answers(rec["sub_answer"], "sub_answer", where, path), meta=meta)


def _read_records(path: Path) -> list[dict[str, Any]]:
    suffix = "".join(path.suffixes[-2:]) if path.suffix == ".gz" else path.suffix
    if suffix in (".jsonl", ".jsonl.gz"):
        import gzip

        opener = gzip.open if suffix.endswith(".gz") else open
        recs = []
        with opener(path, "rt") as fh:
            for i, line in enumerate(fh):
                if line.strip():
                    try:
                        recs.append(json.loads(line))
                    except json.JSONDecodeError as err:
                        raise DataError(f"invalid JSON ({err.msg})", path=str(path), record=f"line {i + 1}") from None
        return recs
    if suffix == ".json":
        try:
            data = json.loads(path.read_text())
        except json.JSONDecodeError as err:
            raise DataError(f"invalid JSON ({err.msg} at line {err.lineno})", path=str(path)) from None
        if isinstance(data, dict):
            data = data.get("data") or data.get("examples") or next(
                (v for v in data.values() if isinstance(v, list)), None)
        if not isinstance(data, list):
            raise DataError("expected a list of records (or an object holding one)", path=str(path))
        return data
    if suffix == ".parquet":
        import pandas as pd

        df = pd.read_parquet(path)
        return [{k: (v.tolist() if hasattr(v, "tolist") else v) for k, v in r.items()}
                for r in df.to_dict("records")]
    raise DataError(f"unknown file type {suffix!r}", path=str(path), fix="use .json, .jsonl or .parquet")


def load_conflict_examples(source: str | Path, *, split: str = "dev", limit: int | None = None
                           ) -> list[ConflictExample]:
    """Examples from a local file, or from the hub (``org/name``) through ``datasets`` when online."""
    p = Path(str(source)).expanduser()
    if p.exists():
        recs = _read_records(p)
        path = str(p)
    elif str(source).startswith(("/", ".", "~")) or p.suffix in (".json", ".jsonl", ".parquet"):
        raise DataError("dataset file does not exist", path=str(p), fix="check data.path")
    else:
        recs = _load_hub(str(source), split)
        path = str(source)
    if limit is not None:
        recs = recs[: int(limit)]
    examples = [example_from_record(r, i, path) for i, r in enumerate(recs)]
    if not examples:
        raise DataError("no records", path=path, fix="point data.path at a file with NQ-Swap records")
    return examples


def _load_hub(name: str, split: str) -> list[dict[str, Any]]:
    try:
        import datasets

        ds = datasets.load_dataset(name, split=split)
    except Exception as err:  # datasets raises several types for a missing network or dataset
        raise OfflineError(f"dataset {name!r} could not be loaded ({type(err).__name__}: "
                           f"{str(err).splitlines()[0][:160] if str(err) else ''})",
                           fix="download it where a network is available and point data.path at a local "
                               ".json/.jsonl/.parquet file") from None
    return [dict(r) for r in ds]

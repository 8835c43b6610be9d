"""Loaders for the published bias benchmarks, from local files or from the hub when online.

Each loader reads the format its authors publish and turns records into ``Sample`` lists whose
``meta`` carries what concepts and behaviour need. A record that lacks a required field is
rejected with the field and the row named, never skipped in silence.

- CrowS-Pairs (Nangia et al. 2020): ``crows_pairs_anonymized.csv``.
- StereoSet (Nadeem et al. 2021): ``dev.json``, intrasentence part.
- BBQ (Parrish et al. 2022): ``data/<Category>.jsonl``.
- Bias in Bios (De-Arteaga et al. 2019) as on the hub (``LabHC/bias_in_bios``): JSONL, CSV or parquet.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from core.errors import DataError, OfflineError
from core.samples import Sample
from domains.bias.vocab import KNOWN_BIAS_CATEGORIES, check_categories

CROWS_FIELDS = ("sent_more", "sent_less", "stereo_antistereo", "bias_type")
STEREOSET_FIELDS = ("target", "bias_type", "context", "sentences")
STEREOSET_SENTENCE_FIELDS = ("sentence", "gold_label")
BBQ_FIELDS = ("context", "question", "ans0", "ans1", "ans2", "label", "context_condition",
              "question_polarity", "category", "answer_info", "additional_metadata")
BIOS_FIELDS = ("hard_text", "profession", "gender")

# LabHC/bias_in_bios stores profession and gender as class indices in this order.
BIOS_PROFESSIONS = ("accountant", "architect", "attorney", "chiropractor", "comedian", "composer", "dentist",
                    "dietitian", "dj", "filmmaker", "interior_designer", "journalist", "model", "nurse",
                    "painter", "paralegal", "pastor", "personal_trainer", "photographer", "physician", "poet",
                    "professor", "psychologist", "rapper", "software_engineer", "surgeon", "teacher",
                    "yoga_teacher")
BIOS_GENDERS = ("male", "female")
STEREOSET_LABELS = ("anti-stereotype", "stereotype", "unrelated")
CROWS_DIRECTIONS = ("stereo", "antistereo")

HUB_NAMES = {"crows_pairs": "nyu-mll/crows_pairs", "stereoset": "McGill-NLP/stereoset",
             "bbq": "heegyu/bbq", "bias_in_bios": "LabHC/bias_in_bios"}


def _require(record: Mapping[str, Any], fields: Iterable[str], path: str, row: str) -> None:
    for f in fields:
        if f not in record or record[f] is None or (isinstance(record[f], str) and record[f] == ""):
            raise DataError(f"missing field {f!r}", path=path, record=row,
                            fix=f"every record needs the fields {list(fields)}")


def _from_hub(name: str, *, config: str | None = None, split: str) -> Any:
    """``datasets.load_dataset`` with a clear OfflineError when the hub cannot be reached."""
    try:
        import datasets
    except ImportError as err:  # pragma: no cover - datasets is a declared dependency
        raise OfflineError(f"cannot load {name}: the datasets package is missing") from err
    try:
        return datasets.load_dataset(name, config, split=split)
    except Exception as err:  # the hub raises many types offline
        raise OfflineError(f"could not download {name}{'/' + config if config else ''} ({type(err).__name__})",
                           fix="download the file once and pass its path instead") from err


def _read_table(path: Path) -> Iterator[tuple[str, dict[str, Any]]]:
    """Rows of a CSV/TSV, JSON-lines, JSON list or parquet file, with a row label for messages."""
    suffix = path.suffix.lower()
    if not path.exists():
        raise DataError("file not found", path=str(path), fix="check the path")
    if suffix in (".csv", ".tsv"):
        with open(path, newline="", encoding="utf-8") as fh:
            reader = csv.DictReader(fh, delimiter="\t" if suffix == ".tsv" else ",")
            for i, row in enumerate(reader, start=2):
                yield f"line {i}", row
    elif suffix in (".jsonl", ".ndjson"):
        with open(path, encoding="utf-8") as fh:
            for i, line in enumerate(fh, start=1):
                if not line.strip():
                    continue
                try:
                    yield f"line {i}", json.loads(line)
                except json.JSONDecodeError as err:
                    raise DataError(f"not valid JSON ({err.msg})", path=str(path), record=f"line {i}") from None
    elif suffix == ".json":
        with open(path, encoding="utf-8") as fh:
            data = json.load(fh)
        for i, row in enumerate(data if isinstance(data, list) else [data]):
            yield f"item {i}", row
    elif suffix == ".parquet":
        import pandas as pd

        for i, row in enumerate(pd.read_parquet(path).to_dict("records")):
            yield f"row {i}", row
    else:
        raise DataError(f"unknown file type {suffix!r}", path=str(path), fix="use .csv, .tsv, .jsonl, .json or .parquet")


def _hub_rows(ds: Any) -> Iterator[tuple[str, dict[str, Any]]]:
    for i, row in enumerate(ds):
        yield f"row {i}", dict(row)


def _class_name(value: Any, names: Sequence[str], field: str, path: str, row: str) -> str:
    """Hub copies store labels as class indices; local files as names."""
    if isinstance(value, (int,)) or (isinstance(value, str) and value.isdigit()):
        k = int(value)
        if not 0 <= k < len(names):
            raise DataError(f"field {field!r} index {k} out of range", path=path, record=row,
                            fix=f"use 0..{len(names) - 1} or one of {list(names)}")
        return names[k]
    return str(value)


def load_crows_pairs(path: str | Path | None = None, *, bias_types: Iterable[str] | None = None,
                     split: str = "test") -> list[Sample]:
    """One sample per pair; ``text`` is the more stereotypical sentence, ``meta`` holds both."""
    wanted = check_categories(bias_types, "crows_pairs")
    src = str(path) if path else HUB_NAMES["crows_pairs"]
    rows = _read_table(Path(path)) if path else _hub_rows(_from_hub(src, split=split))
    out = []
    for row_label, rec in rows:
        _require(rec, CROWS_FIELDS, src, row_label)
        bias_type = _class_name(rec["bias_type"], KNOWN_BIAS_CATEGORIES["crows_pairs"], "bias_type", src, row_label)
        direction = _class_name(rec["stereo_antistereo"], CROWS_DIRECTIONS, "stereo_antistereo", src, row_label)
        if direction not in CROWS_DIRECTIONS:
            raise DataError(f"stereo_antistereo is {direction!r}", path=src, record=row_label,
                            fix=f"use one of {list(CROWS_DIRECTIONS)}")
        if wanted and bias_type not in wanted:
            continue
        out.append(Sample(id=f"crows-{len(out)}", text=str(rec["sent_more"]),
                          meta={"sent_more": str(rec["sent_more"]), "sent_less": str(rec["sent_less"]),
                                "stereo_antistereo": direction, "bias_type": bias_type, "source": "crows_pairs"}))
    return out


def load_stereoset(path: str | Path | None = None, *, bias_types: Iterable[str] | None = None,
                   split: str = "validation") -> list[Sample]:
    """One sample per intrasentence item; meta maps gold label -> filled sentence."""
    wanted = check_categories(bias_types, "stereoset")
    if path:
        src = str(path)
        p = Path(path)
        if not p.exists():
            raise DataError("file not found", path=src, fix="check the path")
        with open(p, encoding="utf-8") as fh:
            data = json.load(fh)
        items = data.get("data", {}).get("intrasentence") if isinstance(data, dict) else data
        if items is None:
            raise DataError("missing field 'data.intrasentence'", path=src, record="top level",
                            fix="pass StereoSet's dev.json (intrasentence part)")
        rows: Iterable[tuple[str, dict]] = ((f"intrasentence item {i}", r) for i, r in enumerate(items))
    else:
        src = HUB_NAMES["stereoset"]
        rows = _hub_rows(_from_hub(src, config="intrasentence", split=split))
    out = []
    for row_label, rec in rows:
        _require(rec, STEREOSET_FIELDS, src, row_label)
        sents = rec["sentences"]
        if isinstance(sents, Mapping):  # hub copy: a dict of lists
            _require(sents, STEREOSET_SENTENCE_FIELDS, src, f"{row_label} sentences")
            sents = [{"sentence": s, "gold_label": g} for s, g in zip(sents["sentence"], sents["gold_label"], strict=True)]
        by_label = {}
        for j, s in enumerate(sents):
            _require(s, STEREOSET_SENTENCE_FIELDS, src, f"{row_label} sentence {j}")
            label = _class_name(s["gold_label"], STEREOSET_LABELS, "gold_label", src, f"{row_label} sentence {j}")
            if label not in STEREOSET_LABELS:
                raise DataError(f"gold_label is {label!r}", path=src, record=f"{row_label} sentence {j}",
                                fix=f"use one of {list(STEREOSET_LABELS)}")
            by_label[label] = str(s["sentence"])
        if wanted and rec["bias_type"] not in wanted:
            continue
        out.append(Sample(id=f"stereoset-{rec.get('id', len(out))}", text=str(rec["context"]),
                          meta={"target": rec["target"], "bias_type": rec["bias_type"], "context": rec["context"],
                                "sentences": by_label, "source": "stereoset"}))
    return out


def load_bbq(path: str | Path | Sequence[str | Path] | None = None, *, categories: Iterable[str] | None = None,
             split: str = "test") -> list[Sample]:
    """BBQ items; ``text`` is context + question, meta keeps answers, label and metadata."""
    wanted = check_categories(categories, "bbq")
    sources: list[tuple[str, Iterable[tuple[str, dict]]]] = []
    if path:
        paths = [path] if isinstance(path, (str, Path)) else list(path)
        sources = [(str(p), _read_table(Path(p))) for p in paths]
    else:
        for cat in wanted or check_categories(["Gender_identity"], "bbq"):
            name = f"{HUB_NAMES['bbq']}/{cat}"
            sources.append((name, _hub_rows(_from_hub(HUB_NAMES["bbq"], config=cat, split=split))))
    out = []
    for src, rows in sources:
        for row_label, rec in rows:
            _require(rec, BBQ_FIELDS, src, row_label)
            meta_extra = rec["additional_metadata"]
            if isinstance(meta_extra, str):
                meta_extra = json.loads(meta_extra)
            _require(meta_extra, ("stereotyped_groups",), src, f"{row_label} additional_metadata")
            info = rec["answer_info"]
            if isinstance(info, str):
                info = json.loads(info)
            _require(info, ("ans0", "ans1", "ans2"), src, f"{row_label} answer_info")
            if rec["context_condition"] not in ("ambig", "disambig"):
                raise DataError(f"context_condition is {rec['context_condition']!r}", path=src, record=row_label,
                                fix="use 'ambig' or 'disambig'")
            if rec["question_polarity"] not in ("neg", "nonneg"):
                raise DataError(f"question_polarity is {rec['question_polarity']!r}", path=src, record=row_label,
                                fix="use 'neg' or 'nonneg'")
            label = int(rec["label"])
            if label not in (0, 1, 2):
                raise DataError(f"label is {label}", path=src, record=row_label, fix="use 0, 1 or 2")
            if wanted and rec["category"] not in wanted:
                continue
            out.append(Sample(id=f"bbq-{rec['category']}-{rec.get('example_id', len(out))}",
                              text=f"{rec['context']} {rec['question']}",
                              meta={"context": rec["context"], "question": rec["question"],
                                    "answers": [rec["ans0"], rec["ans1"], rec["ans2"]], "label": label,
                                    "context_condition": rec["context_condition"],
                                    "question_polarity": rec["question_polarity"], "category": rec["category"],
                                    "answer_info": {k: list(v) for k, v in info.items()},
                                    "stereotyped_groups": list(meta_extra["stereotyped_groups"]),
                                    "source": "bbq"}))
    return out


def load_bias_in_bios(path: str | Path | None = None, *, professions: Iterable[str] | None = None,
                      split: str = "train", limit: int | None = None) -> list[Sample]:
    """Biographies with profession and gender names (hub class indices are mapped to names)."""
    keep = set(professions) if professions is not None else None
    if keep is not None:
        unknown = keep - set(BIOS_PROFESSIONS)
        if unknown:
            from core.errors import ConfigError
            raise ConfigError(f"unknown Bias in Bios professions {sorted(unknown)}", fix=f"use {list(BIOS_PROFESSIONS)}")
    src = str(path) if path else HUB_NAMES["bias_in_bios"]
    rows = _read_table(Path(path)) if path else _hub_rows(_from_hub(src, split=split))
    out = []
    for row_label, rec in rows:
        _require(rec, BIOS_FIELDS, src, row_label)
        prof = _class_name(rec["profession"], BIOS_PROFESSIONS, "profession", src, row_label)
        gender = _class_name(rec["gender"], BIOS_GENDERS, "gender", src, row_label).lower()
        gender = {"m": "male", "f": "female"}.get(gender, gender)
        if gender not in BIOS_GENDERS:
            raise DataError(f"gender is {rec['gender']!r}", path=src, record=row_label,
                            fix="use 0/1, male/female or m/f")
        if keep is not None and prof not in keep:
            continue
        out.append(Sample(id=f"bios-{len(out)}", text=str(rec["hard_text"]),
                          meta={"occupation": prof, "gender": gender, "group": gender, "source": "bias_in_bios"}))
        if limit and len(out) >= limit:
            break
    return out

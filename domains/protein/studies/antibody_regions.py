"""Case study ``antibody_regions``: do AntiBERTy's SAE features track the IMGT regions?

Real human heavy and light chains (paired repertoire sequencing, from the abnativ test
sets) go through AntiBERTy; several layers are harvested, a TopK SAE is trained per layer,
every residue gets its IMGT region from ANARCII, and the enrichment engine finds, per layer
and per region, the SAE latent (and, as the baseline, the single neuron) whose firing best
matches the region: selected on the validation split, scored on the test split. Splits are
homology-aware (MMseqs2 clusters of near-identical chains, both chains of an antibody kept
together). Writes ``results.json`` (via the CLI), ``report.html`` and the feature atlas
(``atlas/index.html``, one page per live latent of every layer).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from omegaconf import DictConfig

from core.io import write_json
from domains.protein.imgt import REGION_NAMES, number_chains
from domains.protein.pipeline import (
    Timer,
    concept_f1,
    enrich_layer,
    split_and_harvest,
    store_tokens,
    train_layer,
    write_atlas,
)
from domains.protein.records import ProteinRecord

log = logging.getLogger(__name__)

REGION_PREFIX = "IMGT:"


def load_chains(cs: DictConfig) -> list[ProteinRecord]:
    """The antibody chains named by ``case_study.data`` (abnativ paired set by default)."""
    from domains.protein.abnativ_data import load_paired, load_single
    from domains.protein.fasta import read_fasta
    from domains.protein.records import InputPolicy

    d = cs.data
    policy = InputPolicy(on_error=str(d.get("on_error", "skip")), max_length=int(d.get("max_length", 160)),
                         min_length=int(d.get("min_length", 70)), alphabet="standard")
    source = str(d.source)
    if source == "abnativ_paired":
        return load_paired(int(d.n_pairs), seed=int(d.seed), real_only=bool(d.get("real_only", True)),
                           path=d.get("path"), policy=policy)
    if source in ("vh", "vl", "vhh"):
        return load_single(source, int(d.n_chains), seed=int(d.seed), path=d.get("path"), policy=policy)
    if source == "fasta":
        return read_fasta(str(d.path), policy)
    from core.errors import ConfigError

    raise ConfigError(f"unknown antibody data source {source!r}",
                      fix="case_study.data.source: abnativ_paired | vh | vl | vhh | fasta")


def number_and_filter(records: list[ProteinRecord], cs: DictConfig, run_dir: Path):
    """IMGT numbering; chains ANARCII cannot number are dropped and counted."""
    pre = cs.imgt.get("precomputed")
    if pre:
        from domains.protein.imgt import import_numbering
        from domains.protein.pipeline import resolve_path

        path = resolve_path(pre)
        if path.exists():
            log.info("seeded the numbering cache with %d chains from %s",
                     import_numbering(path, mode=str(cs.imgt.mode)), path)
    nums = number_chains([r.sequence for r in records], mode=str(cs.imgt.mode),
                         batch_size=int(cs.imgt.batch_size), ncpu=int(cs.imgt.ncpu))
    keep, kept_nums, dropped = [], [], 0
    for r, n in zip(records, nums, strict=True):
        if n.error or n.chain is None:
            dropped += 1
            continue
        r.meta["chain"] = n.chain
        keep.append(r)
        kept_nums.append(n)
    rows = [{"id": r.id, "index": idx, "imgt": f"{pos}{ins}", "region": reg}
            for r, n in zip(keep, kept_nums, strict=True)
            for (idx, pos, ins), reg in zip(n.residues, n.regions(), strict=True)]
    out = run_dir / "data" / "imgt_numbering.tsv"
    if not out.exists():
        from core.io import atomic_path

        with atomic_path(out) as tmp:
            pd.DataFrame(rows).to_csv(tmp, sep="\t", index=False)
    return keep, kept_nums, dropped


def region_concepts(nums, *, include_amino_acids: bool, records: list[ProteinRecord]):
    """Spans and concept table: one concept per IMGT region (each chain's region one instance),
    CDR_any / FR_any, and amino-acid identity (a separate group)."""
    from domains.protein.concepts import ResidueConcepts
    from domains.protein.records import STANDARD_AA

    rows = []
    for i, n in enumerate(nums):
        for reg, a, b in n.region_spans():
            rows.append((i, a, b, f"{REGION_PREFIX}{reg}", (i, reg)))
            rows.append((i, a, b, f"{REGION_PREFIX}{reg[:-1] if reg[-1].isdigit() else reg}_any", (i, reg)))
    names = [f"{REGION_PREFIX}{r}" for r in REGION_NAMES] + [f"{REGION_PREFIX}CDR_any", f"{REGION_PREFIX}FR_any"]
    table = [{"name": x, "kind": "instance", "source": "anarcii", "group": "imgt_region"} for x in names]
    if include_amino_acids:
        for i, r in enumerate(records):
            for p, aa in enumerate(r.sequence):
                rows.append((i, p, p + 1, f"aa:{aa}", i))
        table += [{"name": f"aa:{a}", "kind": "token", "source": "sequence", "group": "amino_acid"}
                  for a in STANDARD_AA]
    spans = pd.DataFrame(rows, columns=["sample", "start", "end", "concept", "instance"])
    return ResidueConcepts(spans, pd.DataFrame(table), {})


def chain_labels(records: list[ProteinRecord], min_count: int) -> pd.DataFrame:
    """Sequence-level labels: chain (from ANARCII), V-gene family, isotype class (heavy chains)."""
    frame = pd.DataFrame({
        "chain": [r.meta.get("chain") for r in records],
        "v_family": [r.meta.get("v_family") for r in records],
        "isotype": [r.meta.get("isotype_class") for r in records],
    }, index=pd.Index(range(len(records)), name="sample"))
    out = {}
    for col in frame.columns:
        counts = frame[col].value_counts()
        for value, k in counts.items():
            if k >= min_count and k < len(frame):
                out[f"{col}={value}"] = (frame[col] == value).to_numpy()
    return pd.DataFrame(out, index=frame.index, dtype=bool)


def run(cfg: DictConfig, run_dir: Path) -> dict[str, Any]:
    from domains.protein import region_controls as rc_

    cs = cfg.case_study
    run_dir = Path(run_dir)
    timer = Timer()
    with timer("load"):
        records = load_chains(cs)
    with timer("imgt_numbering"):
        records, nums, n_unnumbered = number_and_filter(records, cs, run_dir)
    split_table, splits, hooks, stores = split_and_harvest(records, cs.split, cfg.model, cs, run_dir, timer)
    regions = [*REGION_NAMES, "CDR_any", "FR_any"]
    with timer("concepts"):
        rc = region_concepts(nums, include_amino_acids=bool(cs.amino_acid_concepts), records=records)
        cm = rc.matrix(store_tokens(stores[hooks[0]]))
        cm.save(run_dir / "concepts" / "imgt_regions")
        labels = chain_labels(records, int(cs.enrich.min_positives))
        bounds = rc_.region_bounds(nums)
        chains = [r.meta.get("chain") for r in records]
        labels["cdr3_long"] = rc_.cdr3_length_labels(bounds, chains, splits).to_numpy()
        shifted = rc_.shifted_chains(bounds, chains, splits, list(REGION_NAMES), REGION_PREFIX)
        length_auroc = rc_.length_baseline(np.array([len(r.sequence) for r in records], float),
                                           labels["cdr3_long"], splits)
    groups = dict(zip(cm.concepts["name"], cm.concepts["group"], strict=True))
    region_concept_names = [f"{REGION_PREFIX}{r}" for r in regions if f"{REGION_PREFIX}{r}" in cm.names]

    per_layer: dict[str, Any] = {}
    saes: dict[str, Any] = {}
    for hook in hooks:
        layer = hook.split(".")[1]
        out = run_dir / f"layer{layer}"
        with timer(f"train_layer{layer}"):
            sae, train_summary = train_layer(stores[hook], out, cs.sae)
        saes[hook] = sae
        with timer(f"enrich_layer{layer}"):
            summary = enrich_layer(sae, stores[hook], cm, splits, out / "enrichment", cs.enrich,
                                   sample_labels=labels, subsets=shifted,
                                   position_classifiers=region_concept_names)
        sae_f1, neu_f1 = concept_f1(summary, "sae"), concept_f1(summary, "neuron")
        pos_f1 = concept_f1(summary, "position")
        regional = [c for c in sae_f1 if groups.get(c) == "imgt_region"] or \
                   [c for c in neu_f1 if groups.get(c) == "imgt_region"]
        aa = [c for c in set(sae_f1) | set(neu_f1) if groups.get(c) == "amino_acid"]
        res = {
            "hook": hook,
            "sae_concepts_f1_gt_0_5": sum(1 for c in regional if sae_f1.get(c, 0) > 0.5),
            "neuron_concepts_f1_gt_0_5": sum(1 for c in regional if neu_f1.get(c, 0) > 0.5),
            "position_concepts_f1_gt_0_5": sum(1 for c in regional if pos_f1.get(c, 0) > 0.5),
            "best_f1_per_region": {
                "sae": {c[len(REGION_PREFIX):]: sae_f1.get(c) for c in sorted(regional)},
                "neuron": {c[len(REGION_PREFIX):]: neu_f1.get(c) for c in sorted(regional)},
            },
            **rc_.controls_of_layer(summary, regions, REGION_PREFIX),
            "amino_acids": {"sae_f1_gt_0_5": sum(1 for c in aa if sae_f1.get(c, 0) > 0.5),
                            "neuron_f1_gt_0_5": sum(1 for c in aa if neu_f1.get(c, 0) > 0.5),
                            "n": len(aa)},
            "sae_training": {k: train_summary.get(k) for k in ("steps", "tokens", "seconds", "dead_frac")}
                            | {"fvu": (train_summary.get("metrics") or {}).get("val/fvu")},
        }
        res["sequence_labels"] = sequence_labels(summary, {"cdr3_long": length_auroc})
        per_layer[f"layer{layer}"] = res
        write_json(out / "results.json", res)

    with timer("report"):
        from domains.protein.studies.antibody_report import write_report

        write_report(run_dir, cs, records, nums, splits, stores, saes, per_layer, hooks)
    with timer("atlas"):
        atlas = write_atlas(run_dir, cs.get("atlas"))
    results = {
        "case_study": "antibody_regions",
        "model": str(cfg.model.get("name", "antiberty")),
        "data": {"n_chains": len(records), "n_unnumbered_dropped": n_unnumbered,
                 "splits": pd.Series(splits).value_counts().to_dict(),
                 "n_clusters": int(split_table["cluster"].nunique()),
                 "shifted_test_chains": {k[len(REGION_PREFIX):]: len(v) for k, v in shifted.items()},
                 "licence": "CC BY-NC-SA 4.0 (abnativ test sets)"},
        "layers": per_layer,
        "best_layer_per_region": _best_layers(per_layer),
        "seconds": timer.seconds,
        "report": str(run_dir / "report.html"),
        "atlas": atlas,
    }
    return results


def sequence_labels(summary: dict, baselines: dict[str, Any]) -> dict[str, Any]:
    """Per sequence label (chain, V family, isotype, CDR3 length): the single latent, the single
    neuron (+x or -x) and the pooling chosen on the validation chains by AUROC, their test AUROC,
    and the linear-probe ceiling (and, where given, a baseline such as the chain's length)."""
    sl = summary.get("sample_level") or {}
    out: dict[str, Any] = {"select": sl.get("select", "valid"), "report": sl.get("report", "test")}
    for basis in ("sae", "neuron", "neuron_probe"):
        for label, sides in (sl.get(basis) or {}).items():
            best = sides.get("True") if isinstance(sides, dict) else None
            if isinstance(best, dict):
                row = out.setdefault(label, {})
                row[basis] = best["auroc_test"]
                if basis != "neuron_probe":
                    row[f"{basis}_feature"] = best["feature_name"]
                    row[f"{basis}_pooling"] = best["pooling"]
    for label, base in baselines.items():
        if base is not None and label in out:
            out[label]["chain_length"] = base["auroc_test"]
    return out


def _best_layers(per_layer: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for basis in ("sae", "neuron"):
        best: dict[str, Any] = {}
        for layer, res in per_layer.items():
            for reg, f1 in res["best_f1_per_region"][basis].items():
                if f1 is not None and (reg not in best or f1 > best[reg]["f1"]):
                    best[reg] = {"layer": layer, "f1": f1}
        out[basis] = best
    return out

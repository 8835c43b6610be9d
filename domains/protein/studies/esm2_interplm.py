"""Case study ``esm2_interplm``: the InterPLM set-up (Simon & Zou 2024) on ESM-2 and Swiss-Prot.

Swiss-Prot proteins (flat file, or a UniProt TSV with InterPLM's columns) go through ESM-2;
the residual stream after each block is harvested, one SAE is trained per layer, and every
latent and every neuron is scored against the per-residue Swiss-Prot concepts (binding sites
by ligand, domains, motifs, PTMs, secondary structure...) over InterPLM's threshold grid,
selected on validation proteins and scored on test proteins from other MMseqs2 clusters.
Protein-level labels (keywords, GO, Pfam, InterPro) are scored on per-protein max activation.

The full set-up (``case_study=esm2_interplm``) needs the ESM-2-8M weights and a Swiss-Prot
download; ``case_study=esm2_interplm_tiny`` runs the same code on a tiny random ESM-2 and
the test fixture, which is what CI runs.
"""

from __future__ import annotations

import logging
import random
from pathlib import Path
from typing import Any

import pandas as pd
from omegaconf import DictConfig

from core.errors import ConfigError
from core.io import write_json
from domains.protein.concepts import feature_types_of, protein_labels, residue_concepts
from domains.protein.pipeline import (
    Timer,
    concept_f1,
    enrich_layer,
    resolve_path,
    split_and_harvest,
    store_tokens,
    train_layer,
)
from domains.protein.records import InputPolicy, ProteinRecord

log = logging.getLogger(__name__)

# InterPLM (Simon & Zou 2024, ESM-2-8M, Swiss-Prot): up to 2,548 SAE features per layer
# associated with up to 143 concepts, against at most 46 neurons covering 15 concepts.
INTERPLM_PUBLISHED = {"sae_features_max": 2548, "sae_concepts_max": 143, "neuron_features_max": 46,
                      "neuron_concepts_max": 15}


def load_proteins(data: DictConfig) -> tuple[list[ProteinRecord], dict[str, int]]:
    """Proteins named by ``domain.data`` (checked by an :class:`InputPolicy`); skipped counts."""
    from omegaconf import OmegaConf

    from domains.protein.fasta import read_fasta
    from domains.protein.swissprot import read_swissprot
    from domains.protein.uniprot_tsv import read_uniprot_tsv

    if OmegaConf.is_missing(data, "path") or not data.path:
        raise ConfigError("domain.data.path is not set: no Swiss-Prot file to read",
                          fix="download uniprot_sprot.dat.gz (see case_studies/esm2_interplm/README.md) and "
                              "pass domain.data.path=<file>")
    policy = InputPolicy(on_error=str(data.on_error), max_length=data.get("max_length"),
                         min_length=int(data.get("min_length", 1)))
    readers = {"swissprot": read_swissprot, "uniprot_tsv": read_uniprot_tsv, "fasta": read_fasta}
    fmt = str(data.format)
    if fmt not in readers:
        raise ConfigError(f"unknown protein file format {fmt!r}", fix=f"domain.data.format: one of {list(readers)}")
    records = readers[fmt](str(resolve_path(data.path)), policy)
    if data.get("max_proteins"):
        order = list(range(len(records)))
        random.Random(int(data.get("seed", 0))).shuffle(order)
        records = [records[i] for i in sorted(order[: int(data.max_proteins)])]
    return records, policy.summary()


def features_with_f1(enrich_dir: Path, basis: str, cutoff: float = 0.5,
                     exclude_groups: tuple[str, ...] = ("amino_acid",), groups: dict[str, str] | None = None
                     ) -> tuple[int, int]:
    """(distinct features, distinct concepts) with test F1 > ``cutoff`` in the enrichment table.

    The table holds each concept's top features (selected on validation), so the feature
    count is a lower bound on InterPLM's "features associated with a concept".
    """
    table_path = next((p for p in (enrich_dir / "enrichment.tsv", enrich_dir / "enrichment.parquet")
                       if p.exists()), None)
    if table_path is None:
        return 0, 0
    t = pd.read_csv(table_path, sep="\t") if table_path.suffix == ".tsv" else pd.read_parquet(table_path)
    t = t[(t["basis"] == basis) & (t["split"] == "test") & (t["f1"] > cutoff)]
    if groups:
        t = t[~t["concept"].map(lambda c: groups.get(c, "") in exclude_groups)]
    return int(t["feature"].nunique()), int(t["concept"].nunique())


def run(cfg: DictConfig, run_dir: Path) -> dict[str, Any]:
    cs, dom = cfg.case_study, cfg.domain
    run_dir = Path(run_dir)
    timer = Timer()
    with timer("load"):
        records, skipped = load_proteins(dom.data)
    if not records:
        raise ConfigError("no proteins left after reading and checking the input",
                          fix=f"check domain.data.path ({dom.data.path}); skipped: {skipped}")
    split_table, splits, hooks, stores = split_and_harvest(records, dom.split, cfg.model, cs, run_dir, timer)
    cc = dom.concepts
    with timer("concepts"):
        types = feature_types_of(cc.get("set"), cc.get("feature_types"))
        rc = residue_concepts(records, feature_types=types, min_count=int(cc.min_count),
                              include_amino_acids=bool(cc.amino_acids), include_cofactors=bool(cc.cofactors),
                              strip_note_index=bool(cc.strip_note_index))
        cm = rc.matrix(store_tokens(stores[hooks[0]]))
        cm.save(run_dir / "concepts" / "swissprot")
        labels = protein_labels(records, min_count=int(cc.protein_label_min_count)) \
            if bool(cc.protein_labels) else None
    groups = dict(zip(cm.concepts["name"], cm.concepts["group"], strict=True))

    per_layer: dict[str, Any] = {}
    for hook in hooks:
        layer = hook.split(".")[1]
        out = run_dir / f"layer{layer}"
        with timer(f"train_layer{layer}"):
            sae, train_summary = train_layer(stores[hook], out, cs.sae)
        with timer(f"enrich_layer{layer}"):
            summary = enrich_layer(sae, stores[hook], cm, splits, out / "enrichment", cs.enrich,
                                   sample_labels=labels if labels is not None and len(labels.columns) else None)
        sae_f1, neu_f1 = concept_f1(summary, "sae"), concept_f1(summary, "neuron")
        scored = [c for c in set(sae_f1) | set(neu_f1) if groups.get(c) != "amino_acid"]
        sae_feats, sae_concepts = features_with_f1(out / "enrichment", "sae", groups=groups)
        neu_feats, neu_concepts = features_with_f1(out / "enrichment", "neuron", groups=groups)
        res = {
            "hook": hook,
            "sae_concepts_f1_gt_0_5": sum(1 for c in scored if sae_f1.get(c, 0) > 0.5),
            "neuron_concepts_f1_gt_0_5": sum(1 for c in scored if neu_f1.get(c, 0) > 0.5),
            "sae_features_f1_gt_0_5": sae_feats,
            "neuron_features_f1_gt_0_5": neu_feats,
            "n_concepts_scored": len(scored),
            "best_f1": {"sae": {c: sae_f1.get(c) for c in sorted(scored)},
                        "neuron": {c: neu_f1.get(c) for c in sorted(scored)}},
            "sae_training": {k: train_summary.get(k) for k in ("steps", "tokens", "seconds", "dead_frac")},
        }
        per_layer[f"layer{layer}"] = res
        write_json(out / "results.json", res)
    with timer("report"):
        _report(run_dir, records, per_layer, cm, skipped)
    return {
        "case_study": str(cs.name),
        "model": str(cfg.model.get("name", "esm2")),
        "data": {"n_proteins": len(records), "skipped": skipped,
                 "splits": pd.Series(splits).value_counts().to_dict(),
                 "n_clusters": int(split_table["cluster"].nunique()),
                 "n_concepts": int(cm.n_concepts), "annotation_notes": rc.notes},
        "layers": per_layer,
        "interplm_published": INTERPLM_PUBLISHED,
        "seconds": timer.seconds,
        "report": str(run_dir / "report.html"),
    }


def _report(run_dir: Path, records, per_layer: dict[str, Any], cm, skipped: dict[str, int]) -> Path:
    from core.report.html import Report

    rep = Report("esm2_interplm: SAE features vs Swiss-Prot concepts", run_dir)
    rep.text(f"{len(records)} proteins ({skipped or 'none'} skipped), {cm.n_concepts} concepts "
             "(amino-acid identity counted apart). Per layer: concepts whose best latent / neuron reaches "
             "test F1 > 0.5, and the distinct latents / neurons that do so for some concept.")
    rows = [{"layer": k, "SAE concepts F1>0.5": v["sae_concepts_f1_gt_0_5"],
             "neuron concepts F1>0.5": v["neuron_concepts_f1_gt_0_5"],
             "SAE features F1>0.5": v["sae_features_f1_gt_0_5"],
             "neuron features F1>0.5": v["neuron_features_f1_gt_0_5"],
             "concepts scored": v["n_concepts_scored"]} for k, v in per_layer.items()]
    rep.heading("Per layer")
    rep.table(pd.DataFrame(rows))
    rep.heading("InterPLM, published (ESM-2-8M, Swiss-Prot)")
    rep.table(pd.DataFrame([{"basis": "SAE", "features (max over layers)": INTERPLM_PUBLISHED["sae_features_max"],
                             "concepts (max over layers)": INTERPLM_PUBLISHED["sae_concepts_max"]},
                            {"basis": "neurons", "features (max over layers)": INTERPLM_PUBLISHED["neuron_features_max"],
                             "concepts (max over layers)": INTERPLM_PUBLISHED["neuron_concepts_max"]}]))
    best_rows = []
    for k, v in per_layer.items():
        for c, f in v["best_f1"]["sae"].items():
            best_rows.append({"layer": k, "concept": c, "SAE F1": f, "neuron F1": v["best_f1"]["neuron"].get(c)})
    if best_rows:
        rep.heading("Best test F1 per concept")
        rep.table(pd.DataFrame(best_rows).sort_values("SAE F1", ascending=False), max_rows=300)
    for k in per_layer:
        if (run_dir / k / "enrichment" / "report.html").exists():
            rep.raw(f'<p><a href="{k}/enrichment/report.html">{k}: full enrichment report</a></p>')
    return rep.write("report.html")

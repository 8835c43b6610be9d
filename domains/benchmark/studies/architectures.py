"""The ``architectures`` case study: the six dictionary architectures through the evaluation
suite on two real models, at matched L0.

Two legs, each one store of one layer:

- ``smollm2``: SmolLM2-135M-Instruct on the bias domain's built-in biographies (occupation and
  gender as sample labels, Bias in Bios style; gendered words, names and occupation words as
  token concepts); all five evaluations (absorption needs word tokens);
- ``antiberty``: AntiBERTy on real human antibody chains (abnativ, CC BY-NC-SA 4.0) with IMGT
  regions (ANARCII) as token concepts and chain / V-gene family as sample labels; absorption
  does not apply to residues.

Matched L0: TopK, BatchTopK and Matryoshka use ``k`` = ``target_l0`` by construction; JumpReLU
starts as TopK with that ``k`` and then pulls its L0 towards ``target_l0`` (quadratic penalty);
ReLU and gated search the L1 coefficient with full-length runs (two starting values, then
secant steps on log L0, ``l1_search_runs`` in all) and keep the run nearest ``target_l0``.
The achieved held-out L0 is in the table. Each dictionary's concepts explainer reads its own
enrichment table (``core.enrich``, validation split), and the autointerp evaluation scores it with the model-free concept AUROC on the test split.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

import pandas as pd
from omegaconf import DictConfig, OmegaConf

from core.io import read_json, write_json, write_text

log = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parents[3]


def smollm2_leg(leg: dict[str, Any], out: Path) -> dict[str, Any]:
    """Harvest biographies, write their concepts; returns store, concepts and labels."""
    from core.adapters import load_adapter
    from core.harvest import harvest
    from domains.bias.concepts import annotate
    from domains.bias.probes import biographies

    adapter = load_adapter(OmegaConf.load(ROOT / "conf" / "model" / "smollm2.yaml"))
    samples = biographies(occupations=tuple(leg["occupations"]), n_per_cell=int(leg["n_per_cell"]))
    hook = f"blocks.{int(leg['layer'])}.hook_resid_post"
    stores = harvest(adapter, samples, [hook], out / "activations", positions="skip_first", progress=False)
    prefix = out / "concepts" / "bias"
    if not Path(f"{prefix}.npz").exists():
        from core.enrich.concepts import ConceptMatrix
        from domains.protein.pipeline import store_tokens

        cm, _ = annotate(adapter, samples)
        tokens = store_tokens(stores[hook])  # harvest skipped each sample's first token: keep the same rows
        rows = cm.row_index(tokens["sample"], tokens["position"])
        if (rows < 0).any():
            from core.errors import DataError

            raise DataError(f"{int((rows < 0).sum())} harvested tokens have no concept row",
                            fix="annotate the same biographies with the same tokenizer")
        ConceptMatrix(cm.values[rows], cm.concepts, tokens).save(prefix)
    return {"store": stores[hook], "concepts": prefix, "labels": None, "columns": ["occupation", "gender"],
            "model": "smollm2", "evals": list(leg["evals"])}


def antiberty_leg(leg: dict[str, Any], out: Path) -> dict[str, Any]:
    """Harvest antibody chains, write IMGT region concepts and chain labels."""
    from core.adapters import load_adapter
    from domains.protein.pipeline import harvest_layers, store_tokens
    from domains.protein.studies.antibody_regions import load_chains, number_and_filter, region_concepts

    domain = OmegaConf.load(ROOT / "conf" / "domain" / "antibody.yaml")
    domain.data.n_pairs = int(leg["n_pairs"])
    records = load_chains(domain)
    records, nums, _ = number_and_filter(records, domain, out)
    adapter = load_adapter(OmegaConf.load(ROOT / "conf" / "model" / "antiberty.yaml"))
    hook = f"blocks.{int(leg['layer'])}.hook_resid_post"
    store = harvest_layers(adapter, records, [hook], out / "activations", batch_tokens=8192)[hook]
    prefix = out / "concepts" / "imgt"
    if not Path(f"{prefix}.npz").exists():
        region_concepts(nums, include_amino_acids=False, records=records).matrix(store_tokens(store)).save(prefix)
    labels = out / "labels.tsv"
    pd.DataFrame({"sample": range(len(records)), "chain": [r.meta.get("chain") for r in records],
                  "v_family": [r.meta.get("v_family") for r in records]}).to_csv(labels, sep="\t", index=False)
    return {"store": store, "concepts": prefix, "labels": str(labels), "columns": ["chain", "v_family"],
            "model": "antiberty", "evals": list(leg["evals"])}


def _held_out_l0(sae: Any, store: Any) -> float:
    from core.eval.metrics import evaluate_dictionary
    from core.store import ActivationDataModule

    dm = ActivationDataModule(store.root, batch_size=2048, holdout_fraction=0.05)
    return float(evaluate_dictionary(sae, dm.val_dataloader())["l0"])


def next_l1(tried: dict[float, float], target: float) -> float | None:
    """The next L1 coefficient to try, from the held-out L0 of every tried one (L0 falls as the
    coefficient grows). Once one run lies above the target and one below, bisect that bracket in
    log space: L0 against the coefficient has cliffs (one run at L0 172, the next at 0.2 on
    AntiBERTy), where secant steps overshoot. Before that, a secant step on log L0 against log
    coefficient from the two runs nearest the target, clamped to 16x (4x beyond the farthest run
    when the slope is flat or wrong, as gated's L0 was on SmolLM2: 46.9-48.1 for 2-16). ``None`` when the nearest run is within 10% of the target or
    the next value was already tried."""
    dist = {c: abs(math.log(v) - math.log(target)) for c, v in tried.items()}
    if min(dist.values()) < math.log(1.1):
        return None
    above = [c for c, v in tried.items() if v > target]
    below = [c for c, v in tried.items() if v < target]
    if above and below and max(above) < min(below):
        c = math.sqrt(max(above) * min(below))
    else:
        c1, c2 = sorted(tried, key=dist.get)[:2]
        slope = (math.log(tried[c2]) - math.log(tried[c1])) / (math.log(c2) - math.log(c1))
        if slope > -1e-3:  # flat or rising: go 4x past the farthest run on the side the target lies
            c = max(tried) * 4 if tried[c1] > target else min(tried) / 4
        else:
            step = (math.log(target) - math.log(tried[c1])) / slope
            c = c1 * math.exp(min(max(step, -math.log(16)), math.log(16)))
    c = float(f"{c:.4g}")
    return None if c in tried else c


def l1_search(store: Any, out: Path, base: dict[str, Any], starts: list[float], target: float,
              max_runs: int) -> tuple[float, dict[float, float]]:
    """Full-length runs at L1 coefficients from two starting values, then :func:`next_l1` until
    ``max_runs``; returns the coefficient whose held-out L0 is nearest the target (in log) and
    every tried coefficient's L0. Short calibration runs mislead here: an L1 dictionary's L0 keeps
    moving over the first passes, so only runs as long as the final one are compared."""
    from domains.protein.pipeline import train_layer

    tried: dict[float, float] = {}

    def trial(c: float) -> None:
        sae, _ = train_layer(store, out / f"l1_{c:.4g}", {**base, "l1_coefficient": c})
        tried[c] = max(_held_out_l0(sae, store), 1e-3)

    for c in starts:
        trial(float(f"{float(c):.4g}"))
    while len(tried) < max_runs and (c := next_l1(tried, target)) is not None:
        trial(c)
    return min(tried, key=lambda c: abs(math.log(tried[c]) - math.log(target))), tried


def train_matched(arch: str, store: Any, out: Path, cs: dict[str, Any],
                  leg: dict[str, Any] | None = None) -> tuple[Any, dict[str, Any]]:
    """One architecture at the target L0 (see the module docstring for how each is matched)."""
    import shutil

    from core.checkpoint import load_sae
    from domains.protein.pipeline import train_layer

    k = int(cs["target_l0"])
    base = {"architecture": arch, "expansion": int(cs["expansion"]), "batch_size": 1024, "epochs": int(cs["epochs"]),
            "lr": cs.get("lr"), "trainer": {"accelerator": "cpu", "logger": "csv", "enable_progress_bar": False},
            "dead_after_tokens": int(cs["dead_after_tokens"]), **(cs["architectures"].get(arch) or {})}
    how = "k"
    if arch in ("topk", "batchtopk", "matryoshka"):
        base["k"] = k
        if arch == "matryoshka":
            d = int(cs["expansion"]) * store.d
            base["matryoshka_prefixes"] = [d // 8, d // 4, d // 2, d]
    elif arch == "jumprelu":
        base.update({"k": k, "target_l0": float(k)})
        how = "topk warm-up then target_l0"
    else:
        starts = ((leg or {}).get("l1_start") or {}).get(arch) or cs["l1_calibration"][arch]
        best, tried = l1_search(store, out, base, list(starts), float(k), int(cs.get("l1_search_runs", 3)))
        how = f"L1 {best:.4g} of " + ", ".join(f"{c:.4g} (L0 {v:.1f})" for c, v in sorted(tried.items()))
        src = out / f"l1_{best:.4g}"
        if (out / "sae").exists():
            shutil.rmtree(out / "sae")
        shutil.copytree(src / "sae", out / "sae")
        summary = read_json(src / "training.json")
        write_json(out / "training.json", {**summary, "matched_by": how})
        return load_sae(out / "sae"), {"matched_by": how, "seconds": summary.get("seconds")}
    sae, summary = train_layer(store, out, base)
    return sae, {"matched_by": how, "seconds": summary.get("seconds")}


def enrich_for(sae: Any, store: Any, concepts: Path, out: Path) -> Path:
    from core.enrich.concepts import ConceptMatrix
    from core.enrich.run import run_enrichment

    table = out / "enrichment.tsv"
    if not table.exists():
        run_enrichment(sae, store, ConceptMatrix.load(concepts), None, out, neuron_baseline=False, report=False,
                       umap=False, min_positives=5, progress=False)
    return table


def run_leg(name: str, leg: dict[str, Any], cs: dict[str, Any], out: Path) -> dict[str, Any]:
    from core.stages import evaluate

    prep = smollm2_leg(leg, out) if name == "smollm2" else antiberty_leg(leg, out)
    store = prep["store"]
    folders, matched = [], {}
    for arch in cs["architectures"]:
        sae, info = train_matched(arch, store, out / arch, cs, leg)
        enrich_for(sae, store, prep["concepts"], out / arch / "enrichment")
        folders.append(str(out / arch / "sae"))
        matched[arch] = info
    ev = {"saes": folders, "names": list(cs["architectures"]),
          "sparse_probing": {"columns": prep["columns"], "labels": prep["labels"], "min_per_class": 10},
          "absorption": {"min_per_letter": 10},
          "spliced": {"n_samples": int(cs["spliced_samples"])},
          "autointerp": {"explainer": "concepts", "scorers": ["concept"], "n_features": int(cs["autointerp_features"]),
                         "enrichment": "{sae_dir}/../enrichment/enrichment.tsv", "concepts": str(prep["concepts"]),
                         "examples": {"min_examples": int(cs["min_examples"])}}}
    cfg = OmegaConf.create({"evals": prep["evals"], "evaluate": ev,
                            "data": {"root": str(store.root), "holdout_fraction": 0.05},
                            "model": OmegaConf.load(ROOT / "conf" / "model" / f"{prep['model']}.yaml")})
    res = evaluate.run(cfg, out / "eval")
    table = pd.read_csv(out / "eval" / "comparison.tsv", sep="\t", index_col="dictionary")
    table.insert(0, "matched_by", pd.Series({a: matched[a]["matched_by"] for a in matched}))
    return {"comparison": table.reset_index().to_dict("records"), "n_tokens": int(store.n_tokens),
            "hook": store.hook, "files": res["comparison"]}


def run(cfg: DictConfig, run_dir: Path) -> dict[str, Any]:
    cs = OmegaConf.to_container(cfg.case_study, resolve=True)
    run_dir = Path(run_dir)
    results: dict[str, Any] = {}
    for name, leg in cs["legs"].items():
        done = run_dir / name / "leg.json"
        results[name] = read_json(done) if done.exists() else run_leg(name, leg, cs, run_dir / name)
        write_json(done, results[name])
    md = []
    for name, r in results.items():
        table = pd.DataFrame(r["comparison"]).set_index("dictionary")
        md.append(f"### {name} ({r['hook']}, {r['n_tokens']:,} tokens)\n")
        from core.eval.compare import markdown

        md.append(markdown(table))
    write_text(run_dir / "results.md", "\n".join(md))
    print("\n".join(md))
    return {"legs": results}

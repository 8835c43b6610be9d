"""Scoring for the ``transcoders`` case study: reconstruction on held-out tokens, splicing into
the model on held-out text, and interpretability on token concepts.

All conditions of the splice are scored against one clean pass per batch
(``core.eval.spliced.score_conditions``); the first token of every text (SmolLM2's attention
sink, left out of the harvest) keeps its clean MLP output under every condition, ablations
included.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

L0_MATCHING = ("every dictionary uses the same sparsity rule ({architecture}; the CLT clt_{architecture}) with the same "
               "k = {k} active latents per token (per layer for the CLT) and {d_sae} latents per layer. {rule} The "
               "measured held-out L0 is reported beside it")
L0_RULE = {"topk": "TopK keeps exactly k per token at inference too (fewer only where a kept pre-activation is not "
                   "positive), so L0 is matched by construction.",
           "batchtopk": "BatchTopK keeps k per token on average while training; at inference each dictionary uses its "
                        "own learned threshold, so L0 is matched during training only."}
INTERP_MEASURE = ("mean over token concepts of the test F1 of the best feature (feature and threshold chosen "
                  "on the validation split; InterPLM's per-token precision / per-instance recall F1)")


def cached(path: Path, compute: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    from core.io import read_json, write_json

    if path.exists():
        return read_json(path)
    out = compute()
    write_json(path, out)
    return out


def reconstruction(cs: dict[str, Any], dicts: dict, stores: dict, layers: list[int],
                   datamodule: Callable) -> dict[tuple[int, str], dict[str, float]]:
    """FVU of the MLP output, L0 and dead fraction on the held-out split, per (layer, kind)."""
    from core.eval.metrics import evaluate_dictionary, evaluate_layers

    out: dict[tuple[int, str], dict[str, float]] = {}
    ins = [stores[f"blocks.{layer}.hook_mlp_in"] for layer in layers]
    outs = [stores[f"blocks.{layer}.hook_mlp_out"] for layer in layers]
    for layer, src, dst in zip(layers, ins, outs, strict=True):
        for kind in ("sae", "plt", "skip"):
            dm = datamodule(cs, [dst] if kind == "sae" else [src], None if kind == "sae" else [dst])
            out[layer, kind] = evaluate_dictionary(dicts[layer, kind], dm.val_dataloader())
    per_layer = evaluate_layers(dicts[layers[0], "clt"], datamodule(cs, ins, outs).val_dataloader())
    for layer, metrics in zip(layers, per_layer, strict=True):
        out[layer, "clt"] = metrics
    return out


def splice(adapter: Any, cs: dict[str, Any], dicts: dict, layers: list[int]) -> dict[str, Any]:
    """CE/KL on held-out text with each dictionary spliced in (one layer), every layer's at
    once (``all``), and zero- and mean-ablation of the same MLP outputs."""
    import torch

    from core.adapters.interventions import Ablate, Splice, TranscoderSplice
    from core.eval.scoring import mean_activations, score_conditions, text_batches
    from domains.text.corpus import docstring_samples

    sc = cs["splice"]
    samples = docstring_samples(int(sc["n_samples"]), start=int(cs["n_train_samples"]), max_chars=int(sc["max_chars"]))
    batches = text_batches(adapter, samples, int(sc["batch_tokens"]))
    sites = [(f"blocks.{layer}.hook_mlp_in", f"blocks.{layer}.hook_mlp_out") for layer in layers]
    means = mean_activations(adapter, [o for _, o in sites], batches, skip_first=True)
    kw = {"skip_first": True}
    clt = dicts[layers[0], "clt"]
    conds: dict[str, dict[str, Any]] = {}
    for i, (layer, site) in enumerate(zip(layers, sites, strict=True)):
        conds[f"sae_L{layer}"] = {site[1]: Splice(dicts[layer, "sae"], **kw)}
        conds[f"plt_L{layer}"] = TranscoderSplice(dicts[layer, "plt"], [site], **kw).interventions()
        conds[f"skip_L{layer}"] = TranscoderSplice(dicts[layer, "skip"], [site], **kw).interventions()
        conds[f"clt_L{layer}"] = TranscoderSplice(clt, sites, write=[i], **kw).interventions()
        conds[f"zero_L{layer}"] = {site[1]: Ablate(None, **kw)}
        conds[f"mean_L{layer}"] = {site[1]: Ablate(means[site[1]], **kw)}
    for kind in ("sae", "plt", "skip", "zero", "mean"):
        conds[f"{kind}_all"] = {h: fn for layer in layers for h, fn in conds[f"{kind}_L{layer}"].items()}
    conds["clt_all"] = TranscoderSplice(clt, sites, **kw).interventions()
    if sc.get("check_error_term", True):
        conds["clt_all_with_error"] = TranscoderSplice(clt, sites, error_term=True, **kw).interventions()
    with torch.no_grad():
        scores = score_conditions(adapter, batches, conds, seed=int(cs.get("seed", 0)))
    scores["n_samples"] = len(samples)
    return scores


def _recovered(scores: dict[str, Any], name: str, suffix: str) -> dict[str, float]:
    from core.eval.scoring import loss_recovered

    ce = scores["ce"]
    return {"ce_spliced": ce[name], "kl": scores["kl"][name],
            "ce_recovered": loss_recovered(ce[f"zero_{suffix}"], ce[name], ce["clean"]),
            "ce_recovered_mean": loss_recovered(ce[f"mean_{suffix}"], ce[name], ce["clean"])}


def interpretability(cs: dict[str, Any], dicts: dict, stores: dict, layers: list[int], adapter: Any,
                     run_dir: Path) -> dict[str, Any]:
    """Best-feature F1 on token concepts for every dictionary (and the MLP output's own
    dimensions, both signs, as the neuron baseline), one pass of the enrichment engine."""
    from core.enrich.engine import enrich
    from core.enrich.features import DictionaryFeatures, NeuronFeatures
    from core.enrich.run import assign_splits
    from domains.text.concepts import text_concepts

    ic = cs["interpretability"]
    first = stores[f"blocks.{layers[0]}.hook_mlp_in"]
    tok = adapter.tokenizer
    cm = text_concepts(first, lambda t: tok.decode([t]))
    cm.save(run_dir / "concepts")
    splits = assign_splits(cm.tokens["sample"].unique(), mode="all")
    sources: dict[str, Any] = {}
    clt = dicts[layers[0], "clt"]
    for i, layer in enumerate(layers):
        src, dst = stores[f"blocks.{layer}.hook_mlp_in"], stores[f"blocks.{layer}.hook_mlp_out"]
        sources[f"sae_L{layer}"] = DictionaryFeatures(dicts[layer, "sae"], dst)
        sources[f"plt_L{layer}"] = DictionaryFeatures(dicts[layer, "plt"], src)
        sources[f"skip_L{layer}"] = DictionaryFeatures(dicts[layer, "skip"], src)
        sources[f"clt_L{layer}"] = DictionaryFeatures(clt.layer_view(i), src)
        sources[f"neurons_L{layer}"] = NeuronFeatures(dst)
    result = enrich(sources, cm, splits, thresholds=tuple(ic["thresholds"]), min_positives=int(ic["min_positives"]),
                    progress=False)
    out = {name: {"mean_best_f1_test": result.summary[name]["mean_best_f1_test"],
                  "n_concepts_f1_gt_0.5": result.summary[name]["n_concepts_f1_gt_0.5"],
                  "per_concept": {c: round(v["f1_test"], 4) for c, v in result.summary[name]["per_concept"].items()}}
           for name in sources}
    out["n_concepts_scored"] = result.summary["n_concepts_scored"]
    return out


def entries(layers: list[int], recon: dict, scores: dict, interp: dict) -> list[dict[str, Any]]:
    """One row per (layer, kind): what results.json's ``transcoders`` key holds."""
    rows = []
    for layer in layers:
        for kind in ("sae", "plt", "skip", "clt"):
            m = recon[layer, kind]
            row = {"layer": layer, "kind": kind, "fvu": m["fvu"], "l0": m["l0"], "dead_frac": m["dead_frac"],
                   **_recovered(scores, f"{kind}_L{layer}", f"L{layer}"),
                   "interp_f1": interp[f"{kind}_L{layer}"]["mean_best_f1_test"],
                   "neuron_f1": interp[f"neurons_L{layer}"]["mean_best_f1_test"]}
            rows.append(row)
    return rows


def all_layers(scores: dict[str, Any], layers: list[int]) -> list[dict[str, Any]]:
    """Every layer spliced at once, per kind (the CLT's is its replacement model)."""
    rows = [{"kind": kind, "layers": layers, **_recovered(scores, f"{kind}_all", "all")}
            for kind in ("sae", "plt", "skip", "clt")]
    if "clt_all_with_error" in scores["ce"]:
        rows.append({"kind": "clt (with error term: must equal clean)", "layers": layers,
                     **_recovered(scores, "clt_all_with_error", "all")})
    return rows

"""From a dictionary over a store to scored explanations: sample, explain, score, control.

Shared by ``stage=explain`` and the ``autointerp`` evaluation, so both run the same
protocol. ``opts`` is the ``explain`` option dict (``core.stages.explain.DEFAULTS``).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from core.errors import ConfigError
from core.explain.examples import ExampleSampler, SamplerConfig, decoder_neighbours
from core.explain.records import ExampleSet
from core.explain.run import derangement, explain_and_score, read_table
from core.io import atomic_path

log = logging.getLogger(__name__)

JUDGES = ("detection", "fuzzing")
VALID_SCORERS = (*JUDGES, "concept")
EXPLAINERS = ("concepts", "llm")


def _check(opts: dict[str, Any]) -> None:
    if opts["explainer"] not in EXPLAINERS:
        raise ConfigError(f"unknown explainer {opts['explainer']!r}", fix=f"use explain.explainer=<one of {list(EXPLAINERS)}>")
    bad = [s for s in opts["scorers"] if s not in VALID_SCORERS]
    if bad:
        raise ConfigError(f"unknown scorers {bad}", fix=f"use explain.scorers from {list(VALID_SCORERS)}")
    if opts["explainer"] == "concepts" and not opts.get("enrichment"):
        raise ConfigError("the concepts explainer needs an enrichment table",
                          fix="set explain.enrichment=<enrichment.tsv of stage=enrich>, or explain.explainer=llm")
    if "concept" in opts["scorers"] and (opts["explainer"] != "concepts" or not opts.get("concepts")):
        raise ConfigError("the concept scorer scores concept explanations against the concept matrix",
                          fix="use it with explain.explainer=concepts and explain.concepts=<concept matrix prefix>")


def sample(source: Any, sae: Any, opts: dict[str, Any], out: Path) -> ExampleSet:
    cfg = SamplerConfig(**(opts.get("examples") or {}))
    nbrs = decoder_neighbours(sae.W_dec, cfg.n_neighbours) if cfg.n_hard and hasattr(sae, "W_dec") else None
    ExampleSampler(source, out / "examples", cfg, neighbours=nbrs, progress=bool(opts.get("progress", True))).run()
    return ExampleSet(out / "examples")


def choose_features(examples: ExampleSet, opts: dict[str, Any], allowed: set[int] | None = None) -> list[int]:
    if opts.get("features") is not None:
        return [int(f) for f in opts["features"]]
    pool = [int(f) for f in examples.features if allowed is None or int(f) in allowed]
    n = min(int(opts["n_features"]), len(pool))
    rng = np.random.default_rng(int(opts["seed"]))
    return sorted(int(f) for f in rng.choice(pool, n, replace=False)) if n else []


def explain_dictionary(source: Any, sae: Any, opts: dict[str, Any], out: Path, text: Any) -> dict[str, Any]:
    """Run the whole protocol; returns the summary (also the stage's results)."""
    from core.explain.clients import build_client
    from core.explain.explainers import ConceptExplainer, LLMExplainer
    from core.explain.scorers import SCORERS

    _check(opts)
    out = Path(out)
    examples = sample(source, sae, opts, out)
    client = None
    if opts["explainer"] == "concepts":
        explainer = ConceptExplainer.from_file(opts["enrichment"])
        allowed = set(explainer.best)
    else:
        client = build_client(opts["llm"])
        explainer = LLMExplainer(client, text, n_examples=int(opts["n_explain_examples"]))
        allowed = None
    features = choose_features(examples, opts, allowed)
    judges = {}
    if any(s in JUDGES for s in opts["scorers"]):
        judge_client = build_client({**opts["llm"], **opts["scorer_llm"]}) if opts.get("scorer_llm") else \
            (client or build_client(opts["llm"]))
        judges = {s: SCORERS[s](judge_client, text, seed=int(opts["seed"]), max_items=opts.get("max_items"))
                  for s in opts["scorers"] if s in JUDGES}
    summary = explain_and_score(examples, explainer, judges, out, features=features,
                                shuffled_control=bool(opts["shuffled_control"]), batch=int(opts["batch"]),
                                seed=int(opts["seed"]), progress=bool(opts.get("progress", True)))
    summary["n_features_chosen"] = len(features)
    if opts["explainer"] == "concepts" and allowed is not None:
        summary["n_sampled_without_concept"] = int(sum(1 for f in examples.features if int(f) not in allowed))
    if "concept" in opts["scorers"]:
        summary.update(concept_summary(source, explainer, features, opts, out))
    attach_scores(out)
    summary["examples"] = {k: examples.state.get(k) for k in ("n_tokens", "n_eligible", "n_skipped_too_few",
                                                              "n_dead", "n_windows")}
    return summary


def concept_summary(source: Any, explainer: Any, features: list[int], opts: dict[str, Any], out: Path) -> dict:
    """Model-free concept AUROC on the test split for true and shuffled concept explanations."""
    from core.enrich.concepts import ConceptMatrix
    from core.enrich.run import assign_splits
    from core.explain.concept_scorer import concept_aurocs

    cm = ConceptMatrix.load(opts["concepts"])
    splits = assign_splits(cm.tokens["sample"].unique(), mode=opts["split_mode"],
                           valid_fraction=float(opts["valid_fraction"]), seed=int(opts["seed"]))
    test = np.asarray([s for s, v in splits.items() if v == "test"], dtype=np.int64)
    feats = [f for f in features if explainer.best.get(f)]
    perm = derangement(len(feats), int(opts["seed"]))
    pairs = [(f, explainer.best[f][0]) for f in feats]
    shuffled = [(f, explainer.best[feats[perm[i]]][0]) for i, f in enumerate(feats)]
    rows = concept_aurocs(source, cm, pairs + shuffled, keep=lambda s: np.isin(s, test))
    for i, r in enumerate(rows):
        r["control"] = "own" if i < len(pairs) else "shuffled"
    df = pd.DataFrame(rows)
    with atomic_path(out / "concept_scores.tsv") as tmp:
        df.to_csv(tmp, sep="\t", index=False, float_format="%.6g")
    res = {}
    for control, g in df.groupby("control") if len(df) else []:
        v = pd.to_numeric(g["auroc"], errors="coerce").dropna()
        res[f"concept_{control}"] = {"n_features": int(len(g)), "auroc": float(v.mean()) if len(v) else None,
                                     "auroc_sd": float(v.std(ddof=1)) if len(v) > 1 else None}
    return res


def attach_scores(out: Path) -> None:
    """Copy each feature's own scores into ``explanations.tsv`` (columns ``detection``, ``fuzz``,
    ``concept_auroc``), the per-feature label that ``annotate_sequences`` reads back."""
    path = out / "explanations.tsv"
    table = read_table(path)
    if table is None:
        return
    table = table.drop(columns=[c for c in ("detection", "fuzz", "concept_auroc") if c in table.columns])
    own = []
    s = read_table(out / "scores.tsv")
    if s is not None:
        s = s[s["control"] == "own"].pivot_table(index="feature", columns="scorer", values="balanced_accuracy")
        own.append(s.rename(columns={"detection": "detection", "fuzzing": "fuzz"}))
    c = read_table(out / "concept_scores.tsv")
    if c is not None:
        own.append(c[c["control"] == "own"].set_index("feature")[["auroc"]].rename(columns={"auroc": "concept_auroc"}))
    for part in own:
        table = table.join(part, on="feature")
    with atomic_path(path) as tmp:
        table.to_csv(tmp, sep="\t", index=False, float_format="%.6g")

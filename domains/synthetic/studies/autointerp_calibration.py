"""The ``autointerp_calibration`` case study: do the explanation scorers measure anything?

Features planted on a toy corpus (``domains.synthetic.planted_text``: feature f fires exactly
on the words of class f) have known true explanations. Each scorer scores every feature with
its true explanation and with another feature's (a derangement), on the same windows:

- the model-free concept scorer (AUROC of the activation for the class's tokens, test half);
- detection and fuzzing judged by the local default model (SmolLM2-135M-Instruct), balanced
  accuracy of its answers and AUROC of log P(yes) - log P(no);
- optionally the same model's own explanations, scored by detection.

A scorer passes when true explanations land clearly above shuffled ones and the shuffled ones
inside the chance band (0.5 +- 2 standard errors of the mean over features).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from omegaconf import DictConfig, OmegaConf

log = logging.getLogger(__name__)


class TruthExplainer:
    """Gives each planted feature its known explanation."""

    name = "truth"

    def __init__(self, truths: list[str]) -> None:
        self.truths = truths

    def explain(self, records):
        from core.explain.explainers import Explanation

        return [Explanation(r.feature, self.truths[r.feature], self.name) for r in records]


def chance_band(metric: str, n_per_class: int, n_features: int) -> float:
    """Two standard errors of the mean of ``n_features`` null scores, each on n vs n items."""
    m = max(n_per_class, 1)
    sd = np.sqrt(0.125 / m) if metric == "balanced_accuracy" else np.sqrt((2 * m + 1) / (12 * m * m))
    return float(2 * sd / np.sqrt(max(n_features, 1)))


def _rows(scores: pd.DataFrame, explanation: dict[str, str], n_per_class: int) -> list[dict[str, Any]]:
    rows = []
    for (scorer, control), g in scores.groupby(["scorer", "control"]):
        for metric in ("balanced_accuracy", "auroc"):
            v = pd.to_numeric(g[metric], errors="coerce").dropna()
            if not len(v):
                continue
            rows.append({"scorer": scorer, "explanation": explanation[control], "metric": metric,
                         "mean": round(float(v.mean()), 3), "sd": round(float(v.std(ddof=1)), 3) if len(v) > 1 else None,
                         "n_features": int(len(v)),
                         "chance_band": round(chance_band(metric, n_per_class, len(v)), 3)})
    return rows


def run(cfg: DictConfig, run_dir: Path) -> dict[str, Any]:
    from core.enrich.features import ArrayFeatures
    from core.explain.clients import build_client
    from core.explain.concept_scorer import concept_aurocs
    from core.explain.examples import ExampleSampler, SamplerConfig
    from core.explain.explainers import LLMExplainer
    from core.explain.records import ExampleSet
    from core.explain.run import derangement, explain_and_score
    from core.explain.scorers import DetectionScorer, FuzzScorer
    from core.explain.text import TokenText
    from core.io import write_text
    from domains.synthetic.planted_text import build_corpus

    cs = OmegaConf.to_container(cfg.case_study, resolve=True)
    run_dir = Path(run_dir)
    client = build_client({"backend": "local", "model": cs["model"]})
    adapter = client.adapter
    corpus = build_corpus(lambda t: adapter.encode(t, add_special_tokens=False), **cs["corpus"])
    src = ArrayFeatures(corpus.sample, corpus.position, corpus.activations(), token=corpus.token)
    ExampleSampler(src, run_dir / "examples", SamplerConfig(**cs["examples"]), progress=True).run()
    examples = ExampleSet(run_dir / "examples")
    text = TokenText.from_tokenizer(adapter.tokenizer)
    n_f = len(corpus.classes)
    perm = derangement(n_f, int(cs["seed"]))
    test = np.unique(corpus.sample)[1::2]
    keep = lambda s: np.isin(s, test)  # noqa: E731
    cm = corpus.concept_matrix()
    own = concept_aurocs(src, cm, [(f, corpus.classes[f]) for f in range(n_f)], keep=keep)
    shuf = concept_aurocs(src, cm, [(f, corpus.classes[perm[f]]) for f in range(n_f)], keep=keep)
    concept = pd.DataFrame([{**r, "control": "own"} for r in own] + [{**r, "control": "shuffled"} for r in shuf])
    concept.to_csv(run_dir / "concept_scores.tsv", sep="\t", index=False)
    rows = []
    for control, g in concept.groupby("control"):
        v = g["auroc"].astype(float)
        rows.append({"scorer": "concept (model-free)", "explanation": "true" if control == "own" else "shuffled",
                     "metric": "auroc", "mean": round(float(v.mean()), 3), "sd": round(float(v.std(ddof=1)), 3),
                     "n_features": int(len(v)), "chance_band": round(chance_band("auroc", int(g["n_pos"].min()), len(v)), 3)})
    max_items = int(cs["max_items"])
    judges = {"detection": DetectionScorer(client, text, max_items=max_items, seed=int(cs["seed"])),
              "fuzzing": FuzzScorer(client, text, max_items=max_items, seed=int(cs["seed"]))}
    truth = explain_and_score(examples, TruthExplainer(corpus.truths), judges, run_dir / "truth",
                              shuffled_control=True, seed=int(cs["seed"]))
    scores = pd.read_csv(run_dir / "truth" / "scores.tsv", sep="\t")
    rows += _rows(scores, {"own": "true", "shuffled": "shuffled"}, max_items // 2)
    llm = None
    if cs.get("llm_explainer"):
        explainer = LLMExplainer(client, text, n_examples=int(cs["n_explain_examples"]))
        llm = explain_and_score(examples, explainer, {"detection": judges["detection"]}, run_dir / "llm",
                                shuffled_control=True, seed=int(cs["seed"]))
        scores = pd.read_csv(run_dir / "llm" / "scores.tsv", sep="\t")
        rows += _rows(scores, {"own": "SmolLM2's own", "shuffled": "SmolLM2's own, shuffled"}, max_items // 2)
    table = pd.DataFrame(rows)
    md = "| scorer | explanation | metric | mean | sd | features | chance band (+-) |\n|---|---|---|---|---|---|---|\n"
    md += "".join(f"| {r.scorer} | {r.explanation} | {r.metric} | {r['mean']} | {r.sd} | {r.n_features} | "
                  f"{r.chance_band} |\n" for _, r in table.iterrows())
    write_text(run_dir / "results.md", md)
    print(md)
    out: dict[str, Any] = {"table": rows, "truth": truth, "llm": llm, "n_tokens": int(len(corpus.token)),
                           "classes": corpus.classes}
    if llm is not None:
        out["llm_explanations"] = pd.read_csv(run_dir / "llm" / "explanations.tsv", sep="\t")[
            ["feature", "explanation"]].to_dict("records")
    return out

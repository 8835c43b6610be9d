"""The ``autointerp`` evaluation: the explain protocol (``core.explain``) on a sample of features,
reduced to its means: judge scores (detection, fuzzing) and the model-free concept AUROC,
each beside the shuffled-explanation control that must sit at chance.

Paths in the options may name the dictionary being evaluated: ``{sae_dir}`` (its folder) and
``{name}`` (its label in the comparison), e.g. ``enrichment: "{sae_dir}/../enrich/enrichment.tsv"``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from core.eval.base import Eval, EvalContext, EvalResult


@dataclass
class AutointerpConfig:
    explainer: str = "llm"
    scorers: list[str] = field(default_factory=lambda: ["detection"])
    n_features: int = 20
    enrichment: str | None = None
    concepts: str | None = None
    llm: dict[str, Any] = field(default_factory=dict)
    scorer_llm: dict[str, Any] | None = None
    examples: dict[str, Any] = field(default_factory=dict)
    shuffled_control: bool = True
    max_items: int | None = None
    n_explain_examples: int = 40
    seed: int = 0


@dataclass
class AutointerpResult(EvalResult):
    explainer: str
    n_features: int
    n_skipped_too_few: int
    scores: dict[str, Any]

    def headline(self) -> dict[str, float | None]:
        out: dict[str, float | None] = {}
        for key, v in self.scores.items():
            if isinstance(v, dict):
                metric = "auroc" if key.startswith("concept") else "balanced_accuracy"
                out[key] = v.get(metric)
        return out


class AutointerpEval(Eval):
    name = "autointerp"
    Config = AutointerpConfig

    def run(self, ctx: EvalContext) -> AutointerpResult:
        from core.enrich.features import DictionaryFeatures
        from core.explain.pipeline import explain_dictionary
        from core.explain.text import TokenText
        from core.stages.explain import DEFAULTS

        opts = {**DEFAULTS, **dataclasses.asdict(self.config), "progress": False}
        opts["llm"] = {**DEFAULTS["llm"], **self.config.llm}
        for key in ("enrichment", "concepts"):
            if opts[key]:
                opts[key] = str(opts[key]).format(sae_dir=ctx.sae_dir, name=ctx.out_dir.name)
        text = ctx.shared.get("token_text") or TokenText(ctx.store.meta.get("vocab"))
        source = DictionaryFeatures(ctx.sae, ctx.store)
        summary = explain_dictionary(source, ctx.sae, opts, ctx.out_dir / "autointerp", text)
        scores = {k: v for k, v in summary.items() if isinstance(v, dict) and k != "examples"}
        return AutointerpResult(self.config.explainer, int(summary.get("n_features_chosen", 0)),
                                int(summary.get("n_skipped_too_few", 0)), scores)

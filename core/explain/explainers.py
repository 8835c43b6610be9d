"""Explainers: one interface, an explanation per feature from its sampled examples.

- ``ConceptExplainer``: the feature's best concept(s) in an enrichment table
  (``enrichment.tsv`` of stage=enrich, any domain: Swiss-Prot features, IMGT regions, word
  lists), chosen by F1 on the validation split, so the test split stays free for scoring;
- ``LLMExplainer``: a prompt built from the training windows, activating tokens marked
  ``<<like this>>``, sent to a ``ChatClient`` (local model or HTTP endpoint).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import pandas as pd

from core.errors import DataError
from core.explain.clients import ChatClient, EndpointError
from core.explain.records import FeatureRecord
from core.explain.text import TokenText, render


@dataclass
class Explanation:
    feature: int
    text: str
    source: str
    concepts: list[str] = field(default_factory=list)
    error: str | None = None


class Explainer(Protocol):
    name: str

    def explain(self, records: list[FeatureRecord]) -> list[Explanation]: ...


class ConceptExplainer:
    """Names each feature by the concept(s) it scores best on, from the enrichment table."""

    name = "concepts"

    def __init__(self, table: pd.DataFrame, *, basis: str = "sae", split: str = "valid", top: int = 1) -> None:
        need = {"basis", "split", "feature", "concept", "f1"}
        if not need <= set(table.columns):
            raise DataError(f"the enrichment table lacks the columns {sorted(need - set(table.columns))}",
                            fix="use the enrichment.tsv written by stage=enrich")
        sel = table[(table["basis"] == basis) & (table["split"] == split)]
        sel = sel.sort_values(["feature", "f1"], ascending=[True, False], kind="stable")
        self.best = {int(f): g["concept"].astype(str).tolist()[:top] for f, g in sel.groupby("feature")}
        self.f1 = {int(f): float(g["f1"].max()) for f, g in sel.groupby("feature")}

    @classmethod
    def from_file(cls, path: str | Path, **kw) -> ConceptExplainer:
        path = Path(path)
        if not path.exists():
            raise DataError("enrichment table not found", path=str(path),
                            fix="run stage=enrich first, or set explain.enrichment to its enrichment.tsv")
        return cls(pd.read_csv(path, sep="\t"), **kw)

    def explain(self, records: list[FeatureRecord]) -> list[Explanation]:
        out = []
        for r in records:
            names = self.best.get(r.feature, [])
            out.append(Explanation(r.feature, " or ".join(names), self.name, names,
                                   None if names else "the feature is in no concept's top list"))
        return out


EXPLAIN_SYSTEM = ("You explain what a hidden feature of a neural network responds to. You see text excerpts "
                  "where the feature is active on the tokens marked <<like this>>.")
EXPLAIN_ASK = ("Say in one short phrase (at most ten words) what the marked tokens have in common. "
               "Answer with the phrase only.")


def explanation_prompt(record: FeatureRecord, text: TokenText, n_examples: int) -> list[dict[str, str]]:
    shown = record.train[:n_examples]
    lines = [f"Example {i + 1}: {render(text.tokens(w.tokens), w.active)}" for i, w in enumerate(shown)]
    return [{"role": "system", "content": EXPLAIN_SYSTEM},
            {"role": "user", "content": "\n".join(lines) + "\n\n" + EXPLAIN_ASK}]


def clean_explanation(answer: str) -> str:
    """First non-empty line, without a leading label or quotes."""
    line = next((ln.strip() for ln in answer.splitlines() if ln.strip()), "")
    for prefix in ("explanation:", "answer:", "phrase:"):
        if line.lower().startswith(prefix):
            line = line[len(prefix):].strip()
    return line.strip("\"'` ")[:200]


class LLMExplainer:
    """Asks a chat model for a one-phrase explanation of each feature's training windows."""

    name = "llm"

    def __init__(self, client: ChatClient, text: TokenText, *, n_examples: int = 40, max_tokens: int = 32) -> None:
        self.client, self.text, self.n_examples, self.max_tokens = client, text, int(n_examples), int(max_tokens)

    def explain(self, records: list[FeatureRecord]) -> list[Explanation]:
        prompts = [explanation_prompt(r, self.text, self.n_examples) for r in records]
        answers = self.client.complete(prompts, max_tokens=self.max_tokens)
        out = []
        for r, a in zip(records, answers, strict=True):
            if isinstance(a, EndpointError):
                out.append(Explanation(r.feature, "", f"llm:{self.client.name}", error=str(a)))
                continue
            phrase = clean_explanation(a.text)
            out.append(Explanation(r.feature, phrase, f"llm:{self.client.name}",
                                   error=None if phrase else f"empty or unusable answer {a.text[:80]!r}"))
        return out

"""Judge-free behaviour under knowledge conflict: does a greedy answer follow the context or memory?

The behaviour function generates (greedy, stop at the first newline) with an optional
intervention at one hook, labels each answer context / memory / neither by normalised
exact match, and scores fluency as the unsteered model's perplexity of the answers.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

from core.errors import ConfigError
from core.samples import Sample
from core.steering import fluency
from domains.knowledge_conflict.answers import classify_answer, first_answer_line


def generate_answers(adapter: Any, samples: Sequence[Sample], *, hook: str | None = None, intervention: Any = None,
                     max_new_tokens: int = 8) -> list[str]:
    """Greedy answers (first line), with ``intervention`` applied at ``hook`` when given."""
    if intervention is None:
        gens = adapter.generate(list(samples), max_new_tokens=max_new_tokens, stop=["\n"])
    else:
        with adapter.intervene(hook, intervention):
            gens = adapter.generate(list(samples), max_new_tokens=max_new_tokens, stop=["\n"])
    return [first_answer_line(g) for g in gens]


def label_answers(samples: Sequence[Sample], answers: Sequence[str]) -> list[str]:
    return [classify_answer(a, s.meta["context_answers"], s.meta["memory_answers"])
            for s, a in zip(samples, answers, strict=True)]


def rates(labels: Sequence[str]) -> dict[str, float]:
    n = max(len(labels), 1)
    c = Counter(labels)
    return {"context_rate": c["context"] / n, "memory_rate": c["memory"] / n, "neither_rate": c["neither"] / n}


class ConflictBehaviour:
    """``behaviour_fn`` for the steering runner: the rate of the wanted source (context or memory)."""

    def __init__(self, adapter: Any, hook: str, target: str, *, max_new_tokens: int = 8,
                 score_fluency: bool = True) -> None:
        if target not in ("context", "memory"):
            raise ConfigError(f"steering target must be 'context' or 'memory', got {target!r}")
        self.adapter, self.hook, self.target = adapter, hook, target
        self.max_new_tokens, self.score_fluency = max_new_tokens, score_fluency
        self.log: list[dict[str, Any]] = []

    def __call__(self, intervention: Any, samples: Sequence[Sample]) -> dict[str, Any]:
        answers = generate_answers(self.adapter, samples, hook=self.hook, intervention=intervention,
                                   max_new_tokens=self.max_new_tokens)
        labels = label_answers(samples, answers)
        r = rates(labels)
        out: dict[str, Any] = {"behaviour": r[f"{self.target}_rate"], **r}
        if self.score_fluency:
            out["fluency"] = fluency(self.adapter, [s.text for s in samples], [" " + a if a else "" for a in answers])
        self.log.extend({"id": s.id, "steered": intervention is not None,
                         "strength": getattr(intervention, "strength", None), "answer": a, "label": lab}
                        for s, a, lab in zip(samples, answers, labels, strict=True))
        return out

"""Scorers: how well an explanation lets a judge model predict where a feature fires.

After delphi's protocol (Paulo et al. 2024, "Automatically interpreting millions of
features in large language models"):

- detection: a balanced set of activating test windows and non-activating windows (hard
  negatives from decoder neighbours, then random ones); the judge says for each whether the
  explanation applies;
- fuzzing: activating windows with their truly active tokens marked against non-activating
  windows with as many tokens marked at random; the judge says whether the marks fit.

Scores: balanced accuracy of the judge's answers and, where log-probabilities of the answer
exist (always for the local model, when the endpoint returns them for HTTP), the AUROC of
``log P(yes) - log P(no)``. Windows are judged one per prompt by default (delphi shows 5 per
prompt; the per-window log-probability needs one). Prompts that fail (endpoint errors) or
whose answer is not a yes/no are counted and left out; the rest are scored.
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from core.explain.clients import NO, YES, ChatClient, EndpointError, yes_no_score
from core.explain.records import FeatureRecord, Window
from core.explain.text import TokenText, render


@dataclass
class ScoreResult:
    """One scorer's verdict on one explanation of one feature."""

    feature: int
    scorer: str
    n_items: int
    n_scored: int
    balanced_accuracy: float | None
    auroc: float | None
    n_failed: int = 0
    n_unparsed: int = 0
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def parse_yes_no(answer: str) -> int | None:
    """1 / 0 from an answer that starts with yes/no/1/0/true/false (any case), else None."""
    m = re.match(r"\W*([A-Za-z]+|[01])", answer or "")
    if not m:
        return None
    word = m.group(1).lower()
    return 1 if word in YES else 0 if word in NO else None


def balanced_accuracy(labels: np.ndarray, preds: np.ndarray) -> float | None:
    from sklearn.metrics import balanced_accuracy_score

    if len(labels) == 0 or len(set(labels.tolist())) < 2:
        return None
    return float(balanced_accuracy_score(labels, preds))


def auroc(labels: np.ndarray, scores: np.ndarray) -> float | None:
    from sklearn.metrics import roc_auc_score

    if len(labels) == 0 or len(set(labels.tolist())) < 2:
        return None
    return float(roc_auc_score(labels, scores))


DETECT_SYSTEM = "You check whether a description of a hidden neural-network feature fits a text excerpt."
FUZZ_SYSTEM = ("You check whether the tokens marked <<like this>> in a text excerpt are the ones a description "
               "of a hidden neural-network feature refers to.")


class JudgeScorer(ABC):
    """Shared machinery: build labelled prompts, ask the judge, score the answers."""

    name = "judge"
    system = DETECT_SYSTEM

    def __init__(self, client: ChatClient, text: TokenText, *, seed: int = 0, max_items: int | None = None) -> None:
        self.client, self.text, self.seed, self.max_items = client, text, int(seed), max_items

    @abstractmethod
    def items(self, record: FeatureRecord) -> list[tuple[str, int]]:
        """The (excerpt, label) pairs this scorer asks the judge about for one feature."""

    def question(self, explanation: str, excerpt: str) -> list[dict[str, str]]:
        return [{"role": "system", "content": self.system},
                {"role": "user", "content": f"Description: {explanation}\nExcerpt: {excerpt}\n\n"
                                            "Does the description fit the excerpt? Answer Yes or No."}]

    def score(self, record: FeatureRecord, explanation: str) -> ScoreResult:
        items = self.items(record)
        if not items:
            return ScoreResult(record.feature, self.name, 0, 0, None, None, error="no examples to score")
        answers = self.client.complete([self.question(explanation, ex) for ex, _ in items],
                                       max_tokens=4, logprobs=True)
        labels, preds, scores, failed, unparsed, errors = [], [], [], 0, 0, []
        for (_, label), a in zip(items, answers, strict=True):
            if isinstance(a, EndpointError):
                failed += 1
                errors.append(str(a).splitlines()[0])
                continue
            pred = parse_yes_no(a.text)
            s = yes_no_score(a.top_logprobs)
            if pred is None and s is None:
                unparsed += 1
                continue
            labels.append(label)
            preds.append(pred if pred is not None else int(s > 0))
            scores.append(s)
        y, p = np.asarray(labels), np.asarray(preds)
        have = [i for i, s in enumerate(scores) if s is not None]
        auc = auroc(y[have], np.asarray([scores[i] for i in have])) if len(have) == len(scores) and have else None
        return ScoreResult(record.feature, self.name, len(items), len(labels), balanced_accuracy(y, p), auc,
                           failed, unparsed, errors[0] if errors else None)

    def _excerpt(self, w: Window, marked: np.ndarray | None = None) -> str:
        return render(self.text.tokens(w.tokens), marked)

    def _balanced(self, pos: list[Any], neg: list[Any]) -> tuple[list[Any], list[Any]]:
        n = min(len(pos), len(neg))
        if self.max_items:
            n = min(n, self.max_items // 2)
        return pos[:n], neg[:n]


class DetectionScorer(JudgeScorer):
    """Does the explanation pick out activating windows among non-activating ones?"""

    name = "detection"

    def items(self, record: FeatureRecord) -> list[tuple[str, int]]:
        pos, neg = self._balanced(record.test, record.negatives)
        out = [(self._excerpt(w), 1) for w in pos] + [(self._excerpt(w), 0) for w in neg]
        order = np.random.default_rng([self.seed, record.feature]).permutation(len(out))
        return [out[i] for i in order]


class FuzzScorer(JudgeScorer):
    """Are the marked tokens the ones the explanation is about?"""

    name = "fuzzing"
    system = FUZZ_SYSTEM

    def question(self, explanation: str, excerpt: str) -> list[dict[str, str]]:
        return [{"role": "system", "content": self.system},
                {"role": "user", "content": f"Description: {explanation}\nExcerpt: {excerpt}\n\n"
                                            "Are the marked tokens what the description refers to? "
                                            "Answer Yes or No."}]

    def items(self, record: FeatureRecord) -> list[tuple[str, int]]:
        pos, neg = self._balanced(record.test, record.negatives)
        rng = np.random.default_rng([self.seed, 1, record.feature])
        out = [(self._excerpt(w, w.active), 1) for w in pos]
        for w, ref in zip(neg, pos, strict=False):
            k = max(1, min(int(ref.active.sum()), len(w.tokens)))
            marks = np.zeros(len(w.tokens), dtype=bool)
            marks[rng.choice(len(w.tokens), k, replace=False)] = True
            out.append((self._excerpt(w, marks), 0))
        order = rng.permutation(len(out))
        return [out[i] for i in order]


SCORERS = {"detection": DetectionScorer, "fuzzing": FuzzScorer}

"""Answer matching for open-domain QA: SQuAD-style normalisation and exact match against alias lists.

A generation is labelled by which source it follows: the context answer (what the prompt's
passage says), the memory answer (what the model knows closed-book), or neither. Under a
knowledge conflict the two differ; without one they coincide and ``context`` wins.
"""

from __future__ import annotations

import re
import string
import unicodedata
from collections.abc import Iterable

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCT = set(string.punctuation) | {"\u2018", "\u2019", "\u201c", "\u201d", "\u2013", "\u2014"}


def normalize_answer(text: str) -> str:
    """Lower case, strip accents, punctuation, articles and extra whitespace (SQuAD's rule, plus accents)."""
    text = unicodedata.normalize("NFKD", str(text))
    text = "".join(ch for ch in text if not unicodedata.combining(ch)).lower()
    text = "".join(" " if ch in _PUNCT else ch for ch in text)
    text = _ARTICLES.sub(" ", text)
    return " ".join(text.split())


def first_answer_line(generation: str) -> str:
    """The answer part of a generation: up to the first blank line or newline."""
    return str(generation).strip().split("\n", 1)[0].strip()


def exact_match(prediction: str, aliases: Iterable[str]) -> bool:
    """True when the normalised first line of ``prediction`` equals any normalised alias."""
    pred = normalize_answer(first_answer_line(prediction))
    return bool(pred) and any(pred == normalize_answer(a) for a in aliases if str(a).strip())


def classify_answer(prediction: str, context_answers: Iterable[str], memory_answers: Iterable[str]) -> str:
    """``"context"``, ``"memory"`` or ``"neither"`` (context first when both match)."""
    if exact_match(prediction, context_answers):
        return "context"
    if exact_match(prediction, memory_answers):
        return "memory"
    return "neither"

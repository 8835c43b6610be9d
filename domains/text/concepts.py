"""Token-level concepts of text, built from an activation store's own (sample, position, token)
rows, so the concept matrix lines up with the activations by construction.

Per token (``kind="token"``): lexical classes of the token's own string (a word start, a word
piece, a capitalised word, a digit, punctuation and some single marks, a function word, an
identifier piece with an underscore). Per span (``kind="instance"``, one instance per span):
tokens inside parentheses and inside backquoted code (docstrings quote code as ``x``), and
the first token of a sentence. Which token carries which class is decided by the tokenizer's
own strings, never by a model: a feature that tracks a class has learned it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd

from core.enrich.concepts import ConceptMatrix

FUNCTION_WORDS = frozenset("the a an of to in is and or for be that this it as with by on if not are from".split())

TOKEN_CLASSES: dict[str, Callable[[str], bool]] = {
    "word_start": lambda t: t.startswith(" ") and t[1:2].isalpha(),
    "word_piece": lambda t: t[:1].isalpha(),
    "capitalised": lambda t: t.strip()[:1].isupper(),
    "digit": lambda t: any(c.isdigit() for c in t),
    "punctuation": lambda t: bool(t.strip()) and not any(c.isalnum() for c in t),
    "period": lambda t: t.strip() == ".",
    "comma": lambda t: t.strip() == ",",
    "function_word": lambda t: t.strip().lower() in FUNCTION_WORDS,
    "underscore": lambda t: "_" in t,
}
SPAN_CONCEPTS = ("in_parentheses", "in_backquotes", "sentence_start")


def _spans(texts: list[str]) -> dict[str, list[tuple[int, int]]]:
    """Half-open index ranges of each span concept in one sample's token strings."""
    out: dict[str, list[tuple[int, int]]] = {name: [] for name in SPAN_CONCEPTS}
    depth, opened, code = 0, 0, None
    for i, t in enumerate(texts):
        closes, opens = t.count(")"), t.count("(")
        if depth and closes:
            depth = max(0, depth - closes)
            if depth == 0 and i > opened + 1:
                out["in_parentheses"].append((opened + 1, i))
        if opens:
            opened = i if depth == 0 else opened
            depth += opens
        if "`" in t:
            if code is None:
                code = i
            else:
                if i > code + 1:
                    out["in_backquotes"].append((code + 1, i))
                code = None
        if i and texts[i - 1].strip() in (".", "?", "!") and t[:2].strip()[:1].isupper():
            out["sentence_start"].append((i, i + 1))
    return out


def text_concepts(store: Any, decode: Callable[[int], str]) -> ConceptMatrix:
    """The concept matrix of every token row of ``store`` (``decode``: token id -> its string)."""
    cols = store.load(("sample", "position", "token"))
    sample, position, token = (cols[c].numpy() for c in ("sample", "position", "token"))
    order = np.lexsort((position, sample))
    tokens = pd.DataFrame({"sample": sample, "position": position})
    strings = {int(t): decode(int(t)) for t in np.unique(token)}
    names = [*TOKEN_CLASSES, *SPAN_CONCEPTS]
    concept_table = pd.DataFrame({"name": names, "kind": ["token"] * len(TOKEN_CLASSES) + ["instance"] * len(SPAN_CONCEPTS),
                                  "source": "token strings", "group": ["lexical"] * len(TOKEN_CLASSES)
                                  + ["context"] * len(SPAN_CONCEPTS)})
    spans = []
    for name, test in TOKEN_CLASSES.items():
        hit = np.fromiter((test(strings[int(t)]) for t in token), dtype=bool, count=len(token))
        spans += [(int(s), int(p), int(p) + 1, name, 0) for s, p in zip(sample[hit], position[hit], strict=True)]
    bounds = np.flatnonzero(np.diff(sample[order])) + 1
    for rows in np.split(order, bounds):
        if not len(rows):
            continue
        pos = position[rows]
        for name, ranges in _spans([strings[int(t)] for t in token[rows]]).items():
            for a, b in ranges:
                spans.append((int(sample[rows[0]]), int(pos[a]), int(pos[b - 1]) + 1, name, (int(sample[rows[0]]), a)))
    return ConceptMatrix.from_spans(spans, tokens, concept_table)

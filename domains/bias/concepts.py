"""Concepts of the bias domain, per token and per sample, keyed as the activation store keys tokens.

Per token: gendered words (he, she, mother...), first names by gender, occupation nouns, and
"gendered" for any of the gendered ones. Per sample: the group mentioned, the occupation and
whether the sample states a stereotype or an anti-stereotype; these cover every token of the
sample (one instance per sample), as ENRICH's sample-level concepts do.

Positions are token indices within the tokenised text exactly as the causal-LM adapter numbers
them (``adapter.encode(text)``, BOS included when the tokenizer adds one); character offsets
from the tokenizer map words onto those positions.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd

from core.enrich.concepts import ConceptMatrix
from core.errors import DataError
from core.samples import Sample
from domains.bias.probes import BIO_ACTIVITIES
from domains.bias.vocab import NAMES, OCCUPATIONS, check_names, gender_of_word

TOKEN_CONCEPTS = ("male_word", "female_word", "male_name", "female_name", "gendered", "occupation_word")
SAMPLE_LABELS = ("group", "occupation", "label")
_WORD = re.compile(r"[A-Za-z][A-Za-z'-]*")


def token_offsets(adapter: Any, text: str) -> tuple[list[int], list[tuple[int, int]]]:
    """Token ids as the adapter encodes ``text`` and each token's character span (0, 0 for specials)."""
    ids = list(adapter.encode(text))
    tok = adapter.tokenizer
    add = getattr(adapter, "add_special_tokens", True)
    bos = getattr(tok, "bos_token", None)
    if add and bos and text.startswith(bos):
        add = False
    try:
        enc = tok(text, add_special_tokens=add, return_offsets_mapping=True)
        if list(enc["input_ids"]) == ids:
            return ids, [tuple(o) for o in enc["offset_mapping"]]
    except (NotImplementedError, TypeError, KeyError, ValueError):
        pass
    # slow tokenizers: grow the decoded prefix one token at a time
    spans, prev = [], 0
    for i in range(len(ids)):
        n = len(tok.decode(ids[:i + 1], skip_special_tokens=True))
        spans.append((prev, n) if n > prev else (0, 0))
        prev = max(prev, n)
    return ids, spans


def word_token_spans(offsets: Sequence[tuple[int, int]], start: int, end: int) -> tuple[int, int] | None:
    """Half-open token position range covering characters [start, end), or None."""
    hit = [i for i, (a, b) in enumerate(offsets) if b > a and a < end and b > start]
    return (hit[0], hit[-1] + 1) if hit else None


def _special_positions(adapter: Any, ids: Sequence[int]) -> set[int]:
    special = getattr(adapter, "special_ids", None)
    if special is None:
        special = set(getattr(adapter.tokenizer, "all_special_ids", []) or [])
    return {i for i, t in enumerate(ids) if int(t) in special}


def sample_labels(samples: Sequence[Sample]) -> pd.DataFrame:
    """Sample-level labels (index = sample index): group, occupation, stereotype label where known."""
    rows = []
    for s in samples:
        rows.append({k: s.meta.get(k) for k in SAMPLE_LABELS})
    return pd.DataFrame(rows, index=pd.RangeIndex(len(samples), name="sample"))


def annotate(adapter: Any, samples: Sequence[Sample], *, names: Mapping[str, Sequence[str]] | None = None,
             occupations: Sequence[str] | None = None) -> tuple[ConceptMatrix, pd.DataFrame]:
    """Concept matrix (token and sample concepts) and the sample label table for ``samples``.

    Special tokens (BOS, chat markers) get no token row, matching a harvest that drops them.
    """
    if not samples:
        raise DataError("no samples to annotate", fix="give at least one sample")
    table = check_names(names if names is not None else NAMES)
    name_gender = {n.lower(): g for g, ns in table.items() for n in ns}
    occ_words = {w.lower() for o in (occupations or list(OCCUPATIONS) + list(BIO_ACTIVITIES)) for w in o.split()}
    labels = sample_labels(samples)
    tokens, spans = [], []
    for si, s in enumerate(samples):
        ids, offsets = token_offsets(adapter, s.text)
        special = _special_positions(adapter, ids)
        tokens.extend((si, p) for p in range(len(ids)) if p not in special)
        for m in _WORD.finditer(s.text):
            word = m.group(0)
            rng = word_token_spans(offsets, m.start(), m.end())
            if rng is None:
                continue
            concepts = []
            g = gender_of_word(word)
            if g:
                concepts.append(f"{g}_word")
            elif word[:1].isupper() and word.lower() in name_gender:
                concepts.append(f"{name_gender[word.lower()]}_name")
            if concepts:
                concepts.append("gendered")
            if word.lower() in occ_words:
                concepts.append("occupation_word")
            for c in concepts:
                spans.append((si, rng[0], rng[1], c, (si, m.start())))
        row = labels.iloc[si]
        for col in SAMPLE_LABELS:
            if row[col] is not None and row[col] == row[col]:
                spans.append((si, 0, len(ids), f"{col}={row[col]}", si))
    sample_concepts = sorted({sp[3] for sp in spans if "=" in sp[3]})
    concept_table = pd.DataFrame(
        [{"name": c, "kind": "token", "source": "bias_lexicon", "group": "gender" if c != "occupation_word"
          else "occupation"} for c in TOKEN_CONCEPTS]
        + [{"name": c, "kind": "instance", "source": "sample_label", "group": c.split("=")[0]}
           for c in sample_concepts])
    tok_df = pd.DataFrame(tokens, columns=["sample", "position"])
    return ConceptMatrix.from_spans(spans, tok_df, concept_table), labels

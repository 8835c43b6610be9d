"""Concepts for the persona samples: trait and pole per sample, response vs prompt per token.

A feature that carries a persona should fire while the model *speaks* in character, not
merely while it reads the instruction, so the trait-and-pole concepts are laid on the
response tokens only ("O_high@response": every response token of a sample answered under
a high-openness persona). Recall counts tokens: with one held-out question per split there
is one answer per persona, too few instances to count answers.
"""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd

from core.samples import Sample
from domains.personality.inventory import TRAITS
from domains.personality.personas import POLES


def sample_labels(samples: Sequence[Sample]) -> pd.DataFrame:
    """Sample-level labels indexed by sample index: ``trait``, ``pole``, ``persona``, ``trait_pole``."""
    rows = []
    for s in samples:
        t, p = s.meta["trait"], s.meta["pole"]
        rows.append({"trait": t, "pole": p, "persona": s.meta["persona"],
                     "trait_pole": f"{t}_{p}" if t in TRAITS else "none"})
    return pd.DataFrame(rows, index=pd.RangeIndex(len(rows), name="sample"))


def concept_names(traits: Sequence[str] = tuple(TRAITS)) -> list[str]:
    return ["response", "prompt"] + [f"{t}_{p}@response" for t in traits for p in POLES]


def persona_concepts(samples: Sequence[Sample], tokens: pd.DataFrame):
    """ConceptMatrix over ``tokens`` (the store's ``sample``/``position`` keys).

    Positions before ``meta["n_prompt_tokens"]`` are prompt tokens, the rest response tokens.
    """
    from core.enrich.concepts import ConceptMatrix

    traits = sorted({s.meta["trait"] for s in samples if s.meta["trait"] in TRAITS}, key=list(TRAITS).index)
    names = concept_names(traits)
    table = pd.DataFrame({
        "name": names,
        "kind": "token",
        "source": "personality",
        "group": ["segment", "segment"] + [n.split("@")[0].split("_")[0] for n in names[2:]],
    })
    last = tokens.groupby("sample")["position"].max()
    spans = []
    for i, s in enumerate(samples):
        if i not in last.index:
            continue
        n_prompt, end = int(s.meta["n_prompt_tokens"]), int(last[i]) + 1
        spans.append((i, 0, n_prompt, "prompt", i))
        if end > n_prompt:
            spans.append((i, n_prompt, end, "response", i))
            if s.meta["trait"] in TRAITS:
                spans.append((i, n_prompt, end, f"{s.meta['trait']}_{s.meta['pole']}@response", i))
    return ConceptMatrix.from_spans(spans, tokens, table)

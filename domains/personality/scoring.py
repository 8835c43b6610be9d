"""Inventory scoring as MPI does it: a five-option question, answered by log-probabilities.

The model is never asked to generate. Each statement becomes a multiple-choice prompt whose
options are lettered A to E; the model's next-token log-probabilities over the five letters
(renormalised over those five) give an option distribution. Option "Very Accurate" scores 5
down to "Very Inaccurate" 1; a reverse-keyed item (key -1) scores ``6 - score``. Each item
yields the expected score under the distribution and the score of the most likely option.

Small models often prefer a letter whatever it stands for. Scoring the same items with the
option order reversed (A = "Very Inaccurate") exposes that: a model that reads the options
gives the same trait score both ways, a model that always answers "A" swings by up to 4.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch

from core.errors import ConfigError, DataError
from domains.personality.inventory import TRAITS, Item

OPTIONS = ("Very Accurate", "Moderately Accurate", "Neither Accurate Nor Inaccurate",
           "Moderately Inaccurate", "Very Inaccurate")
LETTERS = ("A", "B", "C", "D", "E")
# order[j] = index into OPTIONS of the option shown at letter j
ORDERS: dict[str, tuple[int, ...]] = {"original": (0, 1, 2, 3, 4), "reversed": (4, 3, 2, 1, 0)}

# The statement comes last so that every item of an inventory shares the tokens before it
# (scale, instructions, persona), which are then computed once (``prefix_cache``).
QUESTION = ("How accurately does the statement below describe you? Choose one option.\n"
            "{options}\n"
            "Reply with the letter of your choice.\n"
            'Statement: "{statement}"')
ANSWER_PREFIX = "Answer: ("


@dataclass(frozen=True)
class Query:
    """One item asked under one persona (system instruction, None for the model's default) and order."""

    item: Item
    system: str | None = None
    order: str = "original"
    persona: str = "default"


def check_order(order: str) -> tuple[int, ...]:
    if order not in ORDERS:
        raise ConfigError(f"unknown option order {order!r}", fix=f"use one of {sorted(ORDERS)}")
    return ORDERS[order]


def raw_scores(order: str) -> np.ndarray:
    """Score (5..1, before keying) of the option at each letter under ``order``."""
    return np.array([5 - i for i in check_order(order)], dtype=float)


def render_question(item: Item, order: str = "original") -> str:
    perm = check_order(order)
    options = "\n".join(f"({LETTERS[j]}) {OPTIONS[perm[j]]}" for j in range(len(LETTERS)))
    return QUESTION.format(statement=item.statement(), options=options)


def render_query(lm: Any, query: Query, *, answer_prefix: str = ANSWER_PREFIX) -> str:
    """The full prompt: chat template around the question, then the start of the answer."""
    messages = []
    if query.system:
        messages.append({"role": "system", "content": query.system})
    messages.append({"role": "user", "content": render_question(query.item, query.order)})
    return lm.render_chat(messages) + answer_prefix


def option_token_ids(tokenizer: Any, letters: Sequence[str] = LETTERS) -> list[list[int]]:
    """For each letter, the ids of its single-token spellings ("A" and " A").

    Both spellings count so the score does not hinge on whether the tokenizer merges the
    preceding space into the letter.
    """
    ids: list[list[int]] = []
    for letter in letters:
        forms = []
        for text in (letter, " " + letter):
            enc = tokenizer(text, add_special_tokens=False)["input_ids"]
            if len(enc) == 1 and enc[0] not in forms:
                forms.append(int(enc[0]))
        if not forms:
            raise ConfigError(f"the tokenizer has no single token for option letter {letter!r}",
                              fix="use a tokenizer that encodes A-E as single tokens")
        ids.append(forms)
    return ids


def letter_logprobs(next_logprobs: torch.Tensor, ids: list[list[int]]) -> torch.Tensor:
    """``[B, vocab]`` log-probabilities -> ``[B, 5]`` log-probability of each letter (spellings summed)."""
    return torch.stack([torch.logsumexp(next_logprobs[:, forms], dim=-1) for forms in ids], dim=-1)


def next_logprobs(lm: Any, queries: Sequence[Query], prompts: Sequence[str], *, hook: str | None = None,
                  intervention: Any = None) -> torch.Tensor:
    """``[B, vocab]`` next-token log-probabilities, the shared prefix of each persona and order computed once.

    Causal LM adapters (``model`` and ``specs``) go through the prefix cache; anything else
    through its own ``next_token_logprobs`` (inside ``lm.intervene`` when steering).
    """
    if not (hasattr(lm, "model") and hasattr(lm, "specs")):
        if intervention is None:
            return torch.as_tensor(lm.next_token_logprobs(list(prompts))).float()
        with lm.intervene(hook, intervention):
            return torch.as_tensor(lm.next_token_logprobs(list(prompts))).float()
    from domains.personality.prefix_cache import shared_prefix_logprobs

    groups: dict[tuple[Any, str], list[int]] = {}
    for i, q in enumerate(queries):
        groups.setdefault((q.system, q.order), []).append(i)
    out: torch.Tensor | None = None
    for idx in groups.values():
        lp = shared_prefix_logprobs(lm, [prompts[i] for i in idx], batch_size=int(getattr(lm, "batch_size", 16)),
                                    hook=hook, intervention=intervention)
        if out is None:
            out = torch.empty(len(prompts), lp.shape[1])
        out[idx] = lp
    assert out is not None
    return out


def score_queries(lm: Any, queries: Sequence[Query], *, answer_prefix: str = ANSWER_PREFIX, hook: str | None = None,
                  intervention: Any = None) -> pd.DataFrame:
    """One row per query: option probabilities (by letter), expected and argmax keyed scores.

    ``lm`` needs ``render_chat``, ``tokenizer`` and either the causal LM adapter's model
    access or ``next_token_logprobs(prompts) -> [B, vocab]`` (a toy with planted
    log-probabilities). ``intervention`` at ``hook`` steers the model while it answers.
    """
    if not queries:
        raise DataError("no inventory items to score", fix="give at least one item")
    ids = option_token_ids(lm.tokenizer)
    prompts = [render_query(lm, q, answer_prefix=answer_prefix) for q in queries]
    with torch.no_grad():
        lp = letter_logprobs(next_logprobs(lm, queries, prompts, hook=hook, intervention=intervention), ids).double()
    mass = lp.exp().sum(-1).numpy()
    probs = torch.softmax(lp, dim=-1).numpy()
    rows = []
    for q, p, m in zip(queries, probs, mass, strict=True):
        raw = raw_scores(q.order)
        keyed = raw if q.item.key == 1 else 6.0 - raw
        best = int(np.argmax(p))
        rows.append({"item": q.item.id, "trait": q.item.trait, "key": q.item.key, "facet": q.item.facet,
                     "persona": q.persona, "order": q.order,
                     **{f"p_{LETTERS[j]}": float(p[j]) for j in range(len(LETTERS))},
                     "choice": LETTERS[best], "expected": float(p @ keyed), "argmax": float(keyed[best]),
                     "option_mass": float(m)})
    return pd.DataFrame(rows)


def score_inventory(lm: Any, items: Sequence[Item], *, system: str | None = None, persona: str = "default",
                    orders: Sequence[str] = ("original",), answer_prefix: str = ANSWER_PREFIX) -> pd.DataFrame:
    """Score every item under one persona in each option order."""
    queries = [Query(it, system, order, persona) for order in orders for it in items]
    return score_queries(lm, queries, answer_prefix=answer_prefix)


def trait_profile(scores: pd.DataFrame) -> pd.DataFrame:
    """Per trait (and persona, order): mean and standard deviation over items, as MPI reports them."""
    if scores.empty:
        raise DataError("no item scores to summarise")
    keys = [k for k in ("persona", "order") if k in scores.columns]
    g = scores.groupby(keys + ["trait"], sort=False)
    out = g.agg(mean=("expected", "mean"), std=("expected", "std"), argmax_mean=("argmax", "mean"),
                argmax_std=("argmax", "std"), option_mass=("option_mass", "mean"), n=("item", "size"))
    out = out.reset_index()
    out["trait_name"] = out["trait"].map(TRAITS)
    return out


def trait_means(scores: pd.DataFrame, column: str = "expected") -> dict[str, float]:
    """Trait letter -> mean score over the items present."""
    return {str(t): float(v) for t, v in scores.groupby("trait", sort=False)[column].mean().items()}


def position_bias(scores: pd.DataFrame) -> pd.DataFrame:
    """Per trait: mean score with options in the original and the reversed order, and the gap.

    ``gap`` = original - reversed (0 for a model that reads the options; +-4 at most for one
    that always picks the same letter). ``item_abs_gap`` averages the per-item absolute
    difference, which catches biases that cancel within a trait.
    """
    have = set(scores["order"])
    if not {"original", "reversed"} <= have:
        raise DataError("the position-bias check needs scores in both option orders",
                        fix="score with orders=('original', 'reversed')")
    piv = scores.pivot_table(index=["trait", "item"], columns="order", values="expected").reset_index()
    piv["abs_gap"] = (piv["original"] - piv["reversed"]).abs()
    out = piv.groupby("trait", sort=False).agg(original=("original", "mean"), reversed=("reversed", "mean"),
                                               item_abs_gap=("abs_gap", "mean")).reset_index()
    out["gap"] = out["original"] - out["reversed"]
    return out[["trait", "original", "reversed", "gap", "item_abs_gap"]]


def letter_preference(scores: pd.DataFrame) -> dict[str, float]:
    """Mean probability of each letter across all items: a flat 0.2 each means no letter bias."""
    return {letter: float(scores[f"p_{letter}"].mean()) for letter in LETTERS}

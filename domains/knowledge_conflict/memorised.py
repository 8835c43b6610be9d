"""The memorised set: questions the model answers correctly closed-book.

A conflict only exists when the model holds the original fact, so every analysis keeps
just these questions (Xie et al. 2024; Zhao et al. 2025 do the same). Answers are cached
per model and prompt, so a second run costs nothing.
"""

from __future__ import annotations

import hashlib
import json
import logging
from typing import Any

from core.errors import DataError
from core.io import read_json, write_json
from domains.knowledge_conflict.answers import exact_match, first_answer_line
from domains.knowledge_conflict.data import ConflictExample
from domains.knowledge_conflict.prompts import qa_prompt

log = logging.getLogger(__name__)


def _cache_root():
    from core.cache import cache_dir

    return cache_dir("knowledge_conflict")


def closed_book_answers(adapter: Any, examples: list[ConflictExample], *, n_shot: int = 3, fmt: str = "plain",
                        max_new_tokens: int = 8, use_cache: bool = True) -> dict[str, str]:
    """Greedy closed-book answer per example id, cached per (model, prompt format, question)."""
    prompts = {ex.id: qa_prompt(None, ex.question, n_shot=n_shot, fmt=fmt, adapter=adapter) for ex in examples}
    key = hashlib.sha256(json.dumps([getattr(adapter, "name", "model"), fmt, n_shot, max_new_tokens],
                                    sort_keys=True).encode()).hexdigest()[:16]
    path = _cache_root() / f"closed_book-{getattr(adapter, 'name', 'model')}-{key}.json"
    cached: dict[str, dict[str, str]] = read_json(path) if use_cache and path.exists() else {}
    todo = [i for i, p in prompts.items() if i not in cached or cached[i].get("prompt") != p]
    if todo:
        log.info("closed-book answers for %d questions", len(todo))
        gens = adapter.generate([prompts[i] for i in todo], max_new_tokens=max_new_tokens, stop=["\n"])
        for i, g in zip(todo, gens, strict=True):
            cached[i] = {"prompt": prompts[i], "answer": first_answer_line(g)}
        if use_cache:
            write_json(path, cached)
    return {i: cached[i]["answer"] for i in prompts}


def memorised_set(adapter: Any, examples: list[ConflictExample], **kwargs: Any
                  ) -> tuple[list[ConflictExample], dict[str, str]]:
    """Examples the model answers correctly closed-book (normalised exact match), and all its answers."""
    answers = closed_book_answers(adapter, examples, **kwargs)
    kept = [ex for ex in examples if exact_match(answers[ex.id], ex.org_answer)]
    if not kept:
        shown = "; ".join(f"{ex.question} -> {answers[ex.id]!r}" for ex in examples[:3])
        raise DataError(f"the model {getattr(adapter, 'name', '')!r} knows none of these {len(examples)} facts "
                        f"closed-book (e.g. {shown}), so no knowledge conflict can be studied",
                        fix="use facts the model knows (the built-in probe set), a larger model, or check "
                            "the prompt format")
    return kept, answers

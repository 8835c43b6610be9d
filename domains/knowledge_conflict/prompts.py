"""Prompts in the published NQ-Swap form (``context: ...\\nquestion: ...\\nanswer:``) with few-shot
demonstrations, closed-book prompts for the memorisation check, and chat-template variants.

The prompting baseline of the steering comparison adds one instruction line (use the
context / use your own knowledge) in front of the same prompt.
"""

from __future__ import annotations

from typing import Any

from core.errors import ConfigError
from core.samples import Sample
from domains.knowledge_conflict.data import ConflictExample
from domains.knowledge_conflict.probe_set import DEMONSTRATIONS

INSTRUCTIONS = {
    "use_context": "Answer the question using only the context, even if it disagrees with what you know.",
    "use_memory": "Ignore the context and answer the question from your own knowledge.",
}
FORMATS = ("plain", "chat")


def _check_format(fmt: str) -> None:
    if fmt not in FORMATS:
        raise ConfigError(f"unknown prompt format {fmt!r}", fix=f"use one of {list(FORMATS)}")


def qa_prompt(context: str | None, question: str, *, n_shot: int = 3, instruction: str | None = None,
              fmt: str = "plain", adapter: Any = None) -> str:
    """A few-shot QA prompt; ``context=None`` gives the closed-book form (no passages at all)."""
    _check_format(fmt)
    demos = DEMONSTRATIONS[:n_shot]
    if fmt == "chat":
        if adapter is None:
            raise ConfigError("chat prompts need the model's chat template", fix="pass the adapter")
        system = "Answer each question with a short phrase."
        if instruction:
            system += " " + instruction
        messages = [{"role": "system", "content": system}]
        for c, q, a in demos:
            messages.append({"role": "user", "content": (f"context: {c}\n" if context is not None else "")
                             + f"question: {q}"})
            messages.append({"role": "assistant", "content": a})
        messages.append({"role": "user", "content": (f"context: {context}\n" if context is not None else "")
                         + f"question: {question}"})
        return adapter.render_chat(messages)
    blocks = []
    for c, q, a in demos:
        blocks.append((f"context: {c}\n" if context is not None else "") + f"question: {q}\nanswer: {a}")
    blocks.append((f"context: {context}\n" if context is not None else "") + f"question: {question}\nanswer:")
    head = f"{instruction}\n\n" if instruction else ""
    return head + "\n\n".join(blocks)


def conflict_samples(examples: list[ConflictExample], *, n_shot: int = 3, fmt: str = "plain",
                     adapter: Any = None, instruction: str | None = None) -> list[Sample]:
    """Two prompts per example: the original passage (no conflict) and the substituted one (conflict).

    ``meta`` carries what labels and scoring need: conflict (0/1), the example id, the
    relation, and the context and memory answers.
    """
    out = []
    for ex in examples:
        for conflict, ctx, ctx_answers in ((0, ex.org_context, ex.org_answer), (1, ex.sub_context, ex.sub_answer)):
            text = qa_prompt(ctx, ex.question, n_shot=n_shot, instruction=instruction, fmt=fmt, adapter=adapter)
            out.append(Sample(id=f"{ex.id}|{'conflict' if conflict else 'original'}", text=text,
                              meta={"example": ex.id, "conflict": conflict, "question": ex.question,
                                    "relation": ex.meta.get("relation", ""), "context_answers": list(ctx_answers),
                                    "memory_answers": list(ex.org_answer)}))
    return out

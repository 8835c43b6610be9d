"""Answers to neutral questions under each persona: the samples that persona vectors are read from.

Each sample is the rendered prompt (system persona + question, chat template) followed by
the model's own greedy answer, so a single forward pass over ``sample.text`` gives the
hidden states of the response tokens (for the persona vector) and of the last prompt token
(for the monitor) at once. ``meta["n_prompt_tokens"]`` marks where the response starts.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from core.samples import Sample
from domains.personality.personas import Persona, check_personas, check_questions

DEFAULT = "default"


def question_prompt(lm: Any, question: str, persona: Persona | None) -> str:
    """The chat prompt for one question; ``None`` keeps the model's own default system prompt."""
    messages = []
    if persona is not None:
        messages.append({"role": "system", "content": persona.instruction})
    messages.append({"role": "user", "content": question})
    return lm.render_chat(messages)


def persona_samples(lm: Any, personas: Sequence[Persona], questions: Sequence[str], *,
                    max_new_tokens: int = 32, include_default: bool = True,
                    progress: bool = True) -> list[Sample]:
    """Greedy answers to every question under every persona (and the default prompt).

    ``meta`` holds ``trait``/``pole``/``persona`` ("none"/"none"/"default" without a persona),
    ``question``, ``prompt``, ``response`` and ``n_prompt_tokens``.
    """
    personas = check_personas(personas)
    questions = check_questions(questions)
    plan: list[tuple[Persona | None, int, str]] = []
    for p in ([None] if include_default else []) + list(personas):
        for j, q in enumerate(questions):
            plan.append((p, j, q))
    prompts = [question_prompt(lm, q, p) for p, _, q in plan]
    responses: list[str] = []
    chunk = max(1, int(getattr(lm, "batch_size", 16)))
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(prompts), desc="persona answers", unit="answer")
    for i in range(0, len(prompts), chunk):
        part = prompts[i:i + chunk]
        responses.extend(lm.generate(part, max_new_tokens=max_new_tokens))
        if bar is not None:
            bar.update(len(part))
    if bar is not None:
        bar.close()
    samples = []
    for (p, j, q), prompt, resp in zip(plan, prompts, responses, strict=True):
        resp = resp.strip() or "..."
        name = p.name if p is not None else DEFAULT
        samples.append(Sample(
            id=f"{name}|q{j}", text=prompt + resp,
            meta={"persona": name, "trait": p.trait if p else "none", "pole": p.pole if p else "none",
                  "variant": p.variant if p else -1, "question": q, "question_index": j, "prompt": prompt,
                  "response": resp, "n_prompt_tokens": len(_encode(lm, prompt))}))
    return samples


def _encode(lm: Any, text: str) -> list[int]:
    if hasattr(lm, "encode"):
        return list(lm.encode(text))
    return list(lm.tokenizer(text)["input_ids"])

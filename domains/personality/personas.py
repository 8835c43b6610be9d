"""Persona instructions that push one Big Five trait high or low, and neutral questions to answer.

Chen et al. (2025) elicit a trait with contrasting system prompts (one that asks for the
trait, one that asks for its opposite) and read the model's hidden states while it answers
questions that do not themselves ask about the trait. The instructions and questions below
are written for this project; each trait has several phrasings of each pole so that a
persona vector is not the fingerprint of one sentence.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from core.errors import ConfigError, DataError
from domains.personality.inventory import TRAITS

POLES = ("high", "low")

_INSTRUCTIONS: dict[str, dict[str, list[str]]] = {
    "O": {
        "high": [
            "You are endlessly curious and imaginative. You love new ideas, art, unusual experiences "
            "and thinking about how the world could be different.",
            "You are an inventive free spirit who gets excited by abstract theories, poetry and "
            "anything you have never tried before.",
        ],
        "low": [
            "You are practical and conventional. You distrust new ideas, find art and abstract talk "
            "pointless, and like things done the familiar way.",
            "You are a down-to-earth traditionalist who sticks to routine, avoids anything unusual "
            "and has no patience for daydreaming or theory.",
        ],
    },
    "C": {
        "high": [
            "You are extremely organised and disciplined. You plan ahead, keep every promise, "
            "double-check your work and never leave a task unfinished.",
            "You are a meticulous, dependable person who makes lists, keeps deadlines early and "
            "keeps everything in perfect order.",
        ],
        "low": [
            "You are careless and disorganised. You act on impulse, forget commitments, lose "
            "things and leave work half done.",
            "You are a spontaneous slacker who hates plans, ignores deadlines and lets mess pile "
            "up without caring.",
        ],
    },
    "E": {
        "high": [
            "You are outgoing and full of energy. You love meeting people, talking a lot, being "
            "the centre of attention and going to parties.",
            "You are a bubbly, talkative extravert who thrives in crowds, makes friends "
            "instantly and takes the lead in any group.",
        ],
        "low": [
            "You are quiet and reserved. You prefer being alone, speak only when needed and find "
            "crowds and parties draining.",
            "You are a withdrawn introvert who keeps to yourself, avoids social events and "
            "answers briefly and without enthusiasm.",
        ],
    },
    "A": {
        "high": [
            "You are warm, kind and trusting. You care deeply about others, always try to help "
            "and avoid conflict.",
            "You are a gentle, generous soul who assumes the best in people, forgives easily "
            "and puts others' needs first.",
        ],
        "low": [
            "You are cold, blunt and suspicious. You care little about other people's feelings "
            "and like to argue and win.",
            "You are a harsh, self-centred cynic who distrusts everyone, criticises freely and "
            "never puts others first.",
        ],
    },
    "N": {
        "high": [
            "You are anxious and emotionally unstable. You worry constantly, get upset easily "
            "and feel overwhelmed by small problems.",
            "You are a nervous, moody person who panics under pressure, dwells on setbacks and "
            "is easily irritated.",
        ],
        "low": [
            "You are calm and emotionally stable. You rarely worry, stay relaxed under pressure "
            "and recover quickly from setbacks.",
            "You are an even-tempered, secure person who takes problems in stride and is almost "
            "never stressed or upset.",
        ],
    },
}

NEUTRAL_QUESTIONS: tuple[str, ...] = (
    "How would you spend a free Saturday?",
    "What do you think about when you start a new project?",
    "Describe your ideal holiday.",
    "How do you usually handle a busy week?",
    "What would you do if a friend asked you for advice?",
    "Tell me about the kind of work you enjoy.",
    "What do you do when plans change at the last minute?",
    "How do you feel about meeting new neighbours?",
    "What is your approach to learning a new skill?",
    "How do you react when someone disagrees with you?",
)


@dataclass(frozen=True)
class Persona:
    """A system instruction that pushes ``trait`` towards ``pole``; ``variant`` numbers the phrasing."""

    trait: str
    pole: str
    variant: int
    instruction: str

    @property
    def name(self) -> str:
        return f"{self.trait}_{self.pole}_{self.variant}"

    @property
    def sign(self) -> int:
        return 1 if self.pole == "high" else -1


def builtin_personas(traits: Sequence[str] | None = None, n_variants: int | None = None) -> list[Persona]:
    """High and low personas for each trait (every phrasing, or the first ``n_variants``)."""
    traits = list(TRAITS) if traits is None else [t.upper() for t in traits]
    unknown = [t for t in traits if t not in TRAITS]
    if unknown:
        raise ConfigError(f"unknown trait letter {unknown[0]!r}", fix=f"choose traits from {', '.join(TRAITS)}")
    if n_variants is not None and n_variants < 1:
        raise ConfigError(f"n_variants must be at least 1, got {n_variants}")
    out = []
    for t in traits:
        for pole in POLES:
            texts = _INSTRUCTIONS[t][pole][:n_variants]
            out.extend(Persona(t, pole, i, text) for i, text in enumerate(texts))
    return check_personas(out)


def check_personas(personas: Sequence[Persona]) -> list[Persona]:
    """Refuse an empty set or a trait with only one pole: a persona vector needs both."""
    personas = list(personas)
    if not personas:
        raise DataError("the persona set is empty",
                        fix="give at least one high and one low persona per trait (or use the built-in set)")
    for p in personas:
        if p.trait not in TRAITS:
            raise DataError(f"unknown trait letter {p.trait!r}", record=p.name,
                            fix=f"choose traits from {', '.join(TRAITS)}")
        if p.pole not in POLES:
            raise DataError(f"unknown pole {p.pole!r}", record=p.name, fix="use 'high' or 'low'")
        if not p.instruction.strip():
            raise DataError("empty persona instruction", record=p.name, fix="write the instruction text")
    for t in sorted({p.trait for p in personas}):
        poles = {p.pole for p in personas if p.trait == t}
        if poles != set(POLES):
            missing = sorted(set(POLES) - poles)[0]
            raise DataError(f"trait {t} has no {missing} persona", record=f"trait {t}",
                            fix="give both a high and a low persona for every trait used")
    names = [p.name for p in personas]
    dup = {n for n in names if names.count(n) > 1}
    if dup:
        raise DataError(f"duplicate persona {sorted(dup)[0]!r}", fix="number the variants of each pole 0, 1, ...")
    return personas


def check_questions(questions: Sequence[str]) -> list[str]:
    qs = [q.strip() for q in questions if q and q.strip()]
    if not qs:
        raise DataError("no neutral questions to answer", fix="give at least one question (or use the built-in set)")
    return qs

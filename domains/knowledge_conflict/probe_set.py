"""A built-in knowledge-conflict probe set in the NQ-Swap format, small enough for a 135M model.

Facts a small model can know (capitals, currencies, languages, authors, chemical symbols)
are written into a one-sentence passage. The substituted passage swaps the answer for the
answer of another fact of the same relation (a seeded derangement), as NQ-Swap swaps a
named entity for another of the same type, so both contexts are fluent and only the fact
changes. Every answer the probe set uses also appears as a substitute somewhere else,
so the words alone do not tell a conflicting passage from an original one.
"""

from __future__ import annotations

import numpy as np

from domains.knowledge_conflict.answers import normalize_answer
from domains.knowledge_conflict.data import ConflictExample

# relation -> (question template, passage template)
RELATIONS: dict[str, tuple[str, str]] = {
    "capital": ("What is the capital of {s}?", "{s} is a country. The capital of {s} is {a}."),
    "currency": ("What is the currency of {s}?", "The official currency of {s} is the {a}."),
    "language": ("What language is spoken in {s}?", "The official language of {s} is {a}."),
    "author": ("Who wrote {s}?", "{s} is a famous book. It was written by {a}."),
    "symbol": ("What is the chemical symbol of {s}?", "{s} is a chemical element. The chemical symbol of {s} is {a}."),
}

# relation -> [(subject, answer, extra aliases)]
FACTS: dict[str, list[tuple[str, str, tuple[str, ...]]]] = {
    "capital": [
        ("France", "Paris", ()), ("Germany", "Berlin", ()), ("Italy", "Rome", ()), ("Spain", "Madrid", ()),
        ("Japan", "Tokyo", ()), ("China", "Beijing", ("Peking",)), ("Russia", "Moscow", ()),
        ("England", "London", ()), ("Egypt", "Cairo", ()), ("Greece", "Athens", ()),
        ("Portugal", "Lisbon", ()), ("Canada", "Ottawa", ()), ("Australia", "Canberra", ()),
        ("India", "New Delhi", ("Delhi",)), ("Mexico", "Mexico City", ()), ("Argentina", "Buenos Aires", ()),
        ("Ireland", "Dublin", ()), ("Norway", "Oslo", ()), ("Sweden", "Stockholm", ()),
        ("Finland", "Helsinki", ()), ("Denmark", "Copenhagen", ()), ("Poland", "Warsaw", ()),
        ("Austria", "Vienna", ()), ("Turkey", "Ankara", ()), ("Kenya", "Nairobi", ()), ("Peru", "Lima", ()),
        ("South Korea", "Seoul", ()), ("Thailand", "Bangkok", ()), ("Cuba", "Havana", ()),
        ("the Netherlands", "Amsterdam", ()), ("Belgium", "Brussels", ()), ("Hungary", "Budapest", ()),
        ("the Czech Republic", "Prague", ()), ("Iran", "Tehran", ()), ("Iraq", "Baghdad", ()),
        ("Chile", "Santiago", ()), ("Vietnam", "Hanoi", ()), ("Indonesia", "Jakarta", ()),
        ("the Philippines", "Manila", ()), ("Brazil", "Brasília", ("Brasilia",)),
    ],
    "currency": [
        ("Japan", "yen", ("Japanese yen",)), ("the United States", "dollar", ("US dollar", "US dollars", "dollars", "American dollar", "United States dollar")),
        ("the United Kingdom", "pound", ("pound sterling", "British pound")), ("India", "rupee", ("Indian rupee",)),
        ("China", "yuan", ("renminbi", "Chinese yuan")), ("Russia", "ruble", ("rouble", "Russian ruble")),
        ("Mexico", "peso", ("Mexican peso",)), ("Switzerland", "franc", ("Swiss franc",)),
        ("South Korea", "won", ("Korean won",)), ("Brazil", "real", ("Brazilian real",)),
        ("Thailand", "baht", ("Thai baht",)), ("Poland", "zloty", ("złoty", "Polish zloty")),
        ("Sweden", "krona", ("Swedish krona",)), ("Turkey", "lira", ("Turkish lira",)),
        ("South Africa", "rand", ("South African rand",)), ("Israel", "shekel", ("new shekel",)),
        ("Germany", "euro", ()),
    ],
    "language": [
        ("France", "French", ()), ("Germany", "German", ()), ("Spain", "Spanish", ()), ("Italy", "Italian", ()),
        ("Japan", "Japanese", ()), ("China", "Chinese", ("Mandarin", "Mandarin Chinese")),
        ("Russia", "Russian", ()), ("Greece", "Greek", ()), ("the Netherlands", "Dutch", ()),
        ("Poland", "Polish", ()), ("Turkey", "Turkish", ()), ("Sweden", "Swedish", ()), ("Egypt", "Arabic", ()),
        ("Iran", "Persian", ("Farsi",)), ("Israel", "Hebrew", ()), ("Portugal", "Portuguese", ()),
        ("South Korea", "Korean", ()), ("Thailand", "Thai", ()), ("Vietnam", "Vietnamese", ()),
        ("Finland", "Finnish", ()),
    ],
    "author": [
        ("Romeo and Juliet", "William Shakespeare", ("Shakespeare",)),
        ("Pride and Prejudice", "Jane Austen", ("Austen",)), ("1984", "George Orwell", ("Orwell",)),
        ("War and Peace", "Leo Tolstoy", ("Tolstoy",)), ("Harry Potter", "J. K. Rowling", ("JK Rowling", "Rowling")),
        ("The Odyssey", "Homer", ()), ("Don Quixote", "Miguel de Cervantes", ("Cervantes",)),
        ("Oliver Twist", "Charles Dickens", ("Dickens",)),
        ("On the Origin of Species", "Charles Darwin", ("Darwin",)),
        ("The Adventures of Tom Sawyer", "Mark Twain", ("Twain",)),
        ("The Divine Comedy", "Dante Alighieri", ("Dante",)), ("Frankenstein", "Mary Shelley", ("Shelley",)),
        ("The Hobbit", "J. R. R. Tolkien", ("Tolkien", "JRR Tolkien")),
        ("Crime and Punishment", "Fyodor Dostoevsky", ("Dostoevsky",)),
        ("Moby-Dick", "Herman Melville", ("Melville",)),
        ("The Old Man and the Sea", "Ernest Hemingway", ("Hemingway",)),
        ("Les Misérables", "Victor Hugo", ("Hugo",)),
        ("The Hound of the Baskervilles", "Arthur Conan Doyle", ("Conan Doyle", "Sir Arthur Conan Doyle")),
    ],
    "symbol": [
        ("gold", "Au", ()), ("silver", "Ag", ()), ("iron", "Fe", ()), ("oxygen", "O", ()), ("hydrogen", "H", ()),
        ("carbon", "C", ()), ("sodium", "Na", ()), ("potassium", "K", ()), ("helium", "He", ()),
        ("nitrogen", "N", ()), ("copper", "Cu", ()), ("lead", "Pb", ()), ("tin", "Sn", ()), ("mercury", "Hg", ()),
        ("calcium", "Ca", ()), ("sulfur", "S", ()), ("zinc", "Zn", ()), ("chlorine", "Cl", ()),
    ],
}

# Few-shot demonstrations: facts outside the probe set, each with an agreeing passage.
DEMONSTRATIONS: list[tuple[str, str, str]] = [
    ("The Pacific Ocean is the largest ocean on Earth.", "What is the largest ocean on Earth?", "the Pacific Ocean"),
    ("Mount Everest is the highest mountain in the world.", "What is the highest mountain in the world?",
     "Mount Everest"),
    ("The Mona Lisa is a famous painting. It was painted by Leonardo da Vinci.", "Who painted the Mona Lisa?",
     "Leonardo da Vinci"),
]


def _capitalise(text: str) -> str:
    return text[:1].upper() + text[1:]


def builtin_examples(seed: int = 0, relations: list[str] | None = None) -> list[ConflictExample]:
    """The built-in probe set; the substitution is a seeded derangement within each relation."""
    rng = np.random.default_rng(seed)
    out: list[ConflictExample] = []
    for rel in relations or list(RELATIONS):
        q_tpl, c_tpl = RELATIONS[rel]
        facts = FACTS[rel]
        n = len(facts)
        norm = [normalize_answer(a) for _, a, _ in facts]
        while True:
            perm = rng.permutation(n)
            if all(norm[perm[i]] != norm[i] for i in range(n)):
                break
        for i, (subj, ans, aliases) in enumerate(facts):
            sub_subj, sub_ans, sub_aliases = facts[perm[i]]
            out.append(ConflictExample(
                id=f"{rel}:{normalize_answer(subj).replace(' ', '_')}",
                question=q_tpl.format(s=subj),
                org_context=_capitalise(c_tpl.format(s=subj, a=ans)),
                org_answer=[ans, *aliases],
                sub_context=_capitalise(c_tpl.format(s=subj, a=sub_ans)),
                sub_answer=[sub_ans, *sub_aliases],
                meta={"relation": rel, "subject": subj}))
    return out

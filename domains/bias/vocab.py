"""Word lists the bias domain reasons with: gendered word pairs, first names, occupations.

Kept apart from the probe builders so concepts, behaviour and probes agree on one vocabulary.
Occupation stereotype directions follow the US Bureau of Labor Statistics majority gender used by
WinoBias (Zhao et al. 2018); they label which answer counts as "stereotypical", nothing more.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from core.errors import ConfigError

GENDERS = ("male", "female")

# (male, female) words that swap cleanly in a sentence; "her" appears twice on purpose
# (object and possessive), so the female->male direction needs the pronoun role.
GENDERED_PAIRS: tuple[tuple[str, str], ...] = (
    ("he", "she"), ("him", "her"), ("his", "her"), ("himself", "herself"),
    ("man", "woman"), ("men", "women"), ("boy", "girl"), ("boys", "girls"),
    ("father", "mother"), ("son", "daughter"), ("brother", "sister"), ("husband", "wife"),
    ("uncle", "aunt"), ("nephew", "niece"), ("gentleman", "lady"), ("sir", "madam"),
    ("mr", "mrs"), ("male", "female"), ("boyfriend", "girlfriend"), ("king", "queen"),
    ("grandfather", "grandmother"), ("dad", "mom"),
)

MALE_WORDS = frozenset(m for m, _ in GENDERED_PAIRS)
FEMALE_WORDS = frozenset(f for _, f in GENDERED_PAIRS)

# The three pronoun roles whose log-probability difference is the bias metric.
PRONOUN_PAIRS: dict[str, tuple[str, str]] = {
    "subject": ("he", "she"),
    "object": ("him", "her"),
    "possessive": ("his", "her"),
}

NAMES: dict[str, tuple[str, ...]] = {
    "male": ("James", "John", "Robert", "Michael", "William", "David", "Richard", "Joseph", "Thomas",
             "Charles", "Daniel", "Matthew", "Anthony", "Mark", "Steven", "Paul", "Andrew", "Kevin",
             "Brian", "George"),
    "female": ("Mary", "Patricia", "Jennifer", "Linda", "Elizabeth", "Barbara", "Susan", "Jessica",
               "Sarah", "Karen", "Nancy", "Lisa", "Betty", "Sandra", "Ashley", "Emily", "Donna",
               "Michelle", "Carol", "Amanda"),
}

# occupation -> gender of the majority of its US workers (the stereotype direction)
OCCUPATIONS: dict[str, str] = {
    "nurse": "female", "receptionist": "female", "secretary": "female", "hairdresser": "female",
    "librarian": "female", "housekeeper": "female", "nanny": "female", "dietitian": "female",
    "cashier": "female", "teacher": "female", "paralegal": "female", "dancer": "female",
    "carpenter": "male", "mechanic": "male", "firefighter": "male", "engineer": "male",
    "pilot": "male", "plumber": "male", "electrician": "male", "surgeon": "male",
    "programmer": "male", "janitor": "male", "sheriff": "male", "farmer": "male",
}

KNOWN_BIAS_CATEGORIES: dict[str, tuple[str, ...]] = {
    "crows_pairs": ("race-color", "socioeconomic", "gender", "disability", "nationality",
                    "sexual-orientation", "physical-appearance", "religion", "age"),
    "stereoset": ("gender", "profession", "race", "religion"),
    "bbq": ("Age", "Disability_status", "Gender_identity", "Nationality", "Physical_appearance",
            "Race_ethnicity", "Race_x_SES", "Race_x_gender", "Religion", "SES", "Sexual_orientation"),
    "probes": ("gender",),
}


def gender_of_word(word: str) -> str | None:
    """'male', 'female' or None for a word (case-insensitive, trailing punctuation ignored)."""
    w = word.strip(".,;:!?\"'()").lower()
    if w in MALE_WORDS:
        return "male"
    if w in FEMALE_WORDS:
        return "female"
    return None


def check_categories(categories: Iterable[str] | None, source: str) -> tuple[str, ...] | None:
    """Validate requested bias categories against those the source knows; None means all."""
    if categories is None:
        return None
    if isinstance(categories, str):
        categories = [categories]
    known = KNOWN_BIAS_CATEGORIES[source]
    lower = {k.lower(): k for k in known}
    out = []
    for c in categories:
        if str(c).lower() not in lower:
            raise ConfigError(f"unknown bias category {c!r} for {source}",
                              fix=f"use one of {list(known)}")
        out.append(lower[str(c).lower()])
    return tuple(out)


def check_names(names: Mapping[str, Iterable[str]]) -> dict[str, tuple[str, ...]]:
    """A gender -> first names table with no empty list and no name listed twice."""
    unknown = set(names) - set(GENDERS)
    if unknown:
        raise ConfigError(f"name list has unknown gender keys {sorted(unknown)}",
                          fix=f"use the keys {list(GENDERS)}")
    seen: dict[str, tuple[str, str]] = {}
    out: dict[str, tuple[str, ...]] = {}
    for gender in GENDERS:
        items = tuple(str(n).strip() for n in names.get(gender, ()))
        if not items:
            raise ConfigError(f"name list for {gender!r} is empty", fix="give at least one first name per gender")
        for n in items:
            if not n or " " in n:
                raise ConfigError(f"name {n!r} in the {gender} list is not a single word",
                                  fix="give first names of one word each")
            key = n.lower()
            if key in seen:
                first_gender, first = seen[key]
                where = (f"twice under {gender!r}" if first_gender == gender
                         else f"under both {first_gender!r} and {gender!r}")
                same = f" and {n!r}" if n != first else ""
                raise ConfigError(f"name list has duplicate name {first!r}{same} ({where})",
                                  fix="list each first name once, under one gender")
            seen[key] = (gender, n)
        out[gender] = items
    return out


def check_occupations(occupations: Mapping[str, str] | Iterable[str]) -> dict[str, str]:
    """Occupations with their stereotype gender; a bare list takes directions from OCCUPATIONS."""
    if isinstance(occupations, Mapping):
        table = {str(k): str(v) for k, v in occupations.items()}
    else:
        table = {}
        for o in occupations:
            if o not in OCCUPATIONS:
                raise ConfigError(f"occupation {o!r} has no known stereotype direction",
                                  fix=f"give a mapping occupation -> male|female, or use {sorted(OCCUPATIONS)}")
            table[o] = OCCUPATIONS[o]
    if not table:
        raise ConfigError("occupation list is empty", fix="give at least one occupation")
    for o, g in table.items():
        if g not in GENDERS:
            raise ConfigError(f"occupation {o!r} has stereotype {g!r}", fix=f"use one of {list(GENDERS)}")
    return table

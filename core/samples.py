"""The unit every domain feeds into a model: a sample with a stable id, its text and metadata.

Protein domains put a residue sequence in ``text``; language domains put a prompt (already
rendered, chat template included). ``meta`` carries whatever concepts and behaviour
measures need later (chain type, occupation, persona, answers...).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class Sample:
    id: str
    text: str
    meta: dict[str, Any] = field(default_factory=dict)

"""The evaluation suite's contract: each evaluation is a small class with a config dataclass
and a typed result, listed by name in ``EVALS``, so ``stage=evaluate evals=[...]`` composes them and
the comparison table reads every result the same way.

An evaluation gets an ``EvalContext`` (the composed config, the dictionary, its folder, the
store, the run folder for its own files) and returns an ``EvalResult``: ``to_dict()`` is its
section of ``metrics.json``, ``headline()`` the few numbers that go into the side-by-side
table of several dictionaries.
"""

from __future__ import annotations

import dataclasses
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, ClassVar

from core.errors import ConfigError


@dataclass
class EvalResult:
    """Base of every typed result; subclasses add their fields."""

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def headline(self) -> dict[str, float | None]:
        return {}


@dataclass
class EvalContext:
    cfg: Any
    sae: Any
    sae_dir: Path
    store_root: Path | None
    out_dir: Path
    run_dir: Path
    data: dict[str, Any] = field(default_factory=dict)
    shared: dict[str, Any] = field(default_factory=dict)  # loaded once, used for every dictionary (the model)

    @cached_property
    def store(self):
        from core.store import ActivationStore

        if self.store_root is None:
            raise ConfigError("this evaluation needs an activation store", fix="set data.root=<store folder>")
        return ActivationStore(self.store_root, verify=False)

    @cached_property
    def datamodule(self):
        from core.stages.train import datamodule_from

        return datamodule_from(self.data, self.run_dir)


class Eval(ABC):
    """One evaluation: ``Config`` (a dataclass of its options) and ``run``."""

    name: ClassVar[str]
    Config: ClassVar[type]

    def __init__(self, options: dict[str, Any] | None = None) -> None:
        options = dict(options or {})
        known = {f.name for f in dataclasses.fields(self.Config)}
        unknown = sorted(set(options) - known)
        if unknown:
            raise ConfigError(f"unknown options {unknown} for the {self.name!r} evaluation",
                              fix=f"valid options under evaluate.{self.name} are {sorted(known)}")
        self.config = self.Config(**options)

    @abstractmethod
    def run(self, ctx: EvalContext) -> EvalResult:
        """Measure the context's dictionaries and return one typed result."""


EVALS: dict[str, str] = {  # name -> "module:class", imported only when asked for
    "core": "core.eval.core:CoreEval",
    "spliced": "core.eval.spliced:SplicedEval",
    "sparse_probing": "core.eval.sparse_probing:SparseProbingEval",
    "absorption": "core.eval.absorption:AbsorptionEval",
    "autointerp": "core.eval.autointerp:AutointerpEval",
}
ALIASES = {"reconstruction": "core"}  # the name metrics.json used for the core metrics before the suite


def get_eval(name: str) -> type[Eval]:
    import importlib

    key = ALIASES.get(name, name)
    if key not in EVALS:
        raise ConfigError(f"unknown evaluation {name!r}", fix=f"use evals=[...] with names from {sorted(EVALS)}")
    module, _, cls = EVALS[key].partition(":")
    return getattr(importlib.import_module(module), cls)

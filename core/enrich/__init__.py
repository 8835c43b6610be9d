"""Feature-to-concept enrichment: concept matrices, the streaming association engine,
AnnData/scanpy export and report sections. Shared by every domain; knows no domain."""

from __future__ import annotations

from typing import Any

__all__ = ["ConceptMatrix", "enrich", "run_enrichment", "assign_splits"]


def __getattr__(name: str) -> Any:
    # lazy: importing the concept matrix must not pull in torch, scanpy and the engine
    if name == "ConceptMatrix":
        from core.enrich.concepts import ConceptMatrix

        return ConceptMatrix
    if name == "enrich":
        from core.enrich.engine import enrich

        return enrich
    if name in ("run_enrichment", "assign_splits"):
        from core.enrich import run

        return getattr(run, name)
    raise AttributeError(f"module 'core.enrich' has no attribute {name!r}")

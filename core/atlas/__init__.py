"""A static feature atlas for a run's dictionaries: an index of every feature (sortable,
searchable), a page per live feature (examples, histogram, concepts, neighbours) and the
decoder map, built from the files the enrichment stage wrote (``stage=atlas``)."""

from core.atlas.build import build_atlas

__all__ = ["build_atlas"]

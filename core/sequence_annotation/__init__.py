"""Annotate new sequences with a trained run: per-token sparse features, per-sequence summaries
with the run's labels for the features, spans, and HTML tracks (``stage=annotate_sequences``)."""

from core.sequence_annotation.trained_run import RunDictionary, find_dictionaries, model_config

__all__ = ["RunDictionary", "find_dictionaries", "model_config"]

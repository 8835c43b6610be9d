"""Explanations of dictionary features and their scores.

Examples sampled across activation quantiles and streamed to disk (``examples``,
``records``), explainers (``explainers``: enrichment concepts or a chat model), chat
clients (``clients``: a local transformers model or an OpenAI-compatible endpoint), judge
scorers after delphi's protocol (``scorers``: detection, fuzzing), a model-free concept
scorer (``concept_scorer``), and the protocol with its shuffled control (``run``,
``pipeline``). Knows no domain: concepts and token text come from the caller.
"""

"""sparsescope core: dictionaries, training, activation store, adapters, enrichment, steering.

The core knows nothing about proteins or social bias; domain plugins under ``domains/``
bring samples, hook points, concepts and behaviour measures.
"""

__version__ = "0.1.0"

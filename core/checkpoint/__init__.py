"""Dictionary checkpoints: the SAELens folder layout, plus importers for dictionary_learning
and sparsify folders."""

from core.checkpoint.dictionary_learning import import_dictionary_learning
from core.checkpoint.saelens import load_sae, read_cfg, sae_lens_architecture, save_sae, source_names
from core.checkpoint.sparsify import import_sparsify

__all__ = ["import_dictionary_learning", "import_sparsify", "load_sae", "read_cfg",
           "sae_lens_architecture", "save_sae", "source_names"]

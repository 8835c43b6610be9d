"""Dictionary architectures, each registered by name (``sae.architecture`` in the config):
SAEs, transcoders (``d_out != d_in``) and crosscoders (several sources in and out)."""

from core.dictionaries.base import (
    REGISTRY,
    Dictionary,
    DictionaryConfig,
    LossOutput,
    build_dictionary,
    register,
)
from core.dictionaries.batchtopk import BatchTopKSAE
from core.dictionaries.clt import BatchTopKCLT, CrossLayerTranscoder, ReLUCLT, TopKCLT
from core.dictionaries.crosscoder import BatchTopKCrosscoder, Crosscoder, L1Crosscoder
from core.dictionaries.gated import GatedSAE
from core.dictionaries.jumprelu import JumpReLUSAE
from core.dictionaries.matryoshka import MatryoshkaSAE
from core.dictionaries.relu import ReLUSAE
from core.dictionaries.topk import TopKSAE

__all__ = [
    "REGISTRY", "Dictionary", "DictionaryConfig", "LossOutput", "build_dictionary", "register",
    "BatchTopKCrosscoder", "BatchTopKSAE", "Crosscoder", "GatedSAE", "JumpReLUSAE", "L1Crosscoder",
    "MatryoshkaSAE", "ReLUSAE", "TopKSAE",
    "BatchTopKCLT", "CrossLayerTranscoder", "ReLUCLT", "TopKCLT",
]

"""Lightning training of any dictionary architecture (see ``train_sae``)."""

from core.training.data import TensorDataModule
from core.training.init import activation_scale, geometric_median
from core.training.module import DictionaryModule
from core.training.train import train_sae

__all__ = ["DictionaryModule", "TensorDataModule", "activation_scale", "geometric_median", "train_sae"]

"""Sharded safetensors activation store: write (resumably), verify, read, and stream for training.

The Lightning DataModule is imported on first use, so harvesting (which only writes) does
not pay for importing Lightning.
"""

from typing import Any

from core.store.manifest import FORMAT_VERSION, MANIFEST, SAMPLES_TSV, read_manifest, shard_name
from core.store.reader import ActivationStore
from core.store.samples_tsv import read_samples_tsv, write_samples_tsv
from core.store.split import holdout_mask
from core.store.writer import ShardWriter

_LAZY = {"ActivationDataModule", "ShuffleBuffer", "StoreStream", "open_stores"}

__all__ = [
    "ActivationDataModule", "ActivationStore", "FORMAT_VERSION", "MANIFEST", "SAMPLES_TSV",
    "ShardWriter", "ShuffleBuffer", "StoreStream", "holdout_mask", "open_stores", "read_manifest",
    "read_samples_tsv", "shard_name", "write_samples_tsv",
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        from core.store import datamodule

        return getattr(datamodule, name)
    raise AttributeError(f"module 'core.store' has no attribute {name!r}")

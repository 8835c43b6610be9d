"""Sharded safetensors activation store: write (resumably), verify, read, and stream for training."""

from core.store.datamodule import ActivationDataModule, ShuffleBuffer, StoreStream, open_stores
from core.store.manifest import FORMAT_VERSION, MANIFEST, SAMPLES_TSV, read_manifest, shard_name
from core.store.reader import ActivationStore
from core.store.samples_tsv import read_samples_tsv, write_samples_tsv
from core.store.split import holdout_mask
from core.store.writer import ShardWriter

__all__ = [
    "ActivationDataModule", "ActivationStore", "FORMAT_VERSION", "MANIFEST", "SAMPLES_TSV",
    "ShardWriter", "ShuffleBuffer", "StoreStream", "holdout_mask", "open_stores", "read_manifest",
    "read_samples_tsv", "shard_name", "write_samples_tsv",
]

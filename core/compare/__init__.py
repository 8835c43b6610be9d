"""Comparing dictionaries: the same features across seeds, widths and training time, and stitching.

Decoder-cosine and activation matching with MMCS and a one-to-one assignment
(``matching``, ``activations``, ``pairwise``), feature splitting across widths and Matryoshka
prefixes (``splitting``), the stitching of a small and a large SAE with the novel /
reconstruction classification (``stitching``), and the life cycle of features through
snapshots saved during training (``lifecycle``). ``sparsescope stage=compare`` runs them on
two dictionary folders.
"""

from core.compare.activations import coactivation, correlation, encode_sparse, token_sample
from core.compare.lifecycle import births, lifecycle_table
from core.compare.matching import Matching, cosine_matrix, expected_max_cosine, match
from core.compare.pairwise import Comparison, check_same_space, compare
from core.compare.splitting import SplitTree, nested_trees, split_tree
from core.compare.stitching import StitchResult, stitch

__all__ = ["Comparison", "Matching", "SnapshotCallback", "SplitTree", "StitchResult", "births",
           "check_same_space", "coactivation", "compare", "correlation", "cosine_matrix", "encode_sparse",
           "expected_max_cosine", "lifecycle_table", "load_snapshots", "match", "nested_trees", "split_tree",
           "snapshot_dir", "stitch", "token_sample"]

_LAZY = {"SnapshotCallback", "load_snapshots", "snapshot_dir"}  # these import Lightning


def __getattr__(name: str):
    if name in _LAZY:
        from core.compare import snapshots

        return getattr(snapshots, name)
    raise AttributeError(f"module 'core.compare' has no attribute {name!r}")

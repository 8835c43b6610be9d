"""ConceptMatrix: building from spans, instance ids, save/load round trip and bad-input messages."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from core.enrich.concepts import ConceptMatrix
from core.errors import DataError, ShapeError


def _tokens(lengths=(10, 8, 12)) -> pd.DataFrame:
    return pd.DataFrame([(s, p) for s, n in enumerate(lengths) for p in range(n)],
                        columns=["sample", "position"])


CONCEPTS = pd.DataFrame({"name": ["helix", "site"], "kind": ["instance", "token"],
                         "source": ["test", "test"], "group": ["ss", "site"]})


def test_from_spans_assigns_instance_ids_per_concept():
    tokens = _tokens()
    spans = [(0, 2, 5, "helix", "a"), (1, 0, 3, "helix", "b"), (2, 4, 6, "helix", "a"),
             (0, 7, 8, "site", 0)]
    cm = ConceptMatrix.from_spans(spans, tokens, CONCEPTS)
    dense = cm.values.toarray()
    assert dense.shape == (30, 2)
    # instance key "a" in two samples is one instance (id 1); "b" is id 2
    assert list(dense[2:5, 0]) == [1, 1, 1]
    assert list(dense[10:13, 0]) == [2, 2, 2]
    assert list(dense[18 + 4:18 + 6, 0]) == [1, 1]
    assert dense[:, 0].astype(bool).sum() == 8
    assert dense[7, 1] == 1 and dense[:, 1].astype(bool).sum() == 1
    assert list(cm.n_instances()) == [3, 1]  # an instance is counted per sample
    assert list(cm.n_positive_tokens()) == [8, 1]
    assert cm.notes["positions_without_token"] == 0


def test_spans_past_sequence_end_and_overlaps_are_counted():
    tokens = _tokens((5,))
    spans = [(0, 3, 9, "helix", "x"), (0, 0, 4, "helix", "y"), (0, 7, 9, "helix", "z")]
    cm = ConceptMatrix.from_spans(spans, tokens, CONCEPTS)
    assert cm.notes["positions_without_token"] == 6  # 5..8 from x, 7..8 from z
    assert cm.notes["overlapping_tokens"] == 1  # position 3 is in x and y
    assert cm.notes["instances_without_token"] == 1  # z lies wholly past the end
    assert cm.values.toarray()[3, 0] == 1  # the earlier instance keeps the token


def test_save_load_round_trip(tmp_path):
    cm = ConceptMatrix.from_spans([(0, 1, 4, "helix", 1), (2, 0, 2, "site", 2)], _tokens(), CONCEPTS)
    paths = cm.save(tmp_path / "concepts")
    assert all(p.exists() for p in paths.values())
    back = ConceptMatrix.load(tmp_path / "concepts")
    assert (back.values != cm.values).nnz == 0
    pd.testing.assert_frame_equal(back.concepts, cm.concepts)
    pd.testing.assert_frame_equal(back.tokens, cm.tokens)


def test_row_index_joins_by_sample_and_position():
    tokens = _tokens().sample(frac=1.0, random_state=0).reset_index(drop=True)
    cm = ConceptMatrix(sp.csr_matrix((len(tokens), 2), dtype=np.int32), CONCEPTS, tokens)
    rows = cm.row_index([1, 2, 0, 5], [3, 11, 0, 0])
    assert rows[3] == -1
    # kept special tokens have negative positions; they must not collide with other samples
    special = pd.DataFrame({"sample": [0, 1, 1], "position": [-1, -1, 0]})
    cm2 = ConceptMatrix(sp.csr_matrix((3, 2), dtype=np.int32), CONCEPTS, special)
    assert list(cm2.row_index([1, 0, 0], [-1, -1, 0])) == [1, 0, -1]
    for r, (s, p) in zip(rows[:3], [(1, 3), (2, 11), (0, 0)], strict=True):
        assert tuple(tokens.iloc[r]) == (s, p)


def test_from_sample_labels_counts_samples_as_instances():
    tokens = _tokens()
    labels = pd.DataFrame({"group": ["a", "b", "a"], "flag": [True, False, True]}, index=[0, 1, 2])
    cm = ConceptMatrix.from_sample_labels(labels, tokens)
    assert set(cm.names) == {"group=a", "group=b", "flag"}
    sup = cm.support().set_index("name")
    assert sup.loc["group=a", "n_instances"] == 2
    assert sup.loc["group=a", "n_tokens"] == 22
    assert sup.loc["flag", "n_tokens"] == 22


def test_bad_inputs_have_clear_messages(tmp_path):
    tokens = _tokens()
    with pytest.raises(ShapeError, match="rows but the token table"):
        ConceptMatrix(sp.csr_matrix((5, 2), dtype=np.int32), CONCEPTS, tokens)
    with pytest.raises(ShapeError, match="columns but the concept table"):
        ConceptMatrix(sp.csr_matrix((30, 3), dtype=np.int32), CONCEPTS, tokens)
    with pytest.raises(DataError, match="not in the concept table"):
        ConceptMatrix.from_spans([(0, 0, 2, "strand", 1)], tokens, CONCEPTS)
    with pytest.raises(DataError, match="kind"):
        ConceptMatrix.from_spans([], tokens, CONCEPTS.assign(kind=["domain", "token"]))
    with pytest.raises(DataError, match="duplicated concept names"):
        ConceptMatrix.from_spans([], tokens, CONCEPTS.assign(name=["a", "a"]))
    with pytest.raises(DataError, match="duplicated"):
        ConceptMatrix(sp.csr_matrix((2, 2), dtype=np.int32), CONCEPTS,
                      pd.DataFrame({"sample": [0, 0], "position": [1, 1]}))
    with pytest.raises(DataError, match="not found"):
        ConceptMatrix.load(tmp_path / "missing")


def test_swissprot_concept_sets_interplm_and_full():
    from core.errors import ConfigError
    from domains.protein.concepts import INTERPLM_TYPES, feature_types_of

    assert feature_types_of("interplm") == list(INTERPLM_TYPES)
    full = feature_types_of("full")
    assert set(INTERPLM_TYPES) < set(full)
    assert {"TRANSMEM", "INTRAMEM", "TOPO_DOM"} <= set(full) - set(INTERPLM_TYPES)
    assert feature_types_of("full", ["HELIX"]) == ["HELIX"]
    with pytest.raises(ConfigError, match="unknown concept set"):
        feature_types_of("most")
    with pytest.raises(ConfigError, match="unknown Swiss-Prot feature types"):
        feature_types_of(None, ["HELIX", "NOPE"])

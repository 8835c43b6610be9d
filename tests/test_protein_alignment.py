"""Concept rows line up with the model's tokens: residue i of a protein is token i+1 after BOS,
and the concept matrix keyed by (sample, position) labels exactly that residue."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from domains.protein.concepts import residue_concepts, residue_tokens
from domains.protein.swissprot import read_swissprot
from domains.protein.tiny_esm import save_tiny_esm2

FIX = Path(__file__).parent / "fixtures" / "protein"


@pytest.fixture(scope="module")
def tiny_esm(tmp_path_factory):
    from core.adapters import load_adapter

    path = save_tiny_esm2(tmp_path_factory.mktemp("esm") / "esm2_t2_tiny.pt")
    return load_adapter({"_target_": "core.adapters.esm_fair.load_esm2_fair", "name_or_path": str(path),
                         "device": "cpu"})


@pytest.fixture(scope="module")
def records():
    return read_swissprot(FIX / "swissprot_features.dat")


def _token_letters(adapter, ids):
    return [adapter.tokenizer.get_tok(int(i)) for i in ids]


def test_positions_skip_bos_and_match_residues(tiny_esm, records):
    batch = tiny_esm.tokenize([r.to_sample() for r in records])
    for b, rec in enumerate(records):
        pos = batch.positions[b].numpy()
        ids = batch.input_ids[b].numpy()
        real = pos >= 0
        assert pos[0] == -1  # <cls>/BOS carries no residue
        assert pos[real].tolist() == list(range(len(rec.sequence)))
        assert "".join(_token_letters(tiny_esm, ids[real])) == rec.sequence
        assert np.flatnonzero(real)[0] == 1  # residue 0 is token 1


def test_concept_rows_label_the_right_token(tiny_esm, records):
    batch = tiny_esm.tokenize([r.to_sample() for r in records])
    real = batch.positions >= 0
    sample = batch.sample_index[:, None].expand_as(batch.positions)[real].numpy()
    position = batch.positions[real].numpy()
    letters = _token_letters(tiny_esm, batch.input_ids[real].numpy())
    import pandas as pd

    tokens = pd.DataFrame({"sample": sample, "position": position})
    rc = residue_concepts(records, min_count=1)
    cm = rc.matrix(tokens)
    assert cm.notes["positions_without_token"] == 0
    # amino-acid concepts agree with the token the model saw at each row
    for aa in "CKHD":
        col = cm.names.index(f"aa:{aa}")
        rows = cm.values[:, col].nonzero()[0]
        assert rows.size and all(letters[r] == aa for r in rows)
    # the kinase's ATP-binding lysine (residue 54, 1-based) is the row of token 'K' at position 53
    col = cm.names.index("BINDING:ATP")
    row = cm.row_index([0], [53])[0]
    assert cm.values[row, col] > 0 and letters[row] == "K"
    assert cm.values[cm.row_index([0], [52])[0], col] == 0 and cm.values[cm.row_index([0], [54])[0], col] == 0


def test_residue_tokens_match_the_adapter_without_truncation(tiny_esm, records):
    batch = tiny_esm.tokenize([r.to_sample() for r in records])
    n_real = int((batch.positions >= 0).sum())
    assert len(residue_tokens(records)) == n_real


def test_harvested_store_rows_carry_the_concepts_of_their_residue(tiny_esm, records, tmp_path):
    harvest_mod = pytest.importorskip("core.harvest")
    from domains.protein.pipeline import store_tokens

    stores = harvest_mod.harvest(tiny_esm, [r.to_sample() for r in records], ["blocks.1.hook_resid_post"],
                                 tmp_path / "acts", batch_tokens=512)
    store = stores["blocks.1.hook_resid_post"]
    tokens = store_tokens(store)
    tok_ids = store.load(columns=("token",))["token"].numpy()
    cm = residue_concepts(records, min_count=1).matrix(tokens)
    assert cm.n_tokens == store.n_tokens == sum(len(r.sequence) for r in records)
    for aa in "CW":
        col = cm.names.index(f"aa:{aa}")
        rows = cm.values[:, col].nonzero()[0]
        assert rows.size and {tiny_esm.tokenizer.get_tok(int(t)) for t in tok_ids[rows]} == {aa}

"""Swiss-Prot / UniProt TSV / FASTA parsing, bad input, and the Swiss-Prot concepts built from them."""

from __future__ import annotations

from pathlib import Path

import pytest

from core.errors import DataError
from domains.protein.concepts import INTERPLM_TYPES, protein_labels, residue_concepts, residue_tokens
from domains.protein.fasta import read_fasta
from domains.protein.features import parse_location, parse_tsv_features
from domains.protein.records import InputPolicy
from domains.protein.swissprot import read_swissprot
from domains.protein.uniprot_tsv import read_uniprot_tsv

FIX = Path(__file__).parent / "fixtures" / "protein"


@pytest.fixture(scope="module")
def records():
    return read_swissprot(FIX / "swissprot_features.dat")


def _feature(recs, acc, ftype, start1=None):
    rec = next(r for r in recs if r.id == acc)
    return [f for f in rec.features if f.type == ftype and (start1 is None or f.start == start1 - 1)]


def test_every_interplm_feature_type_is_read(records):
    types = {f.type for r in records for f in r.features}
    assert set(INTERPLM_TYPES) <= types
    assert [r.id for r in records] == ["X9A001", "X9A002", "X9A003"]
    assert len(records[0].sequence) == 360 and records[0].sequence.startswith("MKLLVLGLLL")


def test_binding_ligands_and_noteless_features_are_kept(records):
    (atp,) = _feature(records, "X9A001", "BINDING", 32)
    assert (atp.start, atp.end) == (31, 40)
    assert atp.qualifiers["ligand"] == "ATP" and atp.qualifiers["ligand_id"] == "ChEBI:CHEBI:30616"
    (act,) = _feature(records, "X9A002", "ACT_SITE", 120)
    assert act.qualifiers == {} and act.known
    rc = residue_concepts(records, min_count=1)
    spans = rc.spans
    # the note-less active site still counts towards ACT_SITE_any, at 0-based residue 119
    hit = spans[(spans.concept == "ACT_SITE_any") & (spans["sample"] == 1)]
    assert hit[["start", "end"]].values.tolist() == [[119, 120]]
    assert "BINDING:ATP" in rc.concepts.name.values and "BINDING:Zn(2+)" in rc.concepts.name.values


def test_disulfide_pairs_mark_both_cysteines_as_one_instance(records):
    rc = residue_concepts(records, min_count=1, include_amino_acids=False)
    cm = rc.matrix(residue_tokens(records))
    col = cm.names.index("DISULFID_any")
    values = cm.values[:, col].toarray().ravel()
    tok = cm.tokens
    yeast = tok["sample"].to_numpy() == 2
    pos = tok["position"].to_numpy()
    bonded = sorted(pos[yeast & (values > 0)].tolist())
    # 27..56, 34..47, 35..?69 (uncertain end kept), 52..74 -> 1-based cysteines
    assert bonded == sorted(p - 1 for p in (27, 56, 34, 47, 35, 69, 52, 74))
    seq = records[2].sequence
    assert all(seq[p] == "C" for p in bonded)
    ids = {p: values[(tok["sample"] == 2).to_numpy() & (pos == p)][0] for p in bonded}
    assert ids[26] == ids[55] and ids[33] == ids[46] and ids[26] != ids[33]
    # the interchain bond of the kinase marks a single cysteine
    kin = (tok["sample"] == 0).to_numpy()
    assert sorted(pos[kin & (values > 0)].tolist()) == [138, 197, 211]


def test_uncertain_positions_are_counted_not_crashed_on(records):
    rc = residue_concepts(records, min_count=1)
    # MOD_RES ?, REGION ?..25 and MOTIF ? have no usable position
    assert rc.notes["unknown_position_skipped"] == 3
    # REGION 320..?355, COILED 138..>170, SIGNAL <1..17, DISULFID 35..?69, HELIX 68..>82
    assert rc.notes["uncertain_position_used"] == 5
    assert parse_location("<1..17") == (0, 17, True, False)
    assert parse_location("265..?274") == (264, 274, True, False)
    assert parse_location("?") == (None, None, True, False)
    assert parse_location("P12345:10..20")[3] is True


def test_tsv_and_flat_file_give_the_same_proteins(records):
    tsv = read_uniprot_tsv(FIX / "uniprot_features.tsv")
    assert [r.id for r in tsv] == [r.id for r in records]
    for a, b in zip(records, tsv, strict=True):
        assert a.sequence == b.sequence and a.keywords == b.keywords and a.cofactors == b.cofactors
        key = lambda f: (f.type, f.start or -1, f.end or -1, sorted(f.qualifiers.items()))  # noqa: E731
        assert sorted(map(key, a.features)) == sorted(map(key, b.features))
        assert {k: sorted(v) for k, v in a.xrefs.items() if k in ("GO", "Pfam", "InterPro")} == \
               {k: sorted(v) for k, v in b.xrefs.items()}


def test_tsv_cell_grammar():
    cell = ('BINDING 12; /ligand="ATP"; /ligand_id="ChEBI:CHEBI:30616"; /evidence="ECO:0000250"; '
            'BINDING 20..27; /ligand="Mg(2+)"; /note="semicolon; BINDING 5 inside quotes"')
    a, b = parse_tsv_features(cell, "BINDING")
    assert (a.start, a.end, a.qualifiers["ligand"]) == (11, 12, "ATP")
    assert (b.start, b.end, b.qualifiers["note"]) == (19, 27, "semicolon; BINDING 5 inside quotes")


def test_cofactor_concept_is_binding_sites_of_the_named_cofactor(records):
    rc = residue_concepts(records, min_count=1)
    cof = rc.spans[rc.spans.concept == "COFACTOR:Zn(2+)"]
    assert sorted(cof["start"]) == [28, 31, 44, 48]
    mg = rc.spans[rc.spans.concept == "COFACTOR:Mg(2+)"]
    assert sorted(mg["start"]) == [152, 165]


def test_subconcepts_below_min_count_fold_into_any(records):
    rc = residue_concepts(records, min_count=3)
    names = set(rc.concepts.name)
    assert "ZN_FING:C2H2-type" in names  # three fingers, instance numbers stripped
    assert "DOMAIN:Protein kinase" not in names and "DOMAIN_any" in names
    assert rc.notes["subconcept_values_below_min_count"] > 0


def test_amino_acid_concepts_are_a_separate_group(records):
    rc = residue_concepts(records, min_count=1)
    aa = rc.concepts[rc.concepts.group == "amino_acid"]
    assert len(aa) == 20 and set(aa.source) == {"sequence"}
    cm = rc.matrix(residue_tokens(records))
    col = cm.names.index("aa:C")
    rows = cm.values[:, col].nonzero()[0]
    t = cm.tokens.iloc[rows]
    assert all(records[s].sequence[p] == "C" for s, p in zip(t["sample"], t["position"], strict=True))
    assert len(rows) == sum(r.sequence.count("C") for r in records)


def test_protein_level_labels(records):
    labels = protein_labels(records, min_count=1)
    assert labels.loc[1, "KW:Zinc"] and not labels.loc[0, "KW:Zinc"]
    assert labels.loc[0, "GO:0005524"] and labels.loc[0, "Pfam:PF00069"]
    assert labels.loc[1, "COFACTOR:Zn(2+)"]
    assert "KW:Disulfide bond" not in labels.columns or not labels["KW:Disulfide bond"].all()


# ----------------------------------------------------------------------------- bad input

def test_fasta_reads_ids_and_sequences(tmp_path):
    p = tmp_path / "ok.fasta"
    p.write_text(">sp|P69905|HBA_HUMAN Hemoglobin alpha\nMVLSPADKTN\nVKAAWGKVGA*\n>seq2\nmkv\n")
    recs = read_fasta(p)
    assert [r.id for r in recs] == ["P69905", "seq2"]
    assert recs[0].sequence == "MVLSPADKTNVKAAWGKVGA" and recs[1].sequence == "MKV"
    assert recs[0].meta["entry_name"] == "HBA_HUMAN" and recs[0].meta["description"] == "Hemoglobin alpha"


@pytest.mark.parametrize("text, reason, line, record", [
    ("junk line\n>a\nMKV\n", "malformed", 1, "(before first header)"),
    (">a\nMKV\n>b\nMK1V\n", "bad_characters", 3, "b"),
    (">a\nMKV\n>b\n\n>c\nAA\n", "empty", 3, "b"),
    (">a\nMKV\n>a\nMKV\n", "duplicate_id", 3, "a"),
    (">a\nMKVLLLLLLLLL\n", "too_long", 1, "a"),
])
def test_bad_fasta_records_stop_with_file_line_and_record(tmp_path, text, reason, line, record):
    p = tmp_path / "bad.fasta"
    p.write_text(text)
    with pytest.raises(DataError) as err:
        read_fasta(p, InputPolicy(max_length=10))
    msg = str(err.value)
    assert f"{p}:{line}" in msg and f"record {record}" in msg and "fix:" in msg
    skip = InputPolicy(on_error="skip", max_length=10)
    kept = read_fasta(p, skip)
    assert skip.skipped[reason] == 1
    assert all(r.id != "b" or reason == "duplicate_id" for r in kept)


def test_malformed_flatfile_record_is_named_and_skippable(tmp_path):
    good = (FIX / "swissprot_features.dat").read_text()
    entries = good.split("//\n")
    broken = entries[1].replace("FT   ZN_FING         55..77", "FT   ZN_FING         55..x77")
    truncated = entries[2][: len(entries[2]) // 2]
    text = entries[0] + "//\n" + broken + "//\n" + truncated
    p = tmp_path / "bad.dat"
    p.write_text(text)
    with pytest.raises(DataError) as err:
        read_swissprot(p)
    msg = str(err.value)
    bad_line = text.splitlines().index("FT   ZN_FING         55..x77") + 1
    assert "ZTST2_MOUSE" in msg and f"{p}:" in msg
    assert str(bad_line) in msg or str(text.splitlines().index(broken.splitlines()[0]) + 1) in msg
    policy = InputPolicy(on_error="skip")
    recs = read_swissprot(p, policy)
    assert [r.id for r in recs] == ["X9A001"]
    assert policy.skipped["malformed"] == 2


def test_flatfile_length_mismatch_is_caught(tmp_path):
    text = (FIX / "swissprot_features.dat").read_text().split("//\n")[2] + "//\n"
    text = text.replace("82 AA.", "90 AA.", 1)
    p = tmp_path / "short.dat"
    p.write_text(text)
    with pytest.raises(DataError, match="ID line says 90 AA"):
        read_swissprot(p)


def test_tsv_bad_location_names_column(tmp_path):
    lines = (FIX / "uniprot_features.tsv").read_text().splitlines()
    lines[2] = lines[2].replace("ZN_FING 27..49", "ZN_FING 27..4x9")
    p = tmp_path / "bad.tsv"
    p.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError) as err:
        read_uniprot_tsv(p)
    assert f"{p}:3" in str(err.value) and "Zinc finger" in str(err.value) and "X9A002" in str(err.value)


def test_missing_file_names_the_path(tmp_path):
    with pytest.raises(DataError, match="file not found"):
        read_fasta(tmp_path / "nope.fasta")


def test_read_samples_tells_the_format_and_applies_the_policy(tmp_path):
    from core.errors import DataError
    from domains.protein.readers import detect_format, read_samples

    fixtures = Path(__file__).parent / "fixtures" / "protein"
    assert detect_format(fixtures / "uniprot_features.tsv") == "uniprot_tsv"
    assert detect_format(fixtures / "swissprot_small.dat") == "swissprot"
    fasta = tmp_path / "mine"
    fasta.write_text(">a\nMKV\n>b\nMK1V\n")
    assert detect_format(fasta) == "fasta"
    with pytest.raises(DataError, match=r"mine:3.*record b"):
        read_samples(fasta)
    samples, skipped = read_samples(fasta, on_error="skip")
    assert [s.id for s in samples] == ["a"] and skipped == {"bad_characters": 1}
    tsv, _ = read_samples(fixtures / "uniprot_features.tsv")
    assert tsv[0].id == "X9A001" and tsv[0].text.startswith("MKLLVLG")
    flat, _ = read_samples(fixtures / "swissprot_small.dat")
    assert flat and all(s.text for s in flat)

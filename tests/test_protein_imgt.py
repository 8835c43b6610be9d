"""IMGT numbering and regions: a known therapeutic antibody, the conversion of ANARCII output, the cache."""

from __future__ import annotations

import pytest

from domains.protein.abnativ_data import parse_gene_calls, parse_paired_id
from domains.protein.imgt import Numbering, NumberingCache, from_anarcii, number_chains, region_of

# Trastuzumab (Herceptin) variable domains; IMGT CDRs as listed by IMGT/mAb-DB.
TRAS_H = ("EVQLVESGGGLVQPGGSLRLSCAASGFNIKDTYIHWVRQAPGKGLEWVARIYPTNGYTRYADSVKGRFTISADTSKNTAYLQMNSLRAEDTAVYYC"
          "SRWGGDGFYAMDYWGQGTLVTVSS")
TRAS_L = "DIQMTQSPSSLSASVGDRVTITCRASQDVNTAVAWYQQKPGKAPKLLIYSASFLYSGVPSRFSGSRSGTDFTLTISSLQPEDFATYYCQQHYTTPPTFGQGTKVEIK"


def test_region_boundaries():
    assert [region_of(p) for p in (1, 26, 27, 38, 39, 55, 56, 65, 66, 104, 105, 117, 118, 128)] == [
        "FR1", "FR1", "CDR1", "CDR1", "FR2", "FR2", "CDR2", "CDR2", "FR3", "FR3", "CDR3", "CDR3", "FR4", "FR4"]
    assert region_of(0) is None and region_of(129) is None


def test_anarcii_output_maps_onto_sequence_indices_with_gaps_and_insertions():
    seq = "QVQLAAC"
    result = {"numbering": [((1, " "), "Q"), ((2, " "), "V"), ((3, " "), "-"), ((26, " "), "Q"),
                            ((27, " "), "L"), ((111, "A"), "A"), ((112, " "), "A")],
              "chain_type": "H", "score": 25.0, "query_start": 0, "query_end": 6, "error": None}
    n = from_anarcii(seq, result)
    assert n.error is None and n.chain == "heavy"
    assert [r[0] for r in n.residues] == [0, 1, 2, 3, 4, 5]
    assert n.region_spans() == [("FR1", 0, 3), ("CDR1", 3, 4), ("CDR3", 4, 6)]
    shifted = from_anarcii("MQVQLAAC", {**result, "query_start": 1})
    assert shifted.residues[0][0] == 1
    bad = from_anarcii("QVQLAAC", {**result, "query_start": 1})
    assert bad.error and not bad.residues


def test_cache_round_trip(tmp_path):
    cache = NumberingCache(tmp_path / "n.sqlite", tag="t")
    n = Numbering("K", [(0, 1, ""), (1, 2, "")], 20.0, None)
    cache.put_many({"DI": n})
    assert cache.get_many(["DI", "XX"]) == {"DI": n}
    assert NumberingCache(tmp_path / "n.sqlite", tag="other").get_many(["DI"]) == {}


def test_trastuzumab_imgt_regions(tmp_path):
    pytest.importorskip("anarcii")
    cache = NumberingCache(tmp_path / "n.sqlite")
    heavy, light = number_chains([TRAS_H, TRAS_L], cache=cache, progress=False)
    assert heavy.chain == "heavy" and light.chain == "kappa"
    got_h = {r: TRAS_H[a:b] for r, a, b in heavy.region_spans()}
    got_l = {r: TRAS_L[a:b] for r, a, b in light.region_spans()}
    assert got_h["CDR1"] == "GFNIKDTY" and got_h["CDR2"] == "IYPTNGYT" and got_h["CDR3"] == "SRWGGDGFYAMDY"
    assert got_l["CDR1"] == "QDVNTA" and got_l["CDR2"] == "SAS" and got_l["CDR3"] == "QQHYTTPPT"
    assert got_h["FR4"] == "WGQGTLVTVSS" and got_h["FR1"] == "EVQLVESGGGLVQPGGSLRLSCAAS"
    # second call is served from the cache, identical
    again = number_chains([TRAS_H], cache=cache, progress=False)
    assert again[0] == heavy


def test_gene_calls_and_paired_ids():
    meta = parse_paired_id("pairedAbNGS_PRJEB53053|ERR9767742|human|TCTGGAACATTACGAC|"
                           "IGHV5-51*01_IGHD3-16*03_IGHJ4*02_IGHA1|IGKV4-1*01_IGKJ1*01_IGKC|ARMGRIDNYNSGWDH|QQYYSTPWT")
    assert meta["species"] == "human" and meta["heavy_v_family"] == "IGHV5"
    assert meta["heavy_j_gene"] == "IGHJ4" and meta["heavy_isotype"] == "IgA1"
    assert meta["light_locus"] == "kappa" and meta["light_v_gene"] == "IGKV4-1"
    assert meta["heavy_cdr3"] == "ARMGRIDNYNSGWDH"
    assert parse_gene_calls("IGKV1D-33*01_IGKJ4*01")["v_family"] == "IGKV1"
    assert parse_gene_calls("IGHV4-39*01_IGHJ5*02_IGHD")["isotype"] == "IgD"
    assert parse_paired_id("pIgGen_797733") == {}


def test_region_concepts_for_the_case_study():
    import pandas as pd

    from domains.protein.records import ProteinRecord
    from domains.protein.studies.antibody_regions import chain_labels, region_concepts

    seq = "QVQLAAC"
    n = from_anarcii(seq, {"numbering": [((1, " "), "Q"), ((2, " "), "V"), ((26, " "), "Q"), ((27, " "), "L"),
                                         ((60, " "), "A"), ((111, "A"), "A"), ((112, " "), "C")],
                           "chain_type": "K", "score": 25.0, "query_start": 0, "error": None})
    recs = [ProteinRecord("a_L", seq, meta={"chain": "kappa", "v_family": "IGKV1"}),
            ProteinRecord("b_L", seq, meta={"chain": "lambda", "v_family": "IGLV1"})]
    rc = region_concepts([n, n], include_amino_acids=True, records=recs)
    tokens = pd.DataFrame({"sample": [0] * 7 + [1] * 7, "position": list(range(7)) * 2})
    cm = rc.matrix(tokens)
    def rows(name):
        return cm.values[:, cm.names.index(name)].toarray().ravel()
    assert rows("IMGT:FR1")[:7].tolist() == [1, 1, 1, 0, 0, 0, 0]
    assert rows("IMGT:CDR3")[:7].tolist() == [0, 0, 0, 0, 0, 1, 1]
    cdr_any = rows("IMGT:CDR_any")[:7]
    assert (cdr_any > 0).tolist() == [False, False, False, True, True, True, True]
    assert len({cdr_any[3], cdr_any[4], cdr_any[5]}) == 3  # each CDR its own instance
    assert rows("aa:C")[:7].tolist() == [0, 0, 0, 0, 0, 0, 1]
    labels = chain_labels(recs, min_count=1)
    assert labels["chain=kappa"].tolist() == [True, False]


def test_imgt_regions_annotator_marks_cdrs_and_leaves_non_antibodies_bare(tmp_path, monkeypatch):
    pytest.importorskip("anarcii")
    from core.samples import Sample
    from domains.protein.imgt import ImgtRegions

    monkeypatch.setenv("SPARSESCOPE_CACHE", str(tmp_path))
    lysozyme = "KVFGRCELAAAMKRHGLDNYRGYSLGNWVCAAKFESNFNTQATNRNTDGSTDYGILQINSRWWCNDGRTPGSKNLCNIPCSALLSSDITASVNCAKKIVSDGNGMNAWVAWRNRCKGTDVQAWIRGCRL"
    heavy, other = ImgtRegions()([Sample("tras_H", TRAS_H), Sample("lyz", lysozyme)])
    assert other is None
    cdr3 = "".join(TRAS_H[p] for p, r in zip(heavy["position"], heavy["region"], strict=True) if r == "CDR3")
    assert cdr3 == "SRWGGDGFYAMDY"
    assert heavy["imgt"][heavy["region"].index("CDR3")] == "105"

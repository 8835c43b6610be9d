"""The broad offline corpus: deduplication, packing, the fixed split, and each reader on a
planted miniature of its Debian file format (the real packages are read in the slow test)."""

from __future__ import annotations

import gzip
import json
import struct
import zlib
from pathlib import Path

import pytest

from core.errors import DataError, MissingDependencyError
from domains.text import broad, sources
from domains.text.debian import locate
from domains.text.rstrings import read_character_vectors


def test_dedup_drops_repeats_across_sources_and_keeps_short_lines():
    long = "It is a truth universally acknowledged, that a single man in possession of a good fortune."
    paras = [("austen", long), ("fortunes", long.upper() + "!"), ("austen", "Yes."), ("austen", "Yes."),
             ("gcide", "A different paragraph that is long enough to be compared with the others.")]
    out = list(broad.dedup(paras, min_chars=50))
    assert [s for s, _ in out] == ["austen", "austen", "austen", "gcide"]
    assert sum(p == "Yes." for _, p in out) == 2


def test_pack_respects_the_limit_and_never_mixes_sources():
    paras = [("a", "x" * 30), ("a", "y" * 30), ("a", "z" * 30), ("b", "w" * 10), ("b", "S. " * 40)]
    docs = list(broad.pack(paras, max_chars=70))
    assert all(len(t) <= 70 for _, t in docs)
    assert [s for s, _ in docs].count("a") == 2
    assert all(set(t.replace("\n", "")) <= ({"x", "y", "z"} if s == "a" else {"w", "S", ".", " "}) for s, t in docs)
    joined = "".join(t.replace("\n", "") for s, t in docs if s == "a")
    assert joined == "x" * 30 + "y" * 30 + "z" * 30


def test_heldout_split_depends_on_text_alone():
    texts = [f"document number {i} with some words" for i in range(2000)]
    held = [t for t in texts if broad.is_heldout(t, 50)]
    assert 50 < len(held) < 150
    assert held == [t for t in reversed(texts) if broad.is_heldout(t, 50)][::-1]


def _xdr_strings(strings: list[str | None]) -> bytes:
    out = b"X\n" + struct.pack(">iii", 3, 0x040400, 0x030500) + struct.pack(">i", 5) + b"UTF-8"
    out += struct.pack(">ii", 16, len(strings))
    for s in strings:
        if s is None:
            out += struct.pack(">ii", 9, -1)
        else:
            b = s.encode()
            out += struct.pack(">ii", 0x00040009, len(b)) + b
    return out


def test_r_lazy_load_database_strings_are_read_back(tmp_path):
    books = [["EMMA", "", "Emma Woodhouse, handsome, clever, and rich,", None, "“Poor Miss Taylor!”"],
             ["PERSUASION", "Sir Walter Elliot"]]
    blob = b""
    for b in books:
        raw = _xdr_strings(b)
        blob += struct.pack(">I", len(raw)) + zlib.compress(raw)
    path = tmp_path / "Rdata.rdb"
    path.write_bytes(blob)
    got = read_character_vectors(path)
    assert got == [[s or "" for s in b] for b in books]
    path.write_bytes(blob[:-7])
    with pytest.raises(DataError):
        read_character_vectors(path)


def _dictd(tmp_path: Path, stem: str, entries: dict[str, str]) -> None:
    text, index, b64 = b"", [], sources._B64

    def enc(n: int) -> str:
        s = ""
        while True:
            s = b64[n % 64] + s
            n //= 64
            if not n:
                return s

    for head, body in entries.items():
        raw = body.encode()
        index.append(f"{head}\t{enc(len(text))}\t{enc(len(raw))}")
        index.append(f"{head.lower()}-alias\t{enc(len(text))}\t{enc(len(raw))}")
        text += raw
    d = tmp_path / "usr/share/dictd"
    d.mkdir(parents=True, exist_ok=True)
    (d / f"{stem}.dict.dz").write_bytes(gzip.compress(text))
    (d / f"{stem}.index").write_text("00-database-info\tA\tB\n" + "\n".join(index) + "\n")


def test_gcide_reader_strips_markup_and_reads_each_entry_once(tmp_path):
    _dictd(tmp_path, "gcide", {
        "Affect": "Affect \\Af*fect\"\\, v. t. [L. affectus.]\n   1. To act upon; see {Fact}.\n"
                  "      [1913 Webster]\n\n            As might affect the earth with cold heat. --Milton.\n"
                  "      [1913 Webster]\n",
        "Ale": "Ale \\Ale\\, n.\n   A fermented liquor. [WordNet 1.5]\n"})
    got = list(sources.gcide(lambda pkg, rel: locate(pkg, rel, roots=[tmp_path])))
    assert got == ["Affect , v. t. [L. affectus.] 1. To act upon; see Fact.",
                   "As might affect the earth with cold heat. --Milton.", "Ale , n. A fermented liquor."]


def test_wordnet_and_fortune_readers(tmp_path):
    wn = tmp_path / "usr/share/wordnet"
    wn.mkdir(parents=True)
    line = ("00001740 03 n 02 entity 0 physical_thing(a) 0 003 ~ 00001930 n 0000 | that which is perceived "
            "or known; \"an entity of its own\"  \n")
    for pos in ("noun", "verb", "adj", "adv"):
        (wn / f"data.{pos}").write_text("  1 This software and database is provided\n" + (line if pos == "noun" else ""))
    got = list(sources.wordnet(lambda pkg, rel: locate(pkg, rel, roots=[tmp_path])))
    assert got == ['entity, physical thing: that which is perceived or known; "an entity of its own"']
    fd = tmp_path / "usr/share/games/fortunes"
    fd.mkdir(parents=True)
    (fd / "people").write_text("")
    (fd / "people.u8").write_text("A bore talks\nabout himself.\n\t\t-- Anon\n%\nSecond one.\n%\n")
    (fd / "art.u8").write_text("  /\\_/\\\n%\n")
    got = list(sources.fortunes(lambda pkg, rel: locate(pkg, rel, roots=[tmp_path])))
    assert got == ["A bore talks about himself. -- Anon", "Second one."]


def test_missing_package_and_missing_corpus_file_are_one_clear_error(tmp_path):
    with pytest.raises(MissingDependencyError, match="dict-gcide.*fix: python3 -m domains.text.broad fetch"):
        locate("dict-gcide", "usr/share/dictd/gcide.dict.dz", roots=[tmp_path])
    with pytest.raises(DataError, match="does not exist"):
        broad.corpus_samples(str(tmp_path / "nope.txt"))


def test_local_corpus_files(tmp_path):
    txt = tmp_path / "c.txt"
    txt.write_text("First document\nstill first.\n\nSecond document.\n")
    got = broad.file_samples(txt, split="all")
    assert [s.text for s in got] == ["First document still first.", "Second document."]
    jl = tmp_path / "c.jsonl"
    jl.write_text(json.dumps({"text": "one"}) + "\n" + json.dumps({"txt": "bad"}) + "\n")
    with pytest.raises(DataError, match="record 2"):
        broad.file_samples(jl)


def test_build_dedups_packs_and_splits_planted_sources():
    from domains.text.sources import Source

    dup = "The same long sentence appears in two packages and must be kept only once overall."
    a = Source("a", "pa", "PD", "prose", lambda loc: iter([dup, "Short.", "A" * 60]))
    b = Source("b", "pb", "PD", "prose", lambda loc: iter([dup, "B" * 60]))
    docs = broad.build([a, b], locate=lambda *x: None, max_chars=200, heldout_permille=0)
    assert [d["source"] for d in docs] == ["a", "b"]
    assert sum(d["text"].count(dup) for d in docs) == 1
    assert {d["split"] for d in docs} == {"train"}


@pytest.mark.slow
def test_real_debian_corpus_is_broad():
    """The unpacked packages (``python3 -m domains.text.broad fetch``): every source reads, and
    the deduplicated corpus holds over 40M characters with prose and dialogue in it."""
    docs = broad.cached_corpus()
    by_source = {d["source"] for d in docs}
    assert by_source == {s.name for s in sources.SOURCES}
    assert sum(len(d["text"]) for d in docs) > 40_000_000
    assert any("Mr. Darcy" in d["text"] for d in docs if d["source"] == "austen")
    assert 0.01 < sum(d["split"] == "heldout" for d in docs) / len(docs) < 0.03

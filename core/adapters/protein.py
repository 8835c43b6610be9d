"""What every protein language model adapter shares: residue checks, long-sequence windows,
a token map read from the model's own vocab.txt, and the BERT/ESM encoder hook layout.

A residue's position is its 0-based index in the sequence; CLS/BOS, EOS/SEP, chain and
species tags and padding get -1. A sequence longer than the model's window is either
skipped (counted, with a warning), refused, or cut into overlapping windows; each residue
then keeps its position only in the window where it sits farthest from an edge, so every
residue is harvested exactly once and with the most context.
"""

from __future__ import annotations

import logging
from abc import abstractmethod
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

from core.adapters.base import Batch
from core.adapters.hooks import HookSpec, TorchHookAdapter
from core.errors import ConfigError, DataError
from core.samples import Sample

log = logging.getLogger("sparsescope")

STANDARD_AA = "ACDEFGHIKLMNPQRSTVWY"
MAX_IDS = 100


class VocabMap:
    """Token <-> id map built from a vocab.txt (one token per line, id = line number).

    transformers 5 silently ignores ``vocab_file=`` for BERT tokenizers built the old way
    (AntiBERTy, IgLM), so the map is read from the shipped file directly.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        if not self.path.exists():
            raise DataError("vocabulary file does not exist", path=str(self.path),
                            fix="point the model config at the folder that holds vocab.txt")
        tokens = [line.rstrip("\n") for line in self.path.read_text().splitlines()]
        self.id_to_token = [t.strip() for t in tokens]
        self.token_to_id = {t: i for i, t in enumerate(self.id_to_token) if t}
        special = [t for t in self.id_to_token if (t.startswith("[") and t.endswith("]"))
                   or (t.startswith("<") and t.endswith(">"))]
        self.all_special_ids = [self.token_to_id[t] for t in special]
        self.pad_token_id = self._first("[PAD]", "<pad>")
        self.unk_token_id = self._first("[UNK]", "<unk>")
        self.cls_token_id = self._first("[CLS]", "<cls>")
        self.sep_token_id = self._first("[SEP]", "<eos>")
        self.mask_token_id = self._first("[MASK]", "<mask>")

    def _first(self, *names: str) -> int | None:
        return next((self.token_to_id[n] for n in names if n in self.token_to_id), None)

    def __len__(self) -> int:
        return len(self.id_to_token)

    @property
    def vocab_size(self) -> int:
        return len(self)

    def convert_tokens_to_ids(self, tokens: str | Sequence[str]) -> int | list[int]:
        if isinstance(tokens, str):
            return self.token_to_id.get(tokens, self.unk_token_id)
        return [self.token_to_id.get(t, self.unk_token_id) for t in tokens]

    def convert_ids_to_tokens(self, ids: Sequence[int]) -> list[str]:
        return [self.id_to_token[int(i)] for i in ids]

    def decode(self, ids: Sequence[int], skip_special_tokens: bool = True) -> str:
        special = set(self.all_special_ids)
        toks = [self.id_to_token[int(i)] for i in ids if not (skip_special_tokens and int(i) in special)]
        return "".join(toks)


def windows(n: int, width: int, overlap: int) -> list[tuple[int, int, int, int]]:
    """Overlapping windows ``(start, end, own_start, own_end)`` covering ``range(n)``."""
    if n <= width:
        return [(0, n, 0, n)]
    if not 0 <= overlap < width:
        raise ConfigError(f"overlap {overlap} must be in [0, {width})", fix="set model.overlap smaller")
    starts = list(range(0, n - width, width - overlap)) + [n - width]
    spans = [(s, s + width) for s in dict.fromkeys(starts)]
    out = []
    for k, (s, e) in enumerate(spans):
        own_s = 0 if k == 0 else (s + spans[k - 1][1]) // 2
        own_e = n if k == len(spans) - 1 else (spans[k + 1][0] + e) // 2
        out.append((s, e, own_s, own_e))
    return out


def encoder_hook_specs(layers: nn.ModuleList) -> dict[str, HookSpec]:
    """Hook points of a BERT/ESM-style transformers encoder (``layer.attention.output.dense``,
    ``layer.intermediate``, ``layer.output.dense``)."""
    specs: dict[str, HookSpec] = {}
    for i, layer in enumerate(layers):
        specs[f"blocks.{i}.hook_resid_pre"] = HookSpec(layer, "input")
        specs[f"blocks.{i}.hook_attn_out"] = HookSpec(layer.attention.output.dense, "output")
        specs[f"blocks.{i}.hook_mlp_in"] = HookSpec(layer.intermediate, "input")
        specs[f"blocks.{i}.hook_mlp_out"] = HookSpec(layer.output.dense, "output")
        specs[f"blocks.{i}.hook_resid_post"] = HookSpec(layer, "output")
    return specs


class ProteinAdapter(TorchHookAdapter):
    """Residue validation and batching shared by the protein adapters.

    Subclasses set ``alphabet``, ``max_residues``, ``pad_id``, ``objective`` ("mlm" or
    "clm") and implement ``frame`` (residue ids -> token ids with special tokens).
    """

    alphabet: str = STANDARD_AA
    max_residues: int | None = None
    pad_id: int = 0
    objective: str = "mlm"
    mask_token_id: int | None = None

    def setup_inputs(self, *, on_unknown: str = "error", long_sequences: str = "chunk", overlap: int = 128,
                     uppercase: bool = True) -> None:
        if on_unknown not in ("error", "skip"):
            raise ConfigError(f"on_unknown={on_unknown!r}", fix="use on_unknown=error or on_unknown=skip")
        if long_sequences not in ("chunk", "skip", "error"):
            raise ConfigError(f"long_sequences={long_sequences!r}", fix="use chunk, skip or error")
        self.on_unknown, self.long_sequences, self.overlap, self.uppercase = on_unknown, long_sequences, overlap, uppercase
        self.skipped: Counter[str] = Counter()
        self.skipped_ids: dict[str, list[str]] = {}
        self.chunked: dict[str, int] = {}

    @abstractmethod
    def residue_ids(self, residues: str) -> list[int]:
        """Token ids of residue letters (already validated)."""

    @abstractmethod
    def frame(self, ids: list[int], sample: Sample) -> tuple[list[int], list[int]]:
        """Add the model's special tokens; returns token ids and the index into ``ids`` (-1 for specials)."""

    def clean(self, sample: Sample) -> str:
        seq = "".join(sample.text.split())
        return seq.upper() if self.uppercase else seq

    def _skip(self, reason: str, sample: Sample, detail: str) -> None:
        self.skipped[reason] += 1
        ids = self.skipped_ids.setdefault(reason, [])
        if len(ids) < MAX_IDS:
            ids.append(sample.id)
        log.warning("skipping sample %s: %s (%d skipped for this reason so far)", sample.id, detail,
                    self.skipped[reason])

    def check(self, sample: Sample) -> str | None:
        """The cleaned sequence, or None when the sample is skipped (and counted)."""
        seq = self.clean(sample)
        if not seq:
            raise DataError("empty sequence", record=sample.id, fix="remove the sample from the input")
        allowed = set(self.alphabet)
        bad = next(((i, c) for i, c in enumerate(seq) if c not in allowed), None)
        if bad is not None:
            i, c = bad
            detail = f"character {c!r} at residue {i + 1} is not in the {self.name} alphabet ({self.alphabet})"
            if self.on_unknown == "skip":
                self._skip("unknown_character", sample, detail)
                return None
            raise DataError(detail, record=sample.id,
                            fix="clean the sequence, or set model.on_unknown=skip to skip such samples")
        if self.max_residues and len(seq) > self.max_residues and self.long_sequences != "chunk":
            detail = f"{len(seq)} residues, more than the model's {self.max_residues}"
            if self.long_sequences == "skip":
                self._skip("too_long", sample, detail)
                return None
            raise DataError(detail, record=sample.id,
                            fix="set model.long_sequences=chunk (overlapping windows) or skip")
        return seq

    def tokenize(self, samples: Sequence[Sample], sample_index: Sequence[int] | None = None) -> Batch:
        index = list(sample_index) if sample_index is not None else list(range(len(samples)))
        rows: list[tuple[list[int], list[int], int]] = []
        for i, sample in zip(index, samples, strict=True):
            if isinstance(sample, str):
                sample = Sample(f"#{i}", sample)
            seq = self.check(sample)
            if seq is None:
                continue
            ids = self.residue_ids(seq)
            width = self.max_residues or len(seq)
            cuts = windows(len(seq), width, self.overlap)
            if len(cuts) > 1 and sample.id not in self.chunked:
                self.chunked[sample.id] = len(cuts)
                log.warning("sample %s: %d residues, more than the model's %d: cut into %d overlapping windows",
                            sample.id, len(seq), width, len(cuts))
            for start, end, own_s, own_e in cuts:
                tok, where = self.frame(ids[start:end], sample)
                pos = [start + w if w >= 0 and own_s <= start + w < own_e else -1 for w in where]
                rows.append((tok, pos, i))
        return self._pad(rows)

    def _pad(self, rows: list[tuple[list[int], list[int], int]]) -> Batch:
        n = len(rows)
        width = max((len(r[0]) for r in rows), default=0)
        input_ids = torch.full((n, width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((n, width), dtype=torch.long)
        positions = torch.full((n, width), -1, dtype=torch.long)
        for r, (tok, pos, _) in enumerate(rows):
            input_ids[r, :len(tok)] = torch.as_tensor(tok)
            mask[r, :len(tok)] = 1
            positions[r, :len(tok)] = torch.as_tensor(pos)
        index = torch.as_tensor([r[2] for r in rows], dtype=torch.long)
        return Batch(input_ids, mask, positions, index, {"special_mask": positions < 0})


class ClsSepFraming:
    """``[CLS] residues [SEP]`` framing for adapters whose ``tokenizer`` maps residue letters
    to ids (AntiBERTy, ESM-2 through transformers)."""

    def residue_ids(self, residues: str) -> list[int]:
        return [self.tokenizer.token_to_id[c] for c in residues]

    def frame(self, ids: list[int], sample: Sample) -> tuple[list[int], list[int]]:
        tok = [self.tokenizer.cls_token_id, *ids, self.tokenizer.sep_token_id]
        return tok, [-1, *range(len(ids)), -1]

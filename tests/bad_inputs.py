"""Malformed inputs a user can hand to the command line, each with the command that reads it.

Every case is one way a real file goes wrong (a download cut short, a header typed by hand,
a folder where a file was meant, a shard edited after its checksum was taken...). A case
builds its file(s) under a folder, names the ``sparsescope`` arguments a user would type,
and what the one-line message must contain. ``tests/test_bad_input_matrix.py`` runs them all.
"""

from __future__ import annotations

import gzip
import json
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from core.checkpoint import save_sae
from core.dictionaries import DictionaryConfig, build_dictionary
from core.store import ShardWriter

HARVEST = ["stage=harvest", "model=antiberty", "+harvest=default"]
D = 8


@dataclass
class Case:
    name: str
    build: Callable[[Path], list[str]]
    expect: str
    exit_code: int = 2
    needs_model: bool = False
    results: Callable[[dict], bool] | None = None
    meta: dict = field(default_factory=dict)


def _text(root: Path, name: str, text: str) -> Path:
    p = root / name
    p.write_text(text)
    return p


def _harvest(path: Path, *extra: str) -> list[str]:
    return [*HARVEST, f"harvest.fasta={path}", *extra]


def _store(root: Path, n: int = 24) -> Path:
    w = ShardWriter(root, model="toy", hook="blocks.0.hook_resid_post", d=D, shard_tokens=32)
    g = torch.Generator().manual_seed(0)
    for s in range(0, n, 4):
        k = 4 * 6
        w.add(torch.randn(k, D, generator=g), torch.arange(s, s + 4).repeat_interleave(6),
              torch.arange(6).repeat(4), torch.zeros(k, dtype=torch.long), samples_done=s + 4)
    w.close()
    return root


def _train(store: Path) -> list[str]:
    return ["stage=train", f"data.root={store}", "data.batch_size=32", "trainer.total_tokens=64"]


def _nan_store(root: Path) -> list[str]:
    store = _store(root / "store")
    shard = sorted(store.glob("shard_*.safetensors"))[0]
    tensors = load_file(str(shard))
    tensors["acts"][3, 2] = float("nan")
    save_file(tensors, str(shard))
    manifest = json.loads((store / "manifest.json").read_text())
    import hashlib

    for entry in manifest["shards"]:
        if entry["file"] == shard.name:
            entry["sha256"] = hashlib.sha256(shard.read_bytes()).hexdigest()
    (store / "manifest.json").write_text(json.dumps(manifest))
    return _train(store)


def _flipped_store(root: Path) -> list[str]:
    store = _store(root / "store")
    shard = sorted(store.glob("shard_*.safetensors"))[0]
    raw = bytearray(shard.read_bytes())
    raw[-3] ^= 0xFF
    shard.write_bytes(bytes(raw))
    return _train(store)


def _no_manifest(root: Path) -> list[str]:
    store = _store(root / "store")
    (store / "manifest.json").unlink()
    return _train(store)


def _sae(root: Path, d_in: int = D, d_sae: int = 16) -> Path:
    return save_sae(build_dictionary(DictionaryConfig("relu", d_in=d_in, d_sae=d_sae)), root)


def _compare(a: Path, b: Path) -> list[str]:
    return ["stage=compare", f"compare.a={a}", f"compare.b={b}"]


def _sae_without_cfg(root: Path) -> list[str]:
    a = _sae(root / "a")
    (a / "cfg.json").unlink()
    return _compare(a, _sae(root / "b"))


def _sae_bad_json(root: Path) -> list[str]:
    a = _sae(root / "a")
    (a / "cfg.json").write_text('{"d_in": 8, "d_sae": ')
    return _compare(a, _sae(root / "b"))


def _sae_truncated_weights(root: Path) -> list[str]:
    a = _sae(root / "a")
    w = a / "sae_weights.safetensors"
    w.write_bytes(w.read_bytes()[:100])
    return _compare(a, _sae(root / "b"))


def _sae_shape_mismatch(root: Path) -> list[str]:
    a = _sae(root / "a")
    cfg = json.loads((a / "cfg.json").read_text())
    cfg["d_sae"] = 32
    (a / "cfg.json").write_text(json.dumps(cfg))
    return _compare(a, _sae(root / "b"))


def _gz_cut(root: Path) -> list[str]:
    data = gzip.compress((">a\n" + "ACDEFGHIK" * 200 + "\n").encode())
    p = root / "cut.fasta.gz"
    p.write_bytes(data[: len(data) // 2])
    return _harvest(p)


def _garbage(root: Path) -> list[str]:
    p = root / "garbage.fasta"
    p.write_bytes(bytes(random.Random(0).randrange(256) for _ in range(400)))
    return _harvest(p)


LONG = ">long\n" + "ACDEFGHIKLMNPQRSTVWY" * 30 + "\n>short\nEVQLVESGGGLVQPGG\n"

CASES = [
    Case("fasta: text before the first header",
         lambda r: _harvest(_text(r, "pre.fasta", "my sequences\n>a\nMKV\n")), "text before the first '>'"),
    Case("fasta: binary garbage", _garbage, "before the first '>'"),
    Case("fasta: the same id twice",
         lambda r: _harvest(_text(r, "dup.fasta", ">a\nMKV\n>a\nMKL\n")), "appears more than once"),
    Case("fasta: empty file", lambda r: _harvest(_text(r, "empty.fasta", "")), "no sequences"),
    Case("fasta: header without residues",
         lambda r: _harvest(_text(r, "hollow.fasta", ">a\n>b\nMKV\n")), "empty sequence"),
    Case("fasta: digits in a sequence",
         lambda r: _harvest(_text(r, "digits.fasta", ">a\nMK1V\n")), "non-amino-acid characters ['1']"),
    Case("fasta: not gzip behind .gz",
         lambda r: _harvest(_text(r, "fake.fasta.gz", ">a\nMKV\n")), "BadGzipFile"),
    Case("fasta: gzip cut short", _gz_cut, "cannot read the file"),
    Case("fasta: a folder", lambda r: _harvest(r), "is a folder"),
    Case("fasta: missing file", lambda r: _harvest(r / "nowhere.fasta"), "does not exist"),
    Case("fasta: residue the model has no token for",
         lambda r: _harvest(_text(r, "b.fasta", ">b1\nEVQLBESG\n")), "not in the antiberty alphabet",
         needs_model=True),
    Case("fasta: longer than the model, long_sequences=error",
         lambda r: _harvest(_text(r, "long.fasta", LONG), "model.long_sequences=error"),
         "more than the model's", needs_model=True),
    Case("fasta: longer than the model, long_sequences=skip (counted)",
         lambda r: _harvest(_text(r, "long.fasta", LONG), "model.long_sequences=skip"), "", exit_code=0,
         needs_model=True,
         results=lambda res: all(h["skipped"] == {"too_long": 1} and h["skipped_ids"] == {"too_long": ["long"]}
                                 for h in res["harvest"].values())),
    Case("fasta: longer than the model, chunked (counted)",
         lambda r: _harvest(_text(r, "long.fasta", LONG)), "", exit_code=0, needs_model=True,
         results=lambda res: all(h["chunked"] == 1 and "long" in h["chunked_ids"] for h in res["harvest"].values())),
    Case("fasta: duplicate id with on_error=skip (counted)",
         lambda r: _harvest(_text(r, "dup.fasta", ">a\nEVQLV\n>a\nEVQLL\n"), "harvest.on_error=skip"), "",
         exit_code=0, needs_model=True, results=lambda res: res["reader_skipped"] == {"duplicate_id": 1}),
    Case("swiss-prot: record cut before //",
         lambda r: _harvest(_text(r, "cut.dat", "ID   X_HUMAN   Reviewed;   5 AA.\nAC   P1;\nSQ   SEQUENCE   5 AA;\n"
                                                "     MKV")), "cut.dat"),
    Case("uniprot tsv: no Sequence column",
         lambda r: _harvest(_text(r, "noseq.tsv", "Entry\tLength\nP1\t5\n")), "Sequence column"),
    Case("uniprot tsv: a row with a missing cell",
         lambda r: _harvest(_text(r, "ragged.tsv", "Entry\tSequence\tLength\nP1\tMKV\n")), "columns where the header"),
    Case("uniprot tsv: NUL byte", lambda r: _harvest(_text(r, "nul.tsv", "Entry\tSequence\nP1\tMK\0V\n")), "nul.tsv"),
    Case("activations: NaN in a shard (checksum matching)", _nan_store, "NaN"),
    Case("activations: a shard changed after harvest", _flipped_store, "checksum"),
    Case("activations: folder without manifest", _no_manifest, "manifest"),
    Case("sae folder: no cfg.json", _sae_without_cfg, "cfg.json"),
    Case("sae folder: cfg.json cut short", _sae_bad_json, "cfg.json"),
    Case("sae folder: weights cut short", _sae_truncated_weights, "sae_weights.safetensors"),
    Case("sae folder: cfg.json width does not match the weights", _sae_shape_mismatch, "d_sae=32 at the top"),
    Case("corpus: the general dictionaries' corpus file does not exist",
         lambda r: ["case_study=general_dictionaries", f"general.corpus.source={r / 'no_corpus.txt'}"],
         "corpus file does not exist"),
    Case("config: unknown key", lambda r: ["no_such_key=1"], "no_such_key", exit_code=-1),
    Case("config: unknown stage", lambda r: ["stage=polish"], "unknown stage 'polish'"),
]

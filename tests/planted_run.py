"""A trained run with a planted truth, built in seconds: a toy protein model whose hidden state
marks the residues of a motif, and a dictionary whose feature 0 reads exactly that mark.

The model is a real (tiny) network: one-hot residues, a convolution that matches ``KDEL``,
and a second one that spreads each match over the motif's four residues; the hook output is
``[one-hot (20), in-motif (1), pad]``. Feature 0 of the ReLU dictionary fires (value 1) on
motif residues and nowhere else, feature 1 on every tryptophan; features 2-7 never fire.
The run folder holds what a case study leaves: ``.hydra/config.yaml`` (model block), an
activation store, ``sae/`` and ``enrichment/`` from the real enrichment stage.
"""

from __future__ import annotations

import random
from pathlib import Path

import pandas as pd
import torch
from omegaconf import OmegaConf
from torch import nn

from core.adapters.base import Batch
from core.adapters.hooks import HookSpec
from core.adapters.protein import STANDARD_AA, ClsSepFraming, ProteinAdapter, VocabMap
from core.samples import Sample

MOTIF = "KDEL"
HOOK = "blocks.0.hook_resid_post"
NO_MOTIF_AA = STANDARD_AA.replace("K", "")


class MotifNet(nn.Module):
    def __init__(self, vocab: VocabMap, extra: int) -> None:
        super().__init__()
        self.aa_ids = torch.as_tensor([vocab.token_to_id[a] for a in STANDARD_AA])
        pattern = torch.zeros(1, 20, len(MOTIF))
        for j, a in enumerate(MOTIF):
            pattern[0, STANDARD_AA.index(a), j] = 1.0
        self.match = nn.Conv1d(20, 1, len(MOTIF), bias=False)
        self.spread = nn.Conv1d(1, 1, len(MOTIF), bias=False, padding=len(MOTIF) - 1)
        with torch.no_grad():
            self.match.weight.copy_(pattern)
            self.spread.weight.fill_(1.0)
        self.block0 = nn.Identity()
        self.extra = extra

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        onehot = (input_ids[..., None] == self.aa_ids).float()  # [B, T, 20]
        start = torch.relu(self.match(onehot.transpose(1, 2)) - (len(MOTIF) - 1))  # 1 where a motif starts
        inside = self.spread(start)[..., : onehot.shape[1]].clamp(max=1)  # [B, 1, T - 3 + 3]
        inside = nn.functional.pad(inside, (0, onehot.shape[1] - inside.shape[-1]))
        hidden = torch.cat([onehot, inside.transpose(1, 2), torch.zeros(*onehot.shape[:2], self.extra)], -1)
        return self.block0(hidden)


class ToyMotifAdapter(ClsSepFraming, ProteinAdapter):
    def __init__(self, vocab: str, *, name: str = "toy", extra: int = 3, on_unknown: str = "error") -> None:
        self.tokenizer = VocabMap(vocab)
        self.name, self.device = name, torch.device("cpu")
        self.model = MotifNet(self.tokenizer, extra).eval()
        self.d_model, self.n_layers, self.max_residues = 21 + extra, 1, 60
        self.pad_id = self.tokenizer.pad_token_id
        self.setup_inputs(on_unknown=on_unknown, long_sequences="chunk", overlap=16)

    def _build_hook_specs(self) -> dict[str, HookSpec]:
        return {HOOK: HookSpec(self.model.block0, "output")}

    def _run(self, batch: Batch) -> torch.Tensor:
        return self.model(batch.input_ids)


def toy_motif_adapter(vocab: str, name: str = "toy", extra: int = 3, on_unknown: str = "error") -> ToyMotifAdapter:
    return ToyMotifAdapter(vocab, name=name, extra=extra, on_unknown=on_unknown)


def write_vocab(path: Path) -> Path:
    path.write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *STANDARD_AA, "X"]) + "\n")
    return path


def motif_sequences(n: int, seed: int, prefix: str = "s") -> tuple[list[Sample], dict[str, list[tuple[int, int]]]]:
    """Random chains, most with one or two KDEL motifs (some at the very start or end, some past
    the model's 60-residue window); returns the samples and each one's motifs as 1-based
    inclusive (start, end)."""
    rng = random.Random(seed)
    samples, truth = [], {}
    for i in range(n):
        length = rng.randint(20, 90)
        seq = [rng.choice(NO_MOTIF_AA) for _ in range(length)]
        starts = []
        kind = i % 6
        if kind == 1:
            starts = [0]
        elif kind == 2:
            starts = [length - len(MOTIF)]
        elif kind in (3, 4):
            a = rng.randint(0, length // 2 - len(MOTIF))
            starts = [a, rng.randint(a + len(MOTIF) + 1, length - len(MOTIF))]
        elif kind == 5:
            starts = [rng.randint(0, length - len(MOTIF))]
        for a in starts:
            seq[a:a + len(MOTIF)] = list(MOTIF)
        sid = f"{prefix}{i}"
        samples.append(Sample(sid, "".join(seq)))
        truth[sid] = [(a + 1, a + len(MOTIF)) for a in sorted(starts)]
    return samples, truth


def planted_dictionary(d_in: int):
    from core.dictionaries.base import build_dictionary

    sae = build_dictionary({"architecture": "relu", "d_in": d_in, "d_sae": 8})
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in (sae.W_enc, sae.b_enc, sae.b_dec):
            p.zero_()
        sae.W_dec.copy_(torch.nn.functional.normalize(torch.randn(8, d_in, generator=g), dim=1))
        sae.W_enc[20, 0] = 2.0
        sae.W_enc[STANDARD_AA.index("W"), 1] = 2.0
        sae.b_enc.fill_(-1.0)
        sae.W_dec[0] = 0
        sae.W_dec[0, 20] = 1.0
        sae.W_dec[1] = 0
        sae.W_dec[1, STANDARD_AA.index("W")] = 1.0
    return sae


def build_run(root: Path, *, n_train: int = 60, enrich: bool = True) -> Path:
    """``root/run``: saved config, store, ``sae/`` and (``enrich``) ``enrichment/``."""
    from core.checkpoint import save_sae
    from core.enrich.concepts import ConceptMatrix
    from core.enrich.run import run_enrichment
    from core.harvest import harvest

    run = Path(root) / "run"
    vocab = write_vocab(Path(root) / "vocab.txt")
    model = {"_target_": "planted_run.toy_motif_adapter", "name": "toy", "vocab": str(vocab), "extra": 3}
    (run / ".hydra").mkdir(parents=True, exist_ok=True)
    OmegaConf.save(OmegaConf.create({"model": model, "domain": {"name": "swissprot"}}), run / ".hydra" / "config.yaml")
    adapter = toy_motif_adapter(str(vocab))
    samples, truth = motif_sequences(n_train, seed=1, prefix="train")
    store = harvest(adapter, samples, [HOOK], run / "activations", progress=False)[HOOK]
    sae = planted_dictionary(adapter.d_model)
    save_sae(sae, run / "sae", metadata={"hook_name": HOOK, "model_name": "toy"})
    if enrich:
        tok = store.load(columns=("sample", "position"))
        tokens = pd.DataFrame({"sample": tok["sample"].numpy(), "position": tok["position"].numpy()})
        spans = [(i, a - 1, b, "motif", f"{s.id}:{a}") for i, s in enumerate(samples) for a, b in truth[s.id]]
        spans += [(i, p, p + 1, "W", 0) for i, s in enumerate(samples) for p, c in enumerate(s.text) if c == "W"]
        cm = ConceptMatrix.from_spans(spans, tokens, pd.DataFrame({"name": ["motif", "W"],
                                                                   "kind": ["instance", "token"]}))
        splits = {i: ("train", "valid", "test")[i % 3] for i in range(len(samples))}
        run_enrichment(sae, store, cm, splits, run / "enrichment", min_positives=2, neuron_baseline=False,
                       report=False, umap=True, progress=False)
    return run


def write_fasta(samples: list[Sample], path: Path) -> Path:
    path.write_text("".join(f">{s.id}\n{s.text}\n" for s in samples))
    return path


def region_stub(samples) -> list[dict | None]:
    """A region annotator for tests: first half 'N', second half 'C' (None for odd ids)."""
    out = []
    for s in samples:
        n = len(s.text)
        out.append({"position": list(range(n)), "label": [f"#{p}" for p in range(n)],
                    "region": ["N" if p < n // 2 else "C" for p in range(n)]} if not s.id.endswith("1") else None)
    return out


def region_stub_factory():
    return region_stub


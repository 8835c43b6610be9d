"""IgLM (Shuai et al. 2023), a GPT-2 antibody language model shipped in the ``iglm`` wheel.

Non-commercial licence (see the iglm package), hence not the default protein model.
Input is ``[HEAVY|LIGHT] [SPECIES] residues [SEP]``: the chain and species tags condition
the model and get position -1, like [SEP]. Chain and species come from the sample's
``meta`` ("chain": heavy/light/H/L/VH/VL...; "species": human/mouse/...) or the config
defaults. ``generate_sequences`` samples new antibody sequences with a fixed seed.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch

from core.adapters.base import Batch
from core.adapters.causal_lm import decoder_hook_specs
from core.adapters.hooks import HookSpec
from core.adapters.loading import device_of, dtype_of, package_dir, quiet_transformers, require_path
from core.adapters.protein import STANDARD_AA, ProteinAdapter, VocabMap
from core.errors import ConfigError
from core.samples import Sample

CHAINS = {"heavy": "[HEAVY]", "h": "[HEAVY]", "vh": "[HEAVY]", "vhh": "[HEAVY]", "igh": "[HEAVY]",
          "light": "[LIGHT]", "l": "[LIGHT]", "vl": "[LIGHT]", "k": "[LIGHT]", "kappa": "[LIGHT]",
          "lambda": "[LIGHT]", "igk": "[LIGHT]", "igl": "[LIGHT]"}
SPECIES = {"camel": "[CAMEL]", "alpaca": "[CAMEL]", "llama": "[CAMEL]", "human": "[HUMAN]",
           "homo sapiens": "[HUMAN]", "mouse": "[MOUSE]", "mus musculus": "[MOUSE]", "rabbit": "[RABBIT]",
           "rat": "[RAT]", "rhesus": "[RHESUS]", "macaque": "[RHESUS]"}


def shipped_iglm(variant: str) -> tuple[Path, Path]:
    root = package_dir("iglm", "iglm") / "trained_models"
    return root / variant, root / "vocab.txt"


class IgLMAdapter(ProteinAdapter):
    objective = "clm"

    def __init__(self, path: str | None = None, vocab: str | None = None, *, variant: str = "IgLM-S",
                 name: str | None = None, chain: str = "heavy", species: str = "human", device: str | None = "auto",
                 dtype: str = "float32", on_unknown: str = "error", long_sequences: str = "chunk",
                 overlap: int = 128) -> None:
        from transformers import GPT2LMHeadModel

        if path is None and variant not in ("IgLM", "IgLM-S"):
            raise ConfigError(f"unknown IgLM variant {variant!r}", fix="use variant=IgLM or variant=IgLM-S")
        model_dir, default_vocab = shipped_iglm(variant) if path is None else (Path(path), Path(path).parent / "vocab.txt")
        model_dir = require_path(model_dir, "model folder")
        self.tokenizer = VocabMap(Path(vocab) if vocab else default_vocab)
        self.name = name or variant.lower()
        self.source = str(model_dir)
        self.device = device_of(device)
        with quiet_transformers():
            model = GPT2LMHeadModel.from_pretrained(model_dir, dtype=dtype_of(dtype))
        self.model = model.to(self.device).eval()
        cfg = self.model.config
        self.d_model, self.n_layers = cfg.n_embd, cfg.n_layer
        self.max_residues = cfg.n_positions - 3
        self.pad_id = self.tokenizer.pad_token_id
        self.alphabet = "".join(c for c in STANDARD_AA if c in self.tokenizer.token_to_id)
        self.default_chain, self.default_species = self.tag(chain, CHAINS), self.tag(species, SPECIES)
        self.setup_inputs(on_unknown=on_unknown, long_sequences=long_sequences, overlap=overlap)

    @staticmethod
    def tag(value: str, table: dict[str, str]) -> str:
        key = str(value).strip().lower()
        if key in table:
            return table[key]
        if str(value).upper().strip("[]") in {t.strip("[]") for t in table.values()}:
            return f"[{str(value).upper().strip('[]')}]"
        raise ConfigError(f"unknown IgLM tag {value!r}", fix=f"use one of {sorted(set(table))}")

    def residue_ids(self, residues: str) -> list[int]:
        return [self.tokenizer.token_to_id[c] for c in residues]

    def tags_for(self, sample: Sample) -> list[int]:
        chain = self.tag(sample.meta["chain"], CHAINS) if sample.meta.get("chain") else self.default_chain
        species = self.tag(sample.meta["species"], SPECIES) if sample.meta.get("species") else self.default_species
        return [self.tokenizer.token_to_id[chain], self.tokenizer.token_to_id[species]]

    def frame(self, ids: list[int], sample: Sample) -> tuple[list[int], list[int]]:
        tok = [*self.tags_for(sample), *ids, self.tokenizer.sep_token_id]
        return tok, [-1, -1, *range(len(ids)), -1]

    def _build_hook_specs(self) -> dict[str, HookSpec]:
        return decoder_hook_specs(self.model)

    def _run(self, batch: Batch) -> torch.Tensor:
        return self.model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits

    def generate_sequences(self, n: int, *, chain: str | None = None, species: str | None = None,
                           prompt: str = "", seed: int = 0, temperature: float = 1.0, top_p: float = 1.0,
                           max_residues: int = 150, batch_size: int = 16) -> list[str]:
        """Sample ``n`` antibody sequences (same seed -> same sequences), stopping at [SEP]/[CLS]."""
        chain_tag = self.tag(chain, CHAINS) if chain else self.default_chain
        species_tag = self.tag(species, SPECIES) if species else self.default_species
        start = [self.tokenizer.token_to_id[chain_tag], self.tokenizer.token_to_id[species_tag],
                 *self.residue_ids(prompt.upper())]
        allowed = torch.zeros(len(self.tokenizer), dtype=torch.bool)
        allowed[[self.tokenizer.token_to_id[c] for c in self.alphabet]] = True
        stops = [self.tokenizer.sep_token_id, self.tokenizer.cls_token_id]
        allowed[stops] = True
        import inspect

        cache_kw = "cache" if "cache" in inspect.signature(self.model.forward).parameters else "past_key_values"
        out: list[str] = []
        for first in range(0, n, batch_size):
            m = min(batch_size, n - first)
            gens = [torch.Generator(device="cpu").manual_seed(seed * 1_000_003 + first + r) for r in range(m)]
            ids = torch.as_tensor([start] * m, device=self.device)
            done = torch.zeros(m, dtype=torch.bool)
            residues: list[list[int]] = [[] for _ in range(m)]
            past = None
            with torch.no_grad():
                for _ in range(max_residues):
                    res = self.model(input_ids=ids, use_cache=True, **{cache_kw: past})
                    past = getattr(res, "cache", None) or getattr(res, "past_key_values", None)
                    logits = res.logits[:, -1].float().cpu()
                    logits[:, ~allowed] = float("-inf")
                    probs = _top_p(torch.softmax(logits / temperature, dim=-1), top_p)
                    nxt = torch.stack([torch.multinomial(probs[r], 1, generator=gens[r])[0] for r in range(m)])
                    for r in range(m):
                        if not done[r]:
                            if int(nxt[r]) in stops:
                                done[r] = True
                            else:
                                residues[r].append(int(nxt[r]))
                    if bool(done.all()):
                        break
                    ids = nxt[:, None].to(self.device)
            out.extend(prompt.upper() + self.tokenizer.decode(r) for r in residues)
        return out


def _top_p(probs: torch.Tensor, top_p: float) -> torch.Tensor:
    if top_p >= 1.0:
        return probs
    sorted_p, order = probs.sort(dim=-1, descending=True)
    keep = sorted_p.cumsum(-1) - sorted_p < top_p
    sorted_p = sorted_p * keep
    return torch.zeros_like(probs).scatter(-1, order, sorted_p)


def load_iglm(path: str | None = None, vocab: str | None = None, *, variant: str = "IgLM-S", name: str | None = None,
              chain: str = "heavy", species: str = "human", device: str | None = "auto", dtype: str = "float32",
              on_unknown: str = "error", long_sequences: str = "chunk", overlap: int = 128) -> IgLMAdapter:
    """Hydra target for ``conf/model/iglm.yaml``."""
    return IgLMAdapter(path, vocab, variant=variant, name=name, chain=chain, species=species, device=device,
                       dtype=dtype, on_unknown=on_unknown, long_sequences=long_sequences, overlap=overlap)


def generate_antibodies(n: int, *, variant: str = "IgLM-S", chain: str = "heavy", species: str = "human",
                        seed: int = 0, **kwargs) -> list[str]:
    """Convenience: load the shipped IgLM and sample ``n`` sequences."""
    adapter = IgLMAdapter(variant=variant, chain=chain, species=species, device="cpu")
    return adapter.generate_sequences(n, seed=seed, **kwargs)


__all__: Sequence[str] = ["IgLMAdapter", "load_iglm", "generate_antibodies"]

"""Causal language models from transformers (Llama, GPT-2, Qwen, Gemma, Mistral families).

Prompts are left-padded with explicit position ids, so a padded row computes exactly what
the prompt alone would, and the last prompt token sits at index -1 of every row (what
next-token scoring, "last" harvesting and generation all need). Generation is a greedy loop
over the model's KV cache written here, not ``model.generate``, so every step passes through
the adapter and interventions see a batch whose shape matches the activation.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from core.adapters.base import Batch
from core.adapters.hooks import HookSpec, TorchHookAdapter
from core.adapters.loading import device_of, dtype_of, load_or_offline
from core.errors import ConfigError, DataError
from core.samples import Sample

Prompt = str | Sample


def _text_and_id(prompt: Prompt, i: int) -> tuple[str, str]:
    if isinstance(prompt, Sample):
        return prompt.text, prompt.id
    return str(prompt), f"#{i}"


def _decoder_layers(model: nn.Module) -> nn.ModuleList:
    base = model.base_model
    for attr in ("layers", "h", "blocks"):
        layers = getattr(base, attr, None)
        if isinstance(layers, nn.ModuleList):
            return layers
    decoder = getattr(base, "decoder", None)
    if decoder is not None and isinstance(getattr(decoder, "layers", None), nn.ModuleList):
        return decoder.layers
    raise ConfigError(f"cannot find the decoder layers of {type(model).__name__}",
                      fix="use a Llama/GPT-2/Qwen/Gemma/Mistral-style causal LM")


def _child(layer: nn.Module, names: Sequence[str]) -> nn.Module:
    for n in names:
        if isinstance(getattr(layer, n, None), nn.Module):
            return getattr(layer, n)
    raise ConfigError(f"cannot find any of {list(names)} in {type(layer).__name__}")


def decoder_hook_specs(model: nn.Module) -> dict[str, HookSpec]:
    """Hook points of a decoder-only transformers model, five per layer, shallow to deep."""
    specs: dict[str, HookSpec] = {}
    for i, layer in enumerate(_decoder_layers(model)):
        attn = _child(layer, ("self_attn", "attn", "attention", "self_attention"))
        mlp = _child(layer, ("mlp", "feed_forward", "ffn"))
        specs[f"blocks.{i}.hook_resid_pre"] = HookSpec(layer, "input")
        specs[f"blocks.{i}.hook_attn_out"] = HookSpec(attn, "output")
        specs[f"blocks.{i}.hook_mlp_in"] = HookSpec(mlp, "input")
        specs[f"blocks.{i}.hook_mlp_out"] = HookSpec(mlp, "output")
        specs[f"blocks.{i}.hook_resid_post"] = HookSpec(layer, "output")
    return specs


class CausalLMAdapter(TorchHookAdapter):
    """A transformers causal LM with hook points per decoder layer."""

    def __init__(self, model: nn.Module, tokenizer: Any, *, name: str = "causal_lm", device: str | None = "auto",
                 add_special_tokens: bool = True, batch_size: int = 16, max_length: int | None = None) -> None:
        self.name = name
        self.source = str(getattr(model, "name_or_path", "") or name)
        self.device = device_of(device)
        self.model = model.to(self.device).eval()
        self.tokenizer = tokenizer
        self.add_special_tokens = add_special_tokens
        self.batch_size = batch_size
        cfg = model.config
        self.d_model = int(getattr(cfg, "hidden_size", None) or cfg.n_embd)
        self.n_layers = len(_decoder_layers(model))
        self.max_length = max_length or getattr(cfg, "max_position_embeddings", None) or getattr(cfg, "n_positions", None)
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (tokenizer.eos_token_id or 0)
        self.special_ids = set(int(i) for i in getattr(tokenizer, "all_special_ids", []) or [])

    @classmethod
    def from_pretrained(cls, name_or_path: str, *, name: str | None = None, gguf_file: str | None = None,
                        dtype: str = "float32", device: str | None = "auto", revision: str | None = None,
                        tokenizer: str | None = None, **kwargs: Any) -> CausalLMAdapter:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        extra = {"gguf_file": gguf_file} if gguf_file else {}
        if revision:
            extra["revision"] = revision

        def load():
            tok = AutoTokenizer.from_pretrained(tokenizer or name_or_path, **extra)
            model = AutoModelForCausalLM.from_pretrained(name_or_path, dtype=dtype_of(dtype), **extra)
            return model, tok

        model, tok = load_or_offline(str(name_or_path), load)
        return cls(model, tok, name=name or str(name_or_path).rstrip("/").split("/")[-1], device=device, **kwargs)

    def _build_hook_specs(self) -> dict[str, HookSpec]:
        return decoder_hook_specs(self.model)

    # --- tokenisation -------------------------------------------------------------------------

    def encode(self, text: str, *, add_special_tokens: bool | None = None) -> list[int]:
        add = self.add_special_tokens if add_special_tokens is None else add_special_tokens
        bos = getattr(self.tokenizer, "bos_token", None)
        if add and bos and text.startswith(bos):
            add = False  # a rendered chat template already carries its BOS
        return list(self.tokenizer(text, add_special_tokens=add)["input_ids"])

    def batch_from_ids(self, ids: Sequence[Sequence[int]], sample_index: Sequence[int] | None = None,
                       ids_of_samples: Sequence[str] | None = None) -> Batch:
        """Left-pad token id lists into a Batch."""
        n = len(ids)
        width = max(len(x) for x in ids)
        input_ids = torch.full((n, width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((n, width), dtype=torch.long)
        positions = torch.full((n, width), -1, dtype=torch.long)
        special = torch.ones((n, width), dtype=torch.bool)
        for r, row in enumerate(ids):
            k = len(row)
            t = torch.as_tensor(list(row), dtype=torch.long)
            input_ids[r, width - k:] = t
            mask[r, width - k:] = 1
            positions[r, width - k:] = torch.arange(k)
            special[r, width - k:] = torch.as_tensor([int(x) in self.special_ids for x in row], dtype=torch.bool)
        index = torch.as_tensor(list(sample_index) if sample_index is not None else range(n), dtype=torch.long)
        extra = {"special_mask": special}
        if ids_of_samples is not None:
            extra["sample_ids"] = list(ids_of_samples)
        return Batch(input_ids, mask, positions, index, extra)

    def tokenize(self, samples: Sequence[Prompt], sample_index: Sequence[int] | None = None) -> Batch:
        ids, names = [], []
        for i, s in enumerate(samples):
            text, sid = _text_and_id(s, i)
            if not text:
                raise DataError("empty prompt", record=sid, fix="remove the sample or give it text")
            row = self.encode(text)
            if self.max_length and len(row) > self.max_length:
                raise DataError(f"prompt has {len(row)} tokens, more than the model's {self.max_length}",
                                record=sid, fix="shorten the prompt")
            ids.append(row)
            names.append(sid)
        return self.batch_from_ids(ids, sample_index, names)

    # --- forward ------------------------------------------------------------------------------

    def _run(self, batch: Batch) -> torch.Tensor:
        pos = (batch.attention_mask.cumsum(-1) - 1).clamp(min=0)
        out = self.model(input_ids=batch.input_ids, attention_mask=batch.attention_mask, position_ids=pos,
                         use_cache=False)
        return out.logits

    def render_chat(self, messages: Sequence[dict[str, str]], *, add_generation_prompt: bool = True) -> str:
        """Render chat messages with the model's template (a plain role: text layout without one)."""
        if getattr(self.tokenizer, "chat_template", None):
            return self.tokenizer.apply_chat_template(list(messages), tokenize=False,
                                                      add_generation_prompt=add_generation_prompt)
        text = "".join(f"{m['role']}: {m['content']}\n" for m in messages)
        return text + ("assistant:" if add_generation_prompt else "")

    def _chunks(self, items: Sequence[Any]) -> list[Sequence[Any]]:
        return [items[i:i + self.batch_size] for i in range(0, len(items), self.batch_size)]

    def next_token_logprobs(self, prompts: Sequence[Prompt]) -> torch.Tensor:
        """Log-probabilities of the next token after each prompt, ``[B, vocab]``."""
        out = []
        for chunk in self._chunks(list(prompts)):
            logits = self.forward(self.tokenize(chunk))
            out.append(F.log_softmax(logits[:, -1].float(), dim=-1).cpu())
        return torch.cat(out)

    def sequence_logprobs(self, prompts: Sequence[Prompt], continuations: Sequence[str], *,
                          reduction: str = "sum") -> torch.Tensor:
        """Log-probability of each continuation given its prompt (``sum`` or per-token ``mean``)."""
        if len(prompts) != len(continuations):
            raise ValueError("prompts and continuations differ in length")
        scores = []
        pairs = list(zip(prompts, continuations, strict=True))
        for chunk in self._chunks(pairs):
            rows, n_cont = [], []
            for i, (p, c) in enumerate(chunk):
                text, sid = _text_and_id(p, i)
                cont = self.encode(c, add_special_tokens=False)
                if not cont:
                    raise DataError("empty continuation", record=sid)
                rows.append(self.encode(text) + cont)
                n_cont.append(len(cont))
            batch = self.batch_from_ids(rows)
            logp = F.log_softmax(self.forward(batch).float(), dim=-1)
            width = batch.input_ids.shape[1]
            for r, k in enumerate(n_cont):
                targets = batch.input_ids[r, width - k:].to(logp.device)
                lp = logp[r, width - k - 1:width - 1].gather(-1, targets[:, None]).squeeze(-1)
                scores.append(lp.sum() if reduction == "sum" else lp.mean())
        return torch.stack(scores).cpu()

    def generate(self, prompts: Sequence[Prompt], max_new_tokens: int = 32, *,
                 stop: Sequence[str] | str | None = None, skip_special_tokens: bool = True) -> list[str]:
        """Greedy continuations, cut before the first stop string or end-of-turn token."""
        stops = [stop] if isinstance(stop, str) else list(stop or [])
        results: list[str] = []
        for chunk in self._chunks(list(prompts)):
            results.extend(self._generate_chunk(chunk, max_new_tokens, stops, skip_special_tokens))
        return results

    @property
    def cache_kwarg(self) -> str:
        """transformers 5.24 renamed ``past_key_values`` to ``cache``."""
        import inspect

        return "cache" if "cache" in inspect.signature(self.model.forward).parameters else "past_key_values"

    def _eos_ids(self) -> set[int]:
        ids = set()
        for src in (self.model.config, getattr(self.model, "generation_config", None)):
            e = getattr(src, "eos_token_id", None) if src is not None else None
            ids.update([e] if isinstance(e, int) else list(e or []))
        if self.tokenizer.eos_token_id is not None:
            ids.add(self.tokenizer.eos_token_id)
        return ids

    def _generate_chunk(self, prompts: Sequence[Prompt], max_new: int, stops: list[str],
                        skip_special: bool) -> list[str]:
        batch = self.tokenize(prompts).to(self.device)
        n = len(batch)
        eos = torch.as_tensor(sorted(self._eos_ids()), device=self.device)
        mask = batch.attention_mask
        pos = (mask.cumsum(-1) - 1).clamp(min=0)
        new_tokens = torch.empty((n, 0), dtype=torch.long, device=self.device)
        done = torch.zeros(n, dtype=torch.bool, device=self.device)
        past = None
        step_batch = batch
        ids = batch.input_ids
        for step in range(max_new):
            previous, self._batch = self._batch, step_batch
            try:
                with torch.no_grad():
                    out = self.model(input_ids=ids, attention_mask=mask, position_ids=pos,
                                     use_cache=True, **{self.cache_kwarg: past})
            finally:
                self._batch = previous
            past = getattr(out, "cache", None) or getattr(out, "past_key_values", None)
            nxt = out.logits[:, -1].argmax(-1)
            nxt = torch.where(done, torch.full_like(nxt, self.pad_id), nxt)
            new_tokens = torch.cat([new_tokens, nxt[:, None]], dim=1)
            done |= torch.isin(nxt, eos)
            if stops and step % 4 == 3:
                done |= torch.as_tensor([any(s in t for s in stops) for t in self._decode(new_tokens, True)],
                                        device=self.device)
            if bool(done.all()):
                break
            ids = nxt[:, None]
            mask = torch.cat([mask, torch.ones((n, 1), dtype=mask.dtype, device=self.device)], dim=1)
            pos = pos[:, -1:] + 1
            step_batch = Batch(ids, torch.ones_like(ids), pos, batch.sample_index,
                               {"special_mask": torch.zeros_like(ids, dtype=torch.bool), "generation_step": step + 1})
        texts = []
        for text in self._decode(new_tokens, skip_special, eos_cut=True):
            for s in stops:
                if s in text:
                    text = text[:text.index(s)]
            texts.append(text)
        return texts

    def _decode(self, tokens: torch.Tensor, skip_special: bool, eos_cut: bool = False) -> list[str]:
        eos = self._eos_ids()
        out = []
        for row in tokens.tolist():
            if eos_cut:
                cut = next((i for i, t in enumerate(row) if t in eos), len(row))
                row = row[:cut]
            out.append(self.tokenizer.decode(row, skip_special_tokens=skip_special))
        return out


def load_causal_lm(name_or_path: str, *, name: str | None = None, gguf_file: str | None = None,
                   dtype: str = "float32", device: str | None = "auto", revision: str | None = None,
                   add_special_tokens: bool = True, batch_size: int = 16,
                   max_length: int | None = None) -> CausalLMAdapter:
    """Hydra target for ``conf/model/causal_lm.yaml``: any causal LM by hub name or local folder."""
    return CausalLMAdapter.from_pretrained(name_or_path, name=name, gguf_file=gguf_file, dtype=dtype, device=device,
                                           revision=revision, add_special_tokens=add_special_tokens,
                                           batch_size=batch_size, max_length=max_length)

"""General-purpose dictionaries of an LLM's residual stream: trained once on the broad corpus,
cached in the dictionary library, shared by every study that steers or reads at that layer.

A study that trains its own SAE on a few thousand distinct probe tokens learns those tokens;
the published audits use dictionaries trained on broad pre-training text. :func:`ensure`
harvests the corpus (``domains.text.broad``) at every layer still missing from the library in
one forward pass, trains each configured architecture per layer, scores it on held-out corpus
documents (FVU, L0, dead fraction on their tokens; CE loss recovered when it is spliced in), and
writes it to ``core.checkpoint.library`` under (model, hook, hash of the weight-deciding spec).
A later call, from the ``general_dictionaries`` case study or from a study, finds it there and
trains nothing. The spec is the ``general`` config block (``conf/general/default.yaml``).
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import Any

from core.errors import ConfigError

log = logging.getLogger(__name__)

WEIGHT_KEYS = ("corpus", "harvest", "training")


def hook_of(layer: int) -> str:
    return f"blocks.{int(layer)}.hook_resid_post"


def model_dtype(adapter: Any) -> str:
    """The dtype the model runs in (its activations, and so the dictionary, depend on it)."""
    param = next(iter(adapter.model.parameters()), None)
    return str(param.dtype).removeprefix("torch.") if param is not None else "float32"


def spec_for(gc: dict[str, Any], arch: str, dtype: str = "float32") -> dict[str, Any]:
    """What decides the weights of architecture ``arch``: its dictionary config, the corpus, the
    harvest's positions and dtype, the training budget, and the model's dtype when it is not
    float32 (evaluation settings stay out)."""
    archs = gc.get("architectures") or {}
    if arch not in archs:
        raise ConfigError(f"general.architectures has no entry {arch!r} (it has {sorted(archs)})",
                          fix="name one of them, e.g. general.use=topk")
    harvest = {k: gc["harvest"][k] for k in ("positions", "dtype")}
    spec = {"dictionary": dict(archs[arch]), "corpus": dict(gc["corpus"]), "harvest": harvest,
            "training": dict(gc["training"])}
    if dtype != "float32":
        spec["model_dtype"] = dtype
    return spec


def check_corpus(gc: dict[str, Any]) -> None:
    """Refuse a corpus path that does not exist before any model is loaded."""
    from core.errors import DataError

    source = str(gc["corpus"]["source"])
    if source not in ("debian", "hub") and not Path(source).expanduser().is_file():
        raise DataError("corpus file does not exist", path=source,
                        fix="set general.corpus.source to a .txt/.jsonl file, or to debian (offline) or hub")


def take_tokens(samples: list[Any], tokenizer: Any, n_tokens: int) -> tuple[list[Any], int]:
    """The shortest prefix of ``samples`` holding ``n_tokens`` tokens (or all of them), and its count."""
    out, total = [], 0
    for i in range(0, len(samples), 256):
        chunk = samples[i:i + 256]
        for s, ids in zip(chunk, tokenizer([s.text for s in chunk], add_special_tokens=False)["input_ids"],
                          strict=True):
            if total >= n_tokens:
                return out, total
            out.append(s)
            total += len(ids)
    return out, total


def corpus_split(gc: dict[str, Any], tokenizer: Any) -> tuple[list[Any], list[Any], dict[str, Any]]:
    """Training documents (up to the token budget) and held-out documents of the configured corpus."""
    from domains.text.broad import corpus_samples

    cc = dict(gc["corpus"])
    source, budget = str(cc.pop("source")), int(cc.pop("train_tokens"))
    n_held = int(gc["eval"]["heldout_documents"])
    n_docs = cc.pop("n_documents", None)
    train, tokens = take_tokens(corpus_samples(source, "train", n=n_docs, **cc), tokenizer, budget)
    held = corpus_samples(source, "heldout", n=n_held, **cc)
    if not train or not held:
        raise ConfigError(f"the corpus {source!r} gave {len(train)} training and {len(held)} held-out documents",
                          fix="use a larger corpus, or lower general.corpus.heldout_permille's threshold")
    return train, held, {"source": source, "train_documents": len(train), "train_tokens": tokens,
                         "heldout_documents": len(held)}


def _store_batches(store: Any, batch: int = 4096):
    for shard in store.iter_shards(columns=["acts"]):
        acts = shard["acts"].float()
        for i in range(0, acts.shape[0], batch):
            yield acts[i:i + batch]


def _splice(adapter: Any, saes: dict[str, Any], hook: str, held: list[Any], ec: dict[str, Any]) -> dict[str, Any]:
    """CE with each dictionary spliced at ``hook`` (first token left alone) against zero and mean ablation."""
    import torch

    from core.adapters.interventions import Ablate, Splice
    from core.eval.scoring import loss_recovered, mean_activations, score_conditions, text_batches
    from core.samples import Sample

    docs = [Sample(s.id, s.text[:int(ec["splice_max_chars"])]) for s in held[:int(ec["splice_documents"])]]
    batches = text_batches(adapter, docs, int(ec.get("batch_tokens", 4096)))
    mean = mean_activations(adapter, [hook], batches, skip_first=True)[hook]
    conds = {name: {hook: Splice(sae, skip_first=True)} for name, sae in saes.items()}
    conds["zero"] = {hook: Ablate(None, skip_first=True)}
    conds["mean"] = {hook: Ablate(mean, skip_first=True)}
    with torch.no_grad():
        sc = score_conditions(adapter, batches, conds)
    ce = sc["ce"]
    return {name: {"ce_clean": ce["clean"], "ce_spliced": ce[name], "kl": sc["kl"][name],
                   "ce_recovered_zero": loss_recovered(ce["zero"], ce[name], ce["clean"]),
                   "ce_recovered_mean": loss_recovered(ce["mean"], ce[name], ce["clean"]),
                   "n_scored_tokens": sc["n_scored_tokens"]} for name in saes}


def _train_layer(adapter: Any, layer: int, archs: list[str], gc: dict[str, Any], store: Any, held_store: Any,
                 held_docs: list[Any], corpus_info: dict[str, Any], work_dir: Path) -> dict[str, Any]:
    """Train, score and cache each of ``archs`` at ``layer``; returns their entries."""
    from core.checkpoint.library import config_hash, save_cached
    from core.dictionaries.base import DictionaryConfig
    from core.eval.metrics import evaluate_dictionary
    from core.store import ActivationDataModule
    from core.training import train_sae

    hook, tc = hook_of(layer), gc["training"]
    trained, entries = {}, {}
    for arch in archs:
        spec = spec_for(gc, arch, model_dtype(adapter))
        dc = dict(spec["dictionary"])
        cfg = DictionaryConfig.from_dict({**dc, "d_in": int(adapter.d_model)})
        dm = ActivationDataModule(store, batch_size=int(tc["batch_size"]), holdout_fraction=0.0,
                                  buffer_tokens=tc.get("buffer_tokens"))
        trainer = {"accelerator": gc.get("accelerator", "cpu"), "devices": 1, "logger": "csv",
                   "enable_progress_bar": bool(gc.get("progress", False)), "limit_val_batches": 0}
        sae, summary = train_sae(cfg, dm, work_dir / "train" / f"{arch}_L{layer}", trainer_cfg=trainer,
                                 total_tokens=int(tc["total_tokens"]), lr=tc.get("lr"), seed=int(tc.get("seed", 0)),
                                 save=False)
        sae.eval()
        core = evaluate_dictionary(sae, _store_batches(held_store))
        trained[arch] = (sae, spec, summary, core)
    splice = _splice(adapter, {a: v[0] for a, v in trained.items()}, hook, held_docs, gc["eval"])
    for arch, (sae, spec, summary, core) in trained.items():
        ev = {"core": core, "spliced": splice[arch]}
        folder = save_cached(sae, adapter.name, hook, spec, metadata={"training": summary, "eval": ev,
                                                                      "corpus": corpus_info})
        if not gc.get("keep_activations", False):
            shutil.rmtree(work_dir / "train" / f"{arch}_L{layer}", ignore_errors=True)
        entries[arch] = {"layer": layer, "hook": hook, "architecture": arch, "folder": str(folder),
                         "config_hash": config_hash(spec), "trained_now": True, "training": summary, "eval": ev,
                         "corpus": corpus_info}
    return entries


def cached_entry(adapter: Any, layer: int, arch: str, gc: dict[str, Any]) -> dict[str, Any] | None:
    """The library's entry for (model, layer, arch, spec), or None when it is not there yet."""
    from core.checkpoint.library import config_hash, library_folder, load_cached

    hook, spec = hook_of(layer), spec_for(gc, arch, model_dtype(adapter))
    sae = load_cached(adapter.name, hook, spec, d_in=int(adapter.d_model))
    if sae is None:
        return None
    meta = sae.metadata or {}
    return {"layer": layer, "hook": hook, "architecture": arch, "folder": str(library_folder(adapter.name, hook, spec)),
            "config_hash": config_hash(spec), "trained_now": False, "training": meta.get("training"),
            "eval": meta.get("eval"), "corpus": meta.get("corpus"), "sae": sae}


def ensure(adapter: Any, layers: list[int], gc: dict[str, Any], work_dir: str | Path,
           archs: list[str] | None = None) -> dict[tuple[int, str], dict[str, Any]]:
    """Every (layer, architecture) dictionary, from the library or trained now (one harvest pass
    over the layers still missing). Each entry holds the loaded dictionary under ``sae``."""
    from core.checkpoint.library import load_cached
    from core.harvest import check_layers, harvest

    check_corpus(gc)
    layers = check_layers(list(layers), adapter.n_layers, "case_study.layers")
    archs = list(archs or gc["architectures"])
    out: dict[tuple[int, str], dict[str, Any]] = {}
    missing: dict[int, list[str]] = {}
    for layer in layers:
        for arch in archs:
            entry = cached_entry(adapter, layer, arch, gc)
            if entry is None:
                missing.setdefault(layer, []).append(arch)
            else:
                out[layer, arch] = entry
    if not missing:
        return out
    from core.checkpoint.library import config_hash

    work_dir = Path(work_dir) / config_hash({k: gc[k] for k in ("corpus", "harvest")})
    train, held, info = corpus_split(gc, adapter.tokenizer)
    hc = gc["harvest"]
    hooks = [hook_of(layer) for layer in sorted(missing)]
    kw = {"positions": hc["positions"], "batch_tokens": int(hc["batch_tokens"]), "dtype": str(hc["dtype"]),
          "shard_tokens": int(hc["shard_tokens"]), "progress": bool(gc.get("progress", False))}
    log.info("general dictionaries: harvesting %d documents (%d tokens) at %s", len(train), info["train_tokens"], hooks)
    stores = harvest(adapter, train, hooks, work_dir / "activations", **kw)
    held_stores = harvest(adapter, held, hooks, work_dir / "heldout", **kw)
    info["harvested_tokens"] = int(stores[hooks[0]].n_tokens)
    for layer in sorted(missing):
        h = hook_of(layer)
        for arch, entry in _train_layer(adapter, layer, missing[layer], gc, stores[h], held_stores[h], held, info,
                                        work_dir).items():
            entry["sae"] = load_cached(adapter.name, h, spec_for(gc, arch, model_dtype(adapter)),
                                       d_in=int(adapter.d_model))
            out[layer, arch] = entry
    if not gc.get("keep_activations", False):
        shutil.rmtree(work_dir / "activations", ignore_errors=True)
    return out


def general_dictionary(adapter: Any, layer: int, gc: dict[str, Any], work_dir: str | Path) -> tuple[Any, dict[str, Any]]:
    """The general dictionary a study uses at ``layer`` (``general.use`` names the architecture)."""
    arch = str(gc.get("use") or next(iter(gc["architectures"])))
    entry = next(iter(ensure(adapter, [layer], gc, work_dir, archs=[arch]).values()))
    sae = entry.pop("sae")
    return sae, {"dictionary": "general", **entry}


def study_dictionary(cfg: Any, adapter: Any, hook: str, run_dir: str | Path,
                     train_study: Any) -> tuple[Any, dict[str, Any]]:
    """The dictionary a study reads and steers with: ``case_study.dictionary=general`` (the
    library's, trained on first use) or ``study`` (``train_study()``: the study's own SAE on its
    prompts). The choice is written to ``dictionary.json`` in the run folder; a rerun of that
    folder with the other choice is refused, since its cached tables were made with the first."""
    import re

    from omegaconf import OmegaConf

    from core.io import read_json, write_json

    choice = str(OmegaConf.select(cfg, "case_study.dictionary", default="study"))
    if choice not in ("general", "study"):
        raise ConfigError(f"case_study.dictionary={choice!r}", fix="use general, study or both")
    marker = Path(run_dir) / "dictionary.json"
    if marker.exists() and (before := read_json(marker).get("dictionary")) != choice:
        raise ConfigError(f"this run folder was made with case_study.dictionary={before}, not {choice}",
                          path=str(run_dir), fix="give the other choice its own hydra.run.dir")
    if choice == "study":
        sae, summary = train_study()
        record: dict[str, Any] = {"dictionary": "study", "d_sae": int(sae.cfg.d_sae), "training": summary}
    else:
        m = re.fullmatch(r"blocks\.(\d+)\.hook_resid_post", hook)
        if m is None or OmegaConf.select(cfg, "general") is None:
            raise ConfigError(f"no general dictionary for {hook}: they read the residual stream after a block",
                              fix="use case_study.dictionary=study for this hook, or add /general: default")
        sae, record = general_dictionary(adapter, int(m.group(1)), OmegaConf.to_container(cfg.general, resolve=True),
                                         Path(run_dir) / "general")
        record = {**record, "d_sae": int(sae.cfg.d_sae)}
    write_json(marker, {"dictionary": choice, "folder": record.get("folder")})
    return sae, record


def harvest_and_choose(adapter: Any, samples: list, hook: str, run_dir: Path, cs: Any,
                       cfg: Any) -> tuple[Any, Any, dict[str, Any]]:
    """Harvest a study's samples at ``hook`` and return ``(dictionary, store, record)``: the general
    dictionary or one trained on these samples from ``case_study.sae`` (:func:`study_dictionary`;
    both resume). Shared by the bias and personality studies."""
    from omegaconf import OmegaConf

    from core.checkpoint import load_sae
    from core.dictionaries.base import DictionaryConfig
    from core.harvest import harvest
    from core.store import ActivationDataModule
    from core.training import train_sae

    run_dir = Path(run_dir)
    store = harvest(adapter, samples, [hook], run_dir / "activations", batch_tokens=int(cs.harvest_batch_tokens))[hook]

    def own() -> tuple[Any, dict[str, Any]]:
        folder = run_dir / "sae_train" / "sae"
        if (folder / "cfg.json").exists():
            sae = load_sae(folder)
            return sae, (sae.metadata or {}).get("training") or {}
        sc = cs.sae
        dc = DictionaryConfig(architecture=str(sc.architecture), d_in=adapter.d_model, d_sae=int(sc.d_sae),
                              k=int(sc.k) if sc.get("k") else None)
        dm = ActivationDataModule(store, batch_size=int(sc.batch_size), holdout_fraction=0.05, seed=0)
        trainer = OmegaConf.to_container(sc.trainer, resolve=True) if sc.get("trainer") else {}
        return train_sae(dc, dm, run_dir / "sae_train", trainer_cfg=trainer, total_tokens=int(sc.total_tokens),
                         lr=sc.get("lr"), init_encoder_scale=bool(sc.get("init_encoder_scale", True)),
                         metadata={"hook_name": hook, "model_name": adapter.name})

    sae, record = study_dictionary(cfg, adapter, hook, run_dir, own)
    return sae, store, record

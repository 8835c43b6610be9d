"""Stage ``explain``: explanations for a dictionary's features, each with its scores.

    sparsescope stage=explain explain.sae=DIR/sae data.root=STORE explain.explainer=concepts \
        explain.enrichment=DIR/enrichment/enrichment.tsv explain.concepts=DIR/concepts/concepts
    sparsescope stage=explain explain.sae=DIR/sae data.root=STORE explain.explainer=llm model=smollm2
    sparsescope stage=explain ... explain.llm.backend=http explain.llm.url=http://HOST:8000/v1 \
        explain.llm.model=NAME

Samples example windows from the store (``<out_dir>/examples/``), explains ``n_features``
features (the first eligible ones, or ``explain.features``), scores each with the judge
scorers (detection, fuzzing) and, for concept explanations, the model-free concept AUROC on
the test split; every score comes with the shuffled-explanation control. Writes
``<out_dir>/explanations.tsv`` (with each feature's own scores: the file ``annotate_sequences``
reads beside a dictionary), ``scores.tsv``, ``concept_scores.tsv`` and a summary in results.json.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from core.errors import ConfigError

DEFAULTS: dict[str, Any] = {
    "sae": None, "out_dir": "explanations", "explainer": "concepts", "scorers": ["detection", "fuzzing"],
    "features": None, "n_features": 50, "enrichment": None, "concepts": None, "shuffled_control": True,
    "split_mode": "all", "valid_fraction": 0.5, "seed": 0, "batch": 8, "max_items": None, "n_explain_examples": 40,
    "examples": {}, "llm": {"backend": "local", "model": "smollm2", "url": None, "timeout": 60, "retries": 3,
                            "backoff": 1.0, "api_key_env": None},
    "scorer_llm": None, "chunk_tokens": 32768, "batch_tokens": 4096, "device": "cpu", "progress": True,
}


def options(cfg: DictConfig, key: str = "explain") -> dict[str, Any]:
    given = OmegaConf.to_container(cfg[key], resolve=True) if cfg.get(key) else {}
    unknown = sorted(set(given) - set(DEFAULTS))
    if unknown:
        raise ConfigError(f"unknown {key} options {unknown}", fix=f"valid options are {sorted(DEFAULTS)}")
    out = {**DEFAULTS, **given}
    out["llm"] = {**DEFAULTS["llm"], **(given.get("llm") or {})}
    return out


def token_text(cfg: DictConfig, store: Any):
    """Token strings from the store's vocabulary, else from the model's tokenizer, else ids."""
    from core.explain.text import TokenText

    vocab = store.meta.get("vocab")
    if vocab:
        return TokenText(vocab)
    if cfg.get("model") is not None:
        from core.adapters import load_adapter

        return TokenText.from_tokenizer(load_adapter(cfg.model).tokenizer)
    return TokenText(None)


def open_store(cfg: DictConfig, run_dir: Path):
    """``data.root``, or the only store under ``<run_dir>/activations`` (no Lightning import)."""
    from core.stages.train import group
    from core.store import ActivationStore

    root = group(cfg, "data", "store").get("root")
    if root is None:
        found = sorted(p.parent for p in (Path(run_dir) / "activations").glob("*/manifest.json"))
        if len(found) != 1:
            raise ConfigError(f"data.root is not set and {Path(run_dir) / 'activations'} holds {len(found)} stores",
                              fix="set data.root=<activation store directory>")
        root = found[0]
    return ActivationStore(root)


def run(cfg: DictConfig, run_dir: Path) -> dict[str, Any]:
    from core.checkpoint import load_sae
    from core.enrich.features import DictionaryFeatures
    from core.explain.pipeline import explain_dictionary

    opts = options(cfg)
    run_dir = Path(run_dir)
    sae = load_sae(opts["sae"] or run_dir / "sae")
    store = open_store(cfg, run_dir)
    source = DictionaryFeatures(sae, store, chunk_tokens=int(opts["chunk_tokens"]),
                                batch_tokens=int(opts["batch_tokens"]), device=opts["device"])
    out = Path(opts["out_dir"])
    out = out if out.is_absolute() else run_dir / out
    return {"explain": explain_dictionary(source, sae, opts, out, token_text(cfg, store))}

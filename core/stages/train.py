"""Stage ``train``: fit a dictionary on an activation store.

    sparsescope stage=train sae=topk data.root=DIR/activations/blocks.3.hook_resid_post \
        trainer.total_tokens=5_000_000 hydra.run.dir=DIR/train

A transcoder is trained on a pair of stores harvested together (``harvest.site=mlp_pair``):
``data.root=DIR/activations/blocks.3.hook_mlp_in data.targets=DIR/activations/blocks.3.hook_mlp_out``
(``sae.skip_connection=true`` for a skip transcoder); a cross-layer transcoder on lists of
both (``sae=clt data.root=[...] data.targets=[...]``).

Reads ``cfg.sae`` (conf/sae/*.yaml), ``cfg.data`` (conf/data/store.yaml) and ``cfg.trainer``
(conf/trainer/*.yaml: Lightning settings plus the schedule); writes ``run_dir/sae/``,
``run_dir/checkpoints/`` and ``run_dir/logs/``. Re-running the same command resumes.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from core.errors import ConfigError

CONF = Path(__file__).resolve().parents[2] / "conf"

# trainer.* keys that set the schedule; every other trainer.* key goes to lightning.Trainer
SCHEDULE_KEYS = ("total_tokens", "lr", "optimizer", "compile", "warmup_steps", "decay_fraction", "init_tokens",
                 "normalize_activations", "init_b_dec", "init_encoder_scale", "dead_after_tokens", "ckpt_path")


def group(cfg: DictConfig, name: str, default: str) -> dict[str, Any]:
    """``cfg.<name>`` as a dict, or conf/<name>/<default>.yaml when the config has no such group."""
    node = cfg.get(name)
    if node is None:
        node = OmegaConf.load(CONF / name / f"{default}.yaml")
    return OmegaConf.to_container(node, resolve=True)


def split_trainer(trainer: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    schedule = {k: trainer[k] for k in SCHEDULE_KEYS if trainer.get(k) is not None}
    lightning = {k: v for k, v in trainer.items() if k not in SCHEDULE_KEYS}
    return schedule, lightning


def dictionary_config(sae: dict[str, Any], d_in: int, n_inputs: int = 1, d_out: int | None = None) -> dict[str, Any]:
    """Fill ``d_in`` from the store and ``d_sae`` from ``expansion_factor``; with target stores
    (``d_out`` given) the dictionary is a transcoder predicting them."""
    sae = dict(sae)
    if d_out is not None:
        sae.update(transcoder=True, d_out=int(sae.get("d_out") or d_out))
    expansion = sae.pop("expansion_factor", None)
    if sae.get("d_in") is None:
        sae["d_in"] = d_in
    elif int(sae["d_in"]) != d_in:
        raise ConfigError(f"sae.d_in={sae['d_in']} but the activation store has d={d_in}",
                          fix="drop sae.d_in (it is read from the store) or pick the matching store")
    if n_inputs > 1 and sae.get("n_inputs") in (None, 1):
        sae["n_inputs"] = sae["n_outputs"] = n_inputs
    if sae.get("d_sae") is None:
        if not expansion:
            raise ConfigError("sae.d_sae is not set", fix="set sae.d_sae or sae.expansion_factor")
        per_layer = int(sae.get("n_inputs") or 1) if str(sae.get("architecture", "")).startswith("clt_") else 1
        sae["d_sae"] = int(expansion) * int(sae["d_in"]) * per_layer  # a CLT: expansion_factor per layer
    return sae


def datamodule_from(data: dict[str, Any], run_dir: Path):
    from core.store import ActivationDataModule

    root = data.get("root")
    if root is None:
        found = sorted(p.parent for p in (run_dir / "activations").glob("*/manifest.json"))
        if len(found) != 1:
            raise ConfigError(f"data.root is not set and {run_dir / 'activations'} holds {len(found)} stores",
                              fix="set data.root=<activation store directory>")
        root = found[0]
    kw = {k: data[k] for k in ("batch_size", "buffer_tokens", "holdout_fraction", "seed", "split_seed",
                               "num_workers", "verify", "targets") if data.get(k) is not None}
    return ActivationDataModule(root, **kw)


def hook_metadata(dm) -> dict[str, Any]:
    """``hook_name`` (and ``hook_name_out`` for a transcoder; lists and ``layers`` for several)."""
    def names(stores):
        hooks = [s.hook for s in stores]
        return hooks[0] if len(hooks) == 1 else hooks

    meta = {"hook_name": names(dm.stores), "model_name": dm.store.model, "store": str(dm.store.root)}
    if dm.target_stores:
        meta["hook_name_out"] = names(dm.target_stores)
        if len(dm.stores) > 1:
            meta["layers"] = [int(m.group(1)) if (m := re.match(r"blocks\.(\d+)\.", s.hook)) else None
                              for s in dm.stores]
    return meta


def crosscoder_config(sae: dict[str, Any], dm) -> tuple[dict[str, Any], dict[str, Any]]:
    """A crosscoder (``sae.architecture=crosscoder_*``) reads every store of ``data.root`` as one
    source: ``source_widths`` come from the stores (a configured one must match), and the sources
    and the stores' alignment record go into cfg.json."""
    from core.errors import ShapeError

    widths = [int(s.d) for s in dm.stores]
    given = sae.get("source_widths")
    if given is not None and [int(w) for w in given] != widths:
        bad = next(i for i, (g, w) in enumerate(zip(list(given) + [None] * len(widths), widths, strict=False)) if g != w)
        raise ShapeError(f"sae.source_widths={list(given)} but the stores of data.root have widths {widths}",
                         path=str(dm.stores[bad].root),
                         fix="drop sae.source_widths (it is read from the stores) or list the stores in the "
                             "order of the configured sources")
    sae = {**sae, "source_widths": widths, "n_inputs": len(widths), "n_outputs": len(widths), "d_in": widths[0]}
    sources = [{"name": s.meta.get("source_name") or f"{s.model}:{s.hook}", "model": s.model, "hook": s.hook,
                "d": int(s.d), "store": str(s.root)} for s in dm.stores]
    return sae, {"sources": sources, "alignment": dm.stores[0].meta.get("alignment")}


def run(cfg: DictConfig, run_dir: Path) -> dict[str, Any]:
    from core.training import train_sae

    run_dir = Path(run_dir)
    dm = datamodule_from(group(cfg, "data", "store"), run_dir)
    d_out = dm.target_stores[0].d if dm.target_stores else None
    sae_cfg = group(cfg, "sae", "topk")
    extra: dict[str, Any] = {}
    if str(sae_cfg.get("architecture", "")).startswith("crosscoder_"):
        sae_cfg, extra = crosscoder_config(sae_cfg, dm)
    sae = dictionary_config(sae_cfg, dm.d, dm.n_inputs, d_out)
    schedule, lightning = split_trainer(group(cfg, "trainer", "default"))
    total = int(schedule.pop("total_tokens", 0) or dm.n_train_tokens)
    meta = {**hook_metadata(dm), **extra}
    _, summary = train_sae(sae, dm, run_dir, trainer_cfg=lightning, total_tokens=total,
                           seed=cfg.get("seed"), metadata=meta, **schedule)
    return {"train": summary, "sae": str(run_dir / "sae")}

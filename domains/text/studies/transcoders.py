"""Case study ``transcoders``: SAEs, per-layer, skip and cross-layer transcoders of SmolLM2's MLPs, side by side.

For each chosen layer: an SAE on ``hook_mlp_out``, a per-layer transcoder (PLT) and a skip
transcoder (``hook_mlp_in -> hook_mlp_out``), and one cross-layer transcoder (CLT) over the
layers, all trained on the same harvested tokens (real English prose: Python standard-library
docstrings) at matched sparsity (see ``transcoders_eval``). Each is scored on held-out tokens
(FVU of the MLP output, L0, dead fraction), spliced into the model on held-out text (CE and
KL, loss recovered against zero- and mean-ablating the MLP; one layer at a time, and every
layer at once for the PLTs, skip transcoders, SAEs and the CLT's replacement model), and
scored for interpretability (best-feature F1 on token concepts, ``domains.text.concepts``).

Steps leave their files in the run directory and a rerun with the same directory reuses
them: ``activations/`` (the paired stores), ``dictionaries/<kind>_L<layer>/`` and
``dictionaries/clt/`` (folders in the SAELens / circuit-tracer layouts), ``train/``
(Lightning checkpoints, resumed after a kill), ``splice.json``, ``interpretability.json``.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from core.errors import ConfigError

log = logging.getLogger(__name__)
KINDS = ("sae", "plt", "skip")


class _Timer:
    def __init__(self) -> None:
        self.t0, self.steps = time.time(), {}

    def mark(self, name: str) -> None:
        now = time.time()
        self.steps[name] = round(now - self.t0, 1)
        log.info("%s done in %.1f s", name, now - self.t0)
        self.t0 = now


def check_layers(cs: dict[str, Any], n_layers: int) -> list[int]:
    """The configured layer range: distinct, increasing, inside the model."""
    from core.harvest import check_layers as in_model

    layers = in_model(cs["layers"], n_layers, "case_study.layers")
    if len(layers) < 2 or layers != sorted(set(layers)):
        raise ConfigError(f"case_study.layers={cs['layers']} must be at least two distinct increasing layers "
                          "(the CLT's range)", fix="e.g. case_study.layers=[3,4,5]")
    return layers


def harvest_pairs(adapter: Any, cs: dict[str, Any], layers: list[int], run_dir: Path) -> dict[str, Any]:
    """The MLP input and output of every layer, one pass, the first token of each text left out."""
    from core.harvest import harvest, mlp_pair_hooks
    from domains.text.corpus import docstring_samples

    samples = docstring_samples(int(cs["n_train_samples"]), max_chars=int(cs["max_chars"]))
    hc = cs["harvest"]
    return harvest(adapter, samples, mlp_pair_hooks(layers, adapter.n_layers), run_dir / "activations",
                   positions="skip_first", batch_tokens=int(hc["batch_tokens"]), dtype=str(hc["dtype"]),
                   shard_tokens=int(hc["shard_tokens"]))


def datamodule(cs: dict[str, Any], inputs: list[Any], targets: list[Any] | None):
    from core.store import ActivationDataModule

    tc = cs["training"]
    return ActivationDataModule([s.root for s in inputs] if len(inputs) > 1 else inputs[0].root,
                                batch_size=int(tc["batch_size"]), holdout_fraction=float(tc["holdout_fraction"]),
                                targets=None if targets is None else ([s.root for s in targets] if len(targets) > 1
                                                                      else targets[0].root),
                                buffer_tokens=tc.get("buffer_tokens"))


def dictionary_config(cs: dict[str, Any], kind: str, d: int, n_layers: int) -> dict[str, Any]:
    """Every kind shares the sparsity rule, ``k`` and latents per layer (matched L0)."""
    dc = dict(cs["dictionary"])
    arch, d_sae = str(dc.pop("architecture")), int(dc.pop("d_sae"))
    base = {"d_in": d, "d_sae": d_sae, **dc}
    if kind == "sae":
        return {"architecture": arch, **base}
    if kind == "plt":
        return {"architecture": arch, "transcoder": True, **base}
    if kind == "skip":
        return {"architecture": arch, "transcoder": True, "skip_connection": True, **base}
    return {"architecture": f"clt_{arch}", **base, "d_sae": d_sae * n_layers, "n_inputs": n_layers,
            "n_outputs": n_layers}


def train_or_load(name: str, cfg: dict[str, Any], dm: Any, cs: dict[str, Any], run_dir: Path,
                  metadata: dict[str, Any]) -> tuple[Any, dict[str, Any] | None]:
    from core.checkpoint import load_sae, save_sae
    from core.training import train_sae

    folder = run_dir / "dictionaries" / name
    if (folder / "cfg.json").exists():
        sae = load_sae(folder)
        return sae, (sae.metadata or {}).get("training")
    tc = cs["training"]
    trainer = {"accelerator": "cpu", "devices": 1, "logger": "csv", "enable_progress_bar": bool(tc["progress"]),
               "limit_val_batches": 0}
    sae, summary = train_sae(cfg, dm, run_dir / "train" / name, trainer_cfg=trainer,
                             total_tokens=int(tc["total_tokens"]), lr=tc.get("lr"), save=False,
                             seed=int(tc.get("seed", 0)))
    save_sae(sae, folder, metadata={**metadata, "training": summary})
    return load_sae(folder), summary


def train_all(cs: dict[str, Any], stores: dict[str, Any], layers: list[int], run_dir: Path,
              model_name: str) -> tuple[dict[tuple[int, str], Any], dict[str, Any]]:
    """Per layer an SAE, a PLT and a skip transcoder; one CLT over the layers."""
    ins = [stores[f"blocks.{layer}.hook_mlp_in"] for layer in layers]
    outs = [stores[f"blocks.{layer}.hook_mlp_out"] for layer in layers]
    d = ins[0].d
    dicts: dict[tuple[int, str], Any] = {}
    summaries: dict[str, Any] = {}
    for layer, src, dst in zip(layers, ins, outs, strict=True):
        for kind in KINDS:
            name = f"{kind}_L{layer}"
            dm = datamodule(cs, [dst] if kind == "sae" else [src], None if kind == "sae" else [dst])
            meta = {"model_name": model_name, "hook_name": dst.hook if kind == "sae" else src.hook}
            if kind != "sae":
                meta["hook_name_out"] = dst.hook
            dicts[layer, kind], summaries[name] = train_or_load(name, dictionary_config(cs, kind, d, 1), dm, cs,
                                                                run_dir, meta)
            log.info("trained %s", name)
    meta = {"model_name": model_name, "layers": layers, "hook_name": [s.hook for s in ins],
            "hook_name_out": [s.hook for s in outs]}
    clt, summaries["clt"] = train_or_load("clt", dictionary_config(cs, "clt", d, len(layers)),
                                          datamodule(cs, ins, outs), cs, run_dir, meta)
    for layer in layers:
        dicts[layer, "clt"] = clt
    return dicts, summaries


def run(cfg: DictConfig, run_dir: Path) -> dict[str, Any]:
    from core.adapters import load_adapter
    from core.io import write_json
    from domains.text.studies import transcoders_eval as ev
    from domains.text.studies.transcoders_report import write_report

    cs = OmegaConf.to_container(cfg.case_study, resolve=True)
    run_dir = Path(run_dir)
    timer = _Timer()
    adapter = load_adapter(cfg.model)
    layers = check_layers(cs, adapter.n_layers)
    timer.mark("load model")
    stores = harvest_pairs(adapter, cs, layers, run_dir)
    timer.mark("harvest")
    dicts, summaries = train_all(cs, stores, layers, run_dir, adapter.name)
    timer.mark("train")
    recon = ev.reconstruction(cs, dicts, stores, layers, datamodule)
    timer.mark("reconstruction")
    splice = ev.cached(run_dir / "splice.json", lambda: ev.splice(adapter, cs, dicts, layers))
    timer.mark("splice")
    interp = ev.cached(run_dir / "interpretability.json",
                       lambda: ev.interpretability(cs, dicts, stores, layers, adapter, run_dir))
    timer.mark("interpretability")
    entries = ev.entries(layers, recon, splice, interp)
    together = ev.all_layers(splice, layers)
    results = {"transcoders": entries, "transcoders_all_layers": together, "layers": layers,
               "l0_matching": ev.L0_MATCHING.format(**cs["dictionary"], rule=ev.L0_RULE.get(
                   cs["dictionary"]["architecture"], "")),
               "tokens": {"harvested": stores[f"blocks.{layers[0]}.hook_mlp_in"].n_tokens,
                          "trained_per_dictionary": int(cs["training"]["total_tokens"]),
                          "spliced_scored": splice["n_scored_tokens"]},
               "clean_ce": splice["ce"]["clean"], "interpretability_measure": ev.INTERP_MEASURE,
               "training": {k: {"seconds": (v or {}).get("seconds"), "tokens_per_s": (v or {}).get("tokens_per_s")}
                            for k, v in summaries.items()}}
    write_report(run_dir, results)
    timer.mark("report")
    results["timings_s"] = timer.steps
    write_json(run_dir / "transcoders.json", results)
    return results

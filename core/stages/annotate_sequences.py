"""Stage ``annotate_sequences`` (the ``sparsescope annotate`` sub-command): a user's sequences
through a trained run's model and dictionaries, with the run's labels for the features.

``sparsescope annotate annotate.fasta=FILE annotate.run=RUN_DIR hydra.run.dir=DIR`` (the same as
``sparsescope stage=annotate_sequences +annotate=default ...``) writes under
``DIR/<annotate.out_dir>``: ``residues.parquet`` / ``residues.tsv`` (sequence id, 1-based
position, token, dictionary, feature, activation, region columns), ``features.tsv`` (per
sequence and dictionary the top features with concept, F1, explanation, spans and regions),
``spans.tsv``, ``html/`` (a page per sequence and an index) and ``annotate.json``.

How the input is read and which regions are marked is the domain's business, named by
``_target_``s: ``annotate.reader`` / ``annotate.regions`` when given, else the run's saved
``domain.annotate`` block, else ``conf/domain/<the run's domain>.yaml``'s.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from core.errors import ConfigError, DataError

DEFAULTS: dict[str, Any] = {
    "run": None, "fasta": None, "saes": None, "model": None, "reader": None, "regions": None,
    "token_column": None, "on_error": None, "out_dir": "annotations", "batch_sequences": 256, "batch_tokens": 8192,
    "top_features": 10, "span_threshold": 0.0, "html_max": 1000, "html_tracks": 10, "tsv": True, "device": "cpu",
}
CONF_DOMAIN = Path(__file__).resolve().parents[2] / "conf" / "domain"


def annotate_options(cfg: DictConfig) -> dict[str, Any]:
    given = OmegaConf.to_container(cfg.annotate, resolve=True) if cfg.get("annotate") else {}
    unknown = sorted(set(given) - set(DEFAULTS))
    if unknown:
        raise ConfigError(f"unknown annotate options {unknown}", fix=f"valid options are {sorted(DEFAULTS)}")
    opts = {**DEFAULTS, **given}
    for key in ("run", "fasta"):
        if not opts[key] or opts[key] == "???":
            raise ConfigError(f"annotate.{key} is not set",
                              fix="sparsescope annotate annotate.fasta=FILE annotate.run=RUN_DIR hydra.run.dir=DIR")
    if not 0 <= float(opts["span_threshold"]) < 1:
        raise ConfigError(f"annotate.span_threshold={opts['span_threshold']} is outside [0, 1)",
                          fix="give a fraction of each feature's run-wide maximum (0 = wherever it fires)")
    return opts


def domain_wiring(opts: dict[str, Any], run: Path) -> dict[str, Any]:
    """The reader, region annotator and token column name for this run's domain."""
    block: dict[str, Any] = {}
    saved = run / ".hydra" / "config.yaml"
    domain = OmegaConf.load(saved).get("domain") if saved.exists() else None
    if domain is not None and domain.get("annotate") is not None:
        block = OmegaConf.to_container(OmegaConf.create({"domain": domain}).domain.annotate, resolve=True)
    elif domain is not None and (CONF_DOMAIN / f"{domain.get('name')}.yaml").exists():
        fresh = OmegaConf.create({"domain": OmegaConf.load(CONF_DOMAIN / f"{domain.get('name')}.yaml")})
        if fresh.domain.get("annotate") is not None:
            block = OmegaConf.to_container(fresh.domain.annotate, resolve=True)
    out = {k: opts[k] if opts[k] is not None else block.get(k) for k in ("reader", "regions", "token_column")}
    if not out["reader"]:
        raise ConfigError("no reader for the input: the run's domain names none",
                          path=str(saved), fix="set annotate.reader._target_=<a function path -> samples>, e.g. "
                                               "domains.protein.readers.read_samples")
    out["token_column"] = out["token_column"] or "token"
    return out


def run(cfg: DictConfig, run_dir: Path) -> dict[str, Any]:
    from hydra.utils import instantiate

    from core.adapters import load_adapter
    from core.samples import read_sample_file
    from core.sequence_annotation.run import annotate, check_model, check_samples
    from core.sequence_annotation.trained_run import find_dictionaries, model_config

    opts = annotate_options(cfg)
    trained = Path(str(opts["run"])).expanduser().resolve()
    out_dir = Path(run_dir).resolve() / str(opts["out_dir"])
    if trained == Path(run_dir).resolve():
        raise ConfigError("the output folder is the run directory itself (its results.json would be replaced)",
                          path=str(trained), fix="choose another hydra.run.dir for the annotations")
    dictionaries = find_dictionaries(trained, opts["saes"])
    wiring = domain_wiring(opts, trained)
    path = Path(str(opts["fasta"])).expanduser()
    samples, skipped = read_sample_file(wiring["reader"], path, on_error=opts["on_error"], key="annotate.fasta")
    model_cfg, source = model_config(trained, dictionaries, opts["model"])
    adapter = load_adapter(model_cfg)
    check_model(adapter, dictionaries, source)
    samples, unencodable = check_samples(adapter, samples, str(path))
    if not samples:
        raise DataError(f"the model cannot encode any sequence of the input ({unencodable})", path=str(path),
                        fix="give sequences in the model's alphabet")
    regions = instantiate(wiring["regions"]) if wiring["regions"] else None
    opts = {**opts, "token_column": wiring["token_column"],
            "regions": (wiring["regions"] or {}).get("_target_") if wiring["regions"] else None}
    info = {"input": str(path), "run": str(trained), "model_config": OmegaConf.to_yaml(model_cfg),
            "model_source": source, "dictionaries": [d.name for d in dictionaries],
            "skipped": {"reader": skipped, "model": unencodable}}
    summary = annotate(samples, adapter, dictionaries, out_dir, regions=regions, options=opts, info=info)
    return {"annotate": {k: v for k, v in summary.items() if k not in ("fingerprint", "model_config")}
            | {"out_dir": str(out_dir)}}

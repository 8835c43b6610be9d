"""Stage ``compare``: two dictionaries of the same input space, feature by feature.

    sparsescope stage=compare compare.a=FOLDER_A compare.b=FOLDER_B hydra.run.dir=DIR
    sparsescope stage=compare compare.a=SMALL compare.b=LARGE compare.store=STORE hydra.run.dir=DIR

Any folder ``core.checkpoint.load_sae`` reads works (ours, SAELens-layout folders written by
sae-lens itself, dictionary_learning, sparsify). Always: decoder-cosine matching both ways,
MMCS, fractions matched above each threshold, the one-to-one assignment, the chance level.
With a token sample (``compare.store``): activation correlation per pair; across widths, the
splitting tree (with co-activation) and the stitching of the small SAE with the large one;
with ``compare.snapshots``, each snapshot against ``b`` (the feature life cycle). Writes
``pairs.tsv``, ``metrics.json`` (the summary, also in ``results.json``), ``splitting.tsv``,
``stitching_features.tsv``, ``stitching_family.tsv``, ``lifecycle.tsv`` and ``report.html``.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from core.errors import ConfigError, ShapeError

log = logging.getLogger(__name__)
CONF = Path(__file__).resolve().parents[2] / "conf" / "compare" / "default.yaml"


def options(cfg: DictConfig) -> dict[str, Any]:
    defaults = OmegaConf.to_container(OmegaConf.load(CONF), resolve=True)
    given = OmegaConf.to_container(cfg.compare, resolve=True) if cfg.get("compare") else {}
    unknown = sorted(set(given) - set(defaults))
    if unknown:
        raise ConfigError(f"unknown compare options {unknown}", fix=f"valid options are {sorted(defaults)}")
    return {**defaults, **given}


def flag(cc: dict[str, Any], name: str, auto: bool) -> bool:
    value = cc[name]
    if value in (None, "auto"):
        return auto
    if isinstance(value, bool):
        return value
    raise ConfigError(f"compare.{name}={value!r} is not auto, true or false", fix=f"set compare.{name}=auto|true|false")


def folder(cc: dict[str, Any], name: str) -> Path:
    if not cc.get(name):
        raise ConfigError(f"compare.{name} is not set", fix="pass compare.a=FOLDER_A compare.b=FOLDER_B (dictionary folders)")
    return Path(str(cc[name])).expanduser()


def write_tsv(frame, path: Path) -> Path:
    from core.io import atomic_path

    with atomic_path(path) as tmp:
        frame.to_csv(tmp, sep="\t", index=False)
    return path


def sample_for(cc: dict[str, Any], sae) -> Any:
    """The shared token sample, checked against the dictionaries' input width."""
    from core.compare import token_sample

    if sae.cfg.n_inputs > 1:
        raise ConfigError("a token sample from one store cannot feed a crosscoder (several inputs per token)",
                          fix="compare crosscoders by decoder only: drop compare.store")
    x, _ = token_sample(cc["store"], split=cc["split"], holdout_fraction=float(cc["holdout_fraction"]),
                        split_seed=int(cc["split_seed"]), max_tokens=cc["max_tokens"])
    if x.shape[1] != sae.cfg.in_features:
        raise ShapeError(f"the store's activations have width {x.shape[1]}, the dictionaries read "
                         f"{sae.cfg.in_features}", path=str(cc["store"]),
                         fix="pass the activation store of the model and hook the dictionaries were trained on")
    return x


def run(cfg: DictConfig, run_dir: Path) -> dict[str, Any]:
    from core.checkpoint import load_sae
    from core.compare import check_same_space, compare, encode_sparse
    from core.compare.report import comparison_report
    from core.io import write_json

    run_dir = Path(run_dir)
    cc = options(cfg)
    path_a, path_b = folder(cc, "a"), folder(cc, "b")
    a, b = load_sae(path_a), load_sae(path_b)
    check_same_space(a, b, str(path_a), str(path_b))
    has_store = cc["store"] is not None
    want_act = flag(cc, "activations", has_store)
    differ = a.cfg.d_sae != b.cfg.d_sae
    want_stitch = flag(cc, "stitching", differ and has_store)
    for name, wanted in (("activations", want_act), ("stitching", want_stitch)):
        if wanted and not has_store:
            raise ConfigError(f"compare.{name}=true needs a token sample, and compare.store is not set",
                              fix=f"pass compare.store=<activation store of the same model and hook>, "
                                  f"or set compare.{name}=false")
    x = sample_for(cc, a) if has_store and (want_act or want_stitch or flag(cc, "splitting", differ)) else None
    codes = {}
    if x is not None:
        codes = {"a": encode_sparse(a, x, batch_tokens=int(cc["batch_tokens"]), progress=True),
                 "b": encode_sparse(b, x, batch_tokens=int(cc["batch_tokens"]), progress=True)}
    comp = compare(a, b, codes_a=codes.get("a") if want_act else None, codes_b=codes.get("b") if want_act else None,
                   assignment=bool(cc["assignment"]), thresholds=tuple(cc["thresholds"]),
                   names=(str(path_a), str(path_b)))
    write_tsv(comp.pairs, run_dir / "pairs.tsv")
    results: dict[str, Any] = {"a": str(path_a), "b": str(path_b),
                               "a_architecture": a.cfg.architecture, "b_architecture": b.cfg.architecture,
                               "hooks": [a.metadata.get("hook_name"), b.metadata.get("hook_name")],
                               **comp.summary, "pairs": str(run_dir / "pairs.tsv")}
    if x is not None:
        results["token_sample"] = {"store": str(cc["store"]), "split": cc["split"], "n_tokens": int(x.shape[0])}
    small_name = "a" if a.cfg.d_sae <= b.cfg.d_sae else "b"
    small, large = (a, b) if small_name == "a" else (b, a)
    parts: dict[str, Any] = {"comparison": comp}
    if flag(cc, "splitting", differ):
        parts["splitting"] = splitting(cc, small, large, codes, small_name, run_dir, results)
    nested(cc, {"a": a, "b": b}, codes, run_dir, results)
    if want_stitch:
        parts["stitching"] = stitching(cc, small, large, x, codes, small_name, run_dir, results)
    if cc["snapshots"]:
        parts["lifecycle"] = lifecycle(cc, b, run_dir, results)
    write_json(run_dir / "metrics.json", results)
    if cc["report"]:
        results["report"] = str(comparison_report(parts, run_dir, title=f"compare: {path_a.name} vs {path_b.name}"))
    return {"compare": results}


def splitting(cc, small, large, codes, small_name, run_dir, results):
    from core.compare.matching import decoder_directions
    from core.compare.universality import two_trees

    large_name = "b" if small_name == "a" else "a"
    trees = two_trees(decoder_directions(small), decoder_directions(large), codes.get(small_name),
                      codes.get(large_name), min_cosine=float(cc["child_cosine"]),
                      min_coactivation=float(cc["child_coactivation"]))
    tree = trees["by_decoder"]
    write_tsv(tree.table(), run_dir / "splitting.tsv")
    results["splitting"] = {"small": small_name, **tree.counts(), "child_cosine": cc["child_cosine"],
                            "child_coactivation": cc["child_coactivation"] if codes else None,
                            "table": str(run_dir / "splitting.tsv")}
    if "by_coactivation" in trees:
        write_tsv(trees["by_coactivation"].table(), run_dir / "splitting_by_coactivation.tsv")
        results["splitting"]["by_coactivation"] = trees["by_coactivation"].counts()
    return tree


def nested(cc, saes, codes, run_dir, results):
    import pandas as pd

    from core.compare import nested_trees
    from core.compare.matching import decoder_directions

    if not flag(cc, "splitting", True):
        return
    for name, sae in saes.items():
        prefixes = getattr(sae, "prefixes", None)
        if not prefixes or len(prefixes) < 2:
            continue
        trees = nested_trees(decoder_directions(sae), prefixes, codes.get(name), min_cosine=float(cc["child_cosine"]),
                             min_coactivation=float(cc["child_coactivation"]))
        table = pd.concat([t.table().assign(prefix=f"{p}->{q}") for (p, q), t in trees.items()], ignore_index=True)
        write_tsv(table, run_dir / f"matryoshka_{name}.tsv")
        results.setdefault("matryoshka_prefixes", {})[name] = {f"{p}->{q}": t.counts() for (p, q), t in trees.items()}


def stitching(cc, small, large, x, codes, small_name, run_dir, results):
    from core.compare import stitch

    large_name = "b" if small_name == "a" else "a"
    res = stitch(small, large, x, codes_small=codes[small_name], codes_large=codes[large_name],
                 tolerance=float(cc["novel_tolerance"]), swap_cosine=float(cc["swap_cosine"]),
                 n_groups=int(cc["stitch_groups"]))
    write_tsv(res.features, run_dir / "stitching_features.tsv")
    write_tsv(res.family, run_dir / "stitching_family.tsv")
    results["stitching"] = {"small": small_name, **res.summary, "originals": res.originals}
    return res


def lifecycle(cc, final, run_dir, results):
    import numpy as np

    from core.checkpoint import load_sae
    from core.compare import births, check_same_space, lifecycle_table
    from core.compare.universality import records

    snaps = {}
    for i, path in enumerate(cc["snapshots"]):
        snap = load_sae(path)
        check_same_space(snap, final, str(path), str(cc["b"]))
        fraction = (snap.metadata.get("snapshot") or {}).get("fraction")
        snaps[float(fraction) if fraction is not None else float(i)] = snap
    table = lifecycle_table(snaps, final)
    write_tsv(table, run_dir / "lifecycle.tsv")
    born = births(snaps, final)
    results["lifecycle"] = {"table": records(table),
                            "median_birth_fraction": float(np.nanmedian(born)) if np.isfinite(born).any() else None,
                            "never_present_frac": round(float(np.isnan(born).mean()), 4)}
    return table

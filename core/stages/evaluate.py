"""Stage ``evaluate``: the evaluation suite over one or several dictionaries on one store.

    sparsescope stage=evaluate evaluate.sae=DIR/train/sae data.root=STORE hydra.run.dir=DIR/eval
    sparsescope stage=evaluate evals=[core,sparse_probing,absorption,autointerp] \
        evaluate.saes=[A/sae,B/sae] data.root=STORE model=smollm2 hydra.run.dir=OUT

Each evaluation is a module of ``core.eval`` with its config (options under
``evaluate.<name>``) and a typed result: ``core`` (reconstruction and sparsity; the old name
``reconstruction`` is accepted), ``spliced`` (needs ``model=``), ``sparse_probing``,
``absorption``, ``autointerp``. One dictionary writes ``run_dir/metrics.json`` (a section per
evaluation); several write ``run_dir/<name>/metrics.json`` each, then ``comparison.tsv``,
``comparison.md`` and ``figures/<eval>.<metric>.png`` side by side. A dictionary whose
metrics.json already holds every requested evaluation is not evaluated again (resume).
A transcoder is evaluated against its target store (``data.targets``, the MLP output it
predicts) and spliced in place of that MLP's output; an SAE folder given with targets, or a
transcoder without them, is refused before anything is written.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from core.errors import ConfigError

DEFAULTS: dict[str, Any] = {"sae": None, "saes": None, "names": None, "evals": None, "evaluators": None,
                            "split": None, "max_tokens": None, "dense_threshold": None}


def requested(cfg: DictConfig, ec: dict[str, Any]) -> list[str]:
    names = cfg.get("evals") or ec.get("evals") or ec.get("evaluators") or ["core"]
    return [str(n) for n in (names if isinstance(names, (list, tuple)) or OmegaConf.is_list(names) else [names])]


def dictionaries(run_dir: Path, ec: dict[str, Any]) -> list[tuple[str, Path]]:
    """(label, folder) per dictionary: ``evaluate.saes`` (or a list in ``evaluate.sae``)."""
    given = ec.get("saes") or ec.get("sae") or run_dir / "sae"
    folders = [Path(p) for p in (given if isinstance(given, (list, tuple)) else [given])]
    names = list(ec.get("names") or [])
    if names and len(names) != len(folders):
        raise ConfigError(f"evaluate.names has {len(names)} names for {len(folders)} dictionaries",
                          fix="give one name per dictionary, or drop evaluate.names")
    if not names:
        names = [(f.parent.name if f.name == "sae" and f.parent.name else f.name) for f in folders]
        if len(set(names)) < len(names):
            names = [f"{i}_{n}" for i, n in enumerate(names)]
    return list(zip(names, folders, strict=True))


def run(cfg: DictConfig, run_dir: Path) -> dict[str, Any]:
    from core.eval.base import EVALS, EvalContext, get_eval
    from core.io import read_json, write_json
    from core.stages.train import group

    run_dir = Path(run_dir)
    given = OmegaConf.to_container(cfg.evaluate, resolve=True) if cfg.get("evaluate") else {}
    names = requested(cfg, given)
    evals = {n: get_eval(n) for n in names}  # unknown names fail here, before any work
    unknown = sorted(set(given) - set(DEFAULTS) - set(EVALS))
    if unknown:
        raise ConfigError(f"unknown evaluate options {unknown}",
                          fix=f"valid are {sorted(DEFAULTS)} and one section per evaluation {sorted(EVALS)}")
    legacy = {k: given[k] for k in ("split", "max_tokens", "dense_threshold") if given.get(k) is not None}
    runners = {cls.name: cls({**(legacy if cls.name == "core" else {}), **(given.get(cls.name) or {})})
               for cls in evals.values()}
    data = group(cfg, "data", "store")
    store_root = _store_root(data, run_dir)
    shared: dict[str, Any] = {}
    if {"absorption", "autointerp"} & set(runners):
        from core.stages.explain import open_store, token_text

        shared["token_text"] = token_text(cfg, open_store(cfg, run_dir))
    from core.checkpoint import load_sae

    targets = dictionaries(run_dir, given)
    check_kinds(targets, bool(data.get("targets")))
    single = len(targets) == 1
    all_metrics, headlines = {}, {}
    for label, folder in targets:
        out_dir = run_dir if single else run_dir / label
        path = out_dir / "metrics.json"
        done = read_json(path) if path.exists() and not single else {}
        if not all(n in done for n in runners):
            sae = load_sae(folder)
            ctx = EvalContext(cfg, sae, folder, store_root, out_dir, run_dir, data, shared)
            results = {n: r.run(ctx) for n, r in runners.items()}
            done = {n: res.to_dict() for n, res in results.items()}
            write_json(path, done)
            headlines[label] = {n: res.headline() for n, res in results.items()}
        else:
            headlines[label] = {n: evals_headline(evals[n], done[n]) for n in runners}
        all_metrics[label] = done
    if single:
        return {"metrics": next(iter(all_metrics.values())), "headline": next(iter(headlines.values()))}
    from core.eval.compare import write_comparison

    return {"metrics": all_metrics, "headline": headlines, "comparison": write_comparison(headlines, run_dir)}


def check_kinds(targets: list[tuple[str, Path]], with_targets: bool) -> None:
    """Before anything is written: an SAE is evaluated on one store, a transcoder (or a CLT)
    against its target store (``data.targets``); a folder of the other kind is refused."""
    from core.checkpoint import load_sae
    from core.checkpoint.folder import check_kind

    for _, folder in targets:
        sae = load_sae(folder)
        check_kind(sae, ("transcoder" if sae.kind == "sae" else sae.kind) if with_targets else "sae", folder)


def evals_headline(cls: type, section: dict[str, Any]) -> dict[str, float | None]:
    """The headline of a result read back from metrics.json."""
    import dataclasses
    import typing

    result_type = typing.get_type_hints(cls.run)["return"]
    fields = {f.name for f in dataclasses.fields(result_type)}
    return result_type(**{k: v for k, v in section.items() if k in fields}).headline()


def _store_root(data: dict[str, Any], run_dir: Path) -> Path | None:
    if data.get("root"):
        return Path(data["root"])
    found = sorted(p.parent for p in (run_dir / "activations").glob("*/manifest.json"))
    return found[0] if len(found) == 1 else None

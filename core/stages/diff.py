"""Stage ``diff``: which latents of a crosscoder two sources share, and which one alone has.

    sparsescope stage=diff diff.crosscoder=RUN/crosscoder/sae hydra.run.dir=OUT
    sparsescope stage=diff diff.crosscoder=... diff.stores=[A,B,C] diff.sources=[antiberty,iglm] ...

Reads the crosscoder and its aligned stores (by default the stores its cfg.json names), checks
that they line up and match the crosscoder's source widths, and writes ``latents.tsv`` (per
latent: decoder norms, relative norm, class before and after Latent Scaling, the ratios),
``metrics.json`` (the ``diff`` summary, also in results.json) and ``report.html``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from core.errors import ConfigError, ShapeError

CONF = Path(__file__).resolve().parents[2] / "conf" / "diff" / "default.yaml"


def options(cfg: DictConfig) -> dict[str, Any]:
    defaults = OmegaConf.to_container(OmegaConf.load(CONF), resolve=True)
    given = OmegaConf.to_container(cfg.diff, resolve=True) if cfg.get("diff") else {}
    unknown = sorted(set(given) - set(defaults))
    if unknown:
        raise ConfigError(f"unknown diff options {unknown}", fix=f"valid options are {sorted(defaults)}")
    return {**defaults, **given}


def pick_sources(names: list[str], wanted: list[str] | None, folder: Path) -> tuple[int, int]:
    """Indices of the two compared sources; an unknown name is refused with the known ones."""
    if not wanted:
        return 0, 1
    if len(wanted) != 2:
        raise ConfigError(f"diff.sources={wanted} must name two sources", fix=f"choose two of {names}")
    unknown = [w for w in wanted if w not in names]
    if unknown or wanted[0] == wanted[1]:
        raise ConfigError(f"diff.sources={wanted}: {'unknown source ' + repr(unknown[0]) if unknown else 'the same source twice'}",
                          path=str(folder / "cfg.json"), fix=f"choose two of this crosscoder's sources {names}")
    return names.index(wanted[0]), names.index(wanted[1])


def open_sources(cc: Any, paths: list[str], folder: Path) -> list[Any]:
    from core.store import ActivationStore
    from core.store.pairing import check_sources_align

    stores = [ActivationStore(Path(p).expanduser()) for p in paths]
    widths = cc.source_widths
    if len(stores) != len(widths):
        raise ConfigError(f"the crosscoder has {len(widths)} sources but diff.stores lists {len(stores)} stores",
                          path=str(folder / "cfg.json"), fix="pass one store per source, in the crosscoder's order")
    for s, w in zip(stores, widths, strict=True):
        if s.d != w:
            raise ShapeError(f"this store has width {s.d}, the crosscoder's source in its place reads {w}",
                             path=str(s.root), fix="list the stores in the crosscoder's source order (see its cfg.json)")
    check_sources_align(stores)
    return stores


def run(cfg: DictConfig, run_dir: Path) -> dict[str, Any]:
    from core.checkpoint import load_sae, read_cfg
    from core.diff import Cutoffs
    from core.diff.report import histogram_figure, scaling_figure
    from core.diff.run import diff_crosscoder
    from core.io import write_json
    from core.report.html import Report

    opts = options(cfg)
    if not opts["crosscoder"]:
        raise ConfigError("diff.crosscoder is not set", fix="pass diff.crosscoder=<crosscoder folder>")
    folder = Path(str(opts["crosscoder"])).expanduser()
    cc = load_sae(folder, expect="crosscoder")
    meta = read_cfg(folder)
    sources = meta.get("sources") or []
    names = [str(s.get("name")) for s in sources] or [f"source{i}" for i in range(len(cc.source_widths))]
    a, b = pick_sources(names, opts["sources"], folder)
    paths = opts["stores"] or [s.get("store") for s in sources]
    if not paths or any(p is None for p in paths):
        raise ConfigError("the crosscoder's cfg.json does not name its stores", path=str(folder / "cfg.json"),
                          fix="pass diff.stores=[...] in the crosscoder's source order")
    stores = open_sources(cc, [str(p) for p in paths], folder)
    cut = Cutoffs(**opts["cutoffs"])
    run_dir = Path(run_dir)
    summary, latents = diff_crosscoder(cc, stores, run_dir, a=a, b=b, names=(names[a], names[b]), cutoffs=cut,
                                       tau=float(opts["tau"]), floor=float(opts["noise_floor"]),
                                       batch_tokens=int(opts["batch_tokens"]))
    write_json(run_dir / "metrics.json", summary)
    rep = Report(f"Model diff: {names[a]} vs {names[b]}", run_dir)
    rep.figure(histogram_figure(latents["relative_norm"].to_numpy(), cut, (names[a], names[b])), "relative_norm",
               "Relative decoder norm per live latent (dashed: the class cut-offs).")
    rep.table([{"class": k, "before": summary["before_scaling"][f"{k}_n"], "after Latent Scaling":
                summary["after_scaling"][f"{k}_n"]} for k in ("shared", "a_only", "b_only", "other")],
              caption=f"a = {names[a]}, b = {names[b]}")
    rep.figure(scaling_figure(latents, latents["class"], float(opts["tau"])), "latent_scaling",
               "Latent Scaling ratios of the exclusive latents.")
    rep.write()
    return {"diff": summary, "latents": str(run_dir / "latents.tsv"), "report": str(run_dir / "report.html")}

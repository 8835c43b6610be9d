"""Build a run's feature atlas: a static site over what the enrichment stage found.

Per dictionary of the run (with an enrichment folder): the labels come from
``features.h5ad``/``enrichment.tsv`` (read by :mod:`core.enrich.readback`) and the
explanations file, the map from the UMAP/Leiden columns the enrichment stage wrote, the
examples and histograms from one pass over the dictionary's activation store
(:mod:`core.atlas.collect`). The site is built in a temporary folder and swapped in whole,
so a kill leaves the previous atlas (or none), never half of one. Size is bounded by ``top_n + n_quantiles`` examples of at most
``2 * window + 1`` tokens per feature and one shared stylesheet and script.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from core.atlas.collect import choose_examples, collect
from core.atlas.neighbours import decoder_neighbours
from core.atlas.pages import concept_of, feature_page, index_page, map_page
from core.enrich.readback import read_associations, read_sample_activations, read_sample_associations
from core.errors import ConfigError, DataError
from core.io import atomic_dir, write_json
from core.report.static import write_assets
from core.sequence_annotation.trained_run import RunDictionary, find_dictionaries

log = logging.getLogger(__name__)


def find_store(run: Path, hook: str | None, given: str | Path | None = None):
    """The activation store a dictionary reads: ``given``, else the one under ``run`` whose
    manifest names the dictionary's hook."""
    from core.store import ActivationStore, read_manifest

    if given:
        return ActivationStore(Path(given), verify=False)
    for manifest in sorted(Path(run).rglob("manifest.json")):
        try:
            if read_manifest(manifest.parent).get("hook") == hook:
                return ActivationStore(manifest.parent, verify=False)
        except (DataError, KeyError, ValueError):
            continue
    raise DataError(f"no activation store for hook {hook!r} in this run", path=str(run),
                    fix="pass atlas.store=<the store folder the dictionary was trained and enriched on>")


def token_text(store: Any) -> Callable[[int, np.ndarray, np.ndarray], list[str]]:
    """Token strings: the model's vocabulary saved with the store, else the sample's text at
    each position, else the token id."""
    vocab = store.meta.get("vocab")
    samples = store.samples()
    text = samples["text"].astype(str).to_dict() if samples is not None and "text" in samples.columns else {}

    def fn(sample: int, positions: np.ndarray, tokens: np.ndarray) -> list[str]:
        if vocab:
            return [vocab[int(t)] if 0 <= int(t) < len(vocab) else f"[{int(t)}]" for t in tokens]
        seq = text.get(int(sample))
        if seq is not None:
            return [seq[p] if 0 <= p < len(seq) else "?" for p in positions]
        return [f"[{int(t)}]" for t in tokens]

    return fn


def build_dictionary_pages(d: RunDictionary, run: Path, out: Path, *, top_n: int, n_quantiles: int,
                           n_neighbours: int, window: int, bins: int, store: str | None,
                           progress: bool) -> list[dict[str, Any]]:
    """Write ``out/<d.name>/`` (feature pages and map); returns the index rows."""
    if d.enrichment is None:
        raise DataError(f"dictionary {d.name!r} has no enrichment folder (features.h5ad) beside it",
                        path=str(d.folder.parent), fix="run the enrich stage (or the case study) for it first")
    labels = d.feature_labels().reindex(range(d.d_sae))
    labels["density"] = labels["density"].fillna(0.0)
    live = (labels["density"] > 0).to_numpy()
    fmax = labels["max_activation"].fillna(0).to_numpy(float)
    samples, X, obs = read_sample_activations(d.enrichment)
    chosen = choose_examples(samples, X, live, top_n=top_n, n_quantiles=n_quantiles)
    act_store = find_store(run, d.hook, store)
    data = collect(d.sae, act_store, samples, fmax, chosen, bins=bins)
    text_of = token_text(act_store)
    ids = act_store.samples()
    split = dict(zip(obs["sample"].astype(int), obs["split"].astype(str), strict=True)) if "split" in obs else {}

    def meta(s: int) -> str:
        sid = str(ids.loc[s, "id"]) if ids is not None and s in ids.index else f"sample {s}"
        return f"{sid} ({split[s]})" if s in split else sid

    assoc = read_associations(d.enrichment)
    by_feature = dict(tuple(assoc.groupby("feature"))) if len(assoc) else {}
    sample_assoc = read_sample_associations(d.enrichment)
    by_feature_s = dict(tuple(sample_assoc.groupby("feature"))) if len(sample_assoc) else {}
    no_assoc, no_sample_assoc = assoc.iloc[:0], sample_assoc.iloc[:0]
    near_idx, near_cos = decoder_neighbours(d.sae.W_dec, n_neighbours)
    concepts = [concept_of(r) for r in labels.to_dict("records")]
    clusters = labels["leiden"].fillna("").astype(str) if "leiden" in labels else pd.Series([""] * d.d_sae)
    sizes = clusters.value_counts()
    live_ids = np.flatnonzero(live)
    folder = out / d.name
    folder.mkdir(parents=True, exist_ok=True)
    rows = labels.to_dict("index")
    for k, f in enumerate(tqdm(live_ids, desc=f"atlas {d.name}", unit="page", disable=not progress)):
        f = int(f)
        neighbours = [(int(g), float(c), concepts[int(g)], bool(live[int(g)]))
                      for g, c in zip(near_idx[f], near_cos[f], strict=True)]
        prev_next = (f"f{live_ids[k - 1]}.html" if k > 0 else None,
                     f"f{live_ids[k + 1]}.html" if k + 1 < len(live_ids) else None)
        (folder / f"f{f}.html").write_text(feature_page(
            d.name, f, rows[f], examples=data.examples.get(f, []), text_of=text_of, meta=meta,
            hist=data.hist[f], assoc=by_feature.get(f, no_assoc), sample_assoc=by_feature_s.get(f, no_sample_assoc),
            neighbours=neighbours, cluster_size=int(sizes.get(clusters.iloc[f], 0)), prev_next=prev_next,
            window=window))
    if {"umap1", "umap2"} <= set(labels.columns):
        (folder / "map.html").write_text(map_page(d.name, labels[["umap1", "umap2"]].assign(leiden=clusters),
                                                  live, concepts, labels["f1_test"].to_numpy(float)))
    return [{"dictionary": d.name, "feature": int(i), "page": f"{d.name}/f{i}.html" if live[i] else "",
             "density": rows[i]["density"], "max_activation": rows[i]["max_activation"],
             "concept": concepts[i], "f1_test": rows[i]["f1_test"] if concepts[i] else None,
             "explanation": str(rows[i]["explanation"] or ""), "explanation_score": rows[i]["explanation_score"],
             "cluster": clusters.iloc[i]} for i in range(d.d_sae)]


def build_atlas(run: str | Path, out_dir: str | Path, *, saes: Sequence[str] | None = None, top_n: int = 6,
                n_quantiles: int = 4, n_neighbours: int = 8, window: int = 40, bins: int = 24,
                store: str | None = None, progress: bool = True) -> dict[str, Any]:
    """Write the atlas of ``run``'s dictionaries (all, or ``saes``) under ``out_dir``."""
    run, out = Path(run), Path(out_dir)
    if out.resolve() == run.resolve() or out.resolve() in run.resolve().parents:
        raise ConfigError("the atlas folder would contain the run it is built from (it is replaced whole)",
                          path=str(out), fix="use a sub-folder such as atlas.out_dir=atlas")
    dictionaries = find_dictionaries(run, saes)
    missing = [d.name for d in dictionaries if d.enrichment is None]
    if missing and len(missing) == len(dictionaries):
        raise DataError(f"no dictionary of this run has an enrichment folder (features.h5ad): {missing}",
                        path=str(run), fix="run the enrich stage (or the case study) first")
    rows: list[dict[str, Any]] = []
    done = []
    with atomic_dir(out) as site:
        for d in dictionaries:
            if d.enrichment is None:
                log.warning("atlas: %s has no enrichment folder; left out", d.name)
                continue
            rows += build_dictionary_pages(d, run, site, top_n=top_n, n_quantiles=n_quantiles,
                                           n_neighbours=n_neighbours, window=window, bins=bins,
                                           store=store if len(dictionaries) == 1 else None, progress=progress)
            done.append(d.name)
        write_assets(site)
        n_live = sum(1 for r in rows if r["page"])
        (site / "index.html").write_text(index_page(rows, done, title=f"Feature atlas: {run.name}",
                                                    subtitle=f"{len(rows)} features of {', '.join(done)}; "
                                                             f"{n_live} live (a page each)"))
        size = sum(p.stat().st_size for p in site.rglob("*") if p.is_file())
        summary = {"dictionaries": done, "left_out": missing, "n_features": len(rows), "n_pages": n_live,
                   "bytes": int(size), "index": str(out / "index.html")}
        write_json(site / "atlas.json", summary)
    return summary

"""Annotate a user's sequences with a trained run: check everything, then stream batches.

Every check that can fail on user input runs before the first file is written: the run has
dictionaries, the input file has sequences, the model config gives the width and hooks the
dictionaries read, every sequence can be encoded (or is skipped and counted when the model
config says ``on_unknown: skip``), and the output folder holds no other job. Then batches of
sequences go through the model once each; see :mod:`core.sequence_annotation.job` for the
files and the resume rule.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pandas as pd
from tqdm.auto import tqdm

from core.errors import ConfigError, DataError, ShapeError, UserError
from core.memory import release_freed_memory
from core.samples import Sample
from core.sequence_annotation.encode import encode_samples
from core.sequence_annotation.html import index_page, sequence_page
from core.sequence_annotation.job import AnnotationJob, fingerprint
from core.sequence_annotation.summary import FeatureLabels, annotate_batch, region_track
from core.sequence_annotation.trained_run import RunDictionary

log = logging.getLogger(__name__)


def check_model(adapter: Any, dictionaries: Sequence[RunDictionary], model_source: str) -> None:
    """Each dictionary names a hook this model has and reads the model's width there."""
    for d in dictionaries:
        where = str(d.folder / "cfg.json")
        if not d.hook:
            raise ConfigError(f"dictionary {d.name!r} names no hook point", path=where,
                              fix="add metadata.hook_name (e.g. blocks.3.hook_resid_post) to cfg.json")
        if d.sae.cfg.n_inputs > 1:
            raise ConfigError(f"dictionary {d.name!r} reads {d.sae.cfg.n_inputs} inputs (a crosscoder)",
                              path=where, fix="annotate with single-hook dictionaries (annotate.saes=[...])")
        adapter.check_hooks([d.hook])
        if int(d.sae.cfg.d_in) != int(adapter.d_model):
            raise ShapeError(f"dictionary {d.name!r} reads d_in={d.sae.cfg.d_in} at {d.hook}, but the model "
                             f"from {model_source} ({adapter.name}) gives d_model={adapter.d_model}", path=where,
                             fix="use the model the run was trained on (annotate.model=<its conf/model/*.yaml>) "
                                 "or a run trained on this model")


def check_samples(adapter: Any, samples: list[Sample], path: str) -> tuple[list[Sample], dict[str, int]]:
    """Sequences the model cannot take stop the job with the file and record named, or (when the
    model config skips them) are dropped and counted."""
    check = getattr(adapter, "check", None)
    if check is None:
        return samples, {}
    before = dict(getattr(adapter, "skipped", {}) or {})
    kept = []
    for s in samples:
        try:
            ok = check(s)
        except UserError as err:
            raise DataError(err.message, path=path, record=err.record or s.id, fix=err.fix) from None
        if ok is not None:
            kept.append(s)
    after = dict(getattr(adapter, "skipped", {}) or {})
    return kept, {k: int(v - before.get(k, 0)) for k, v in after.items() if v - before.get(k, 0)}


def token_text(adapter: Any) -> Callable:
    """Token strings from the adapter's tokenizer, else the characters of the sample at each position."""
    convert = getattr(getattr(adapter, "tokenizer", None), "convert_ids_to_tokens", None)

    def fn(tokens, positions, sample: Sample) -> list[str]:
        if convert is not None:
            return [str(t) for t in convert([int(t) for t in tokens])]
        return [sample.text[p] if 0 <= p < len(sample.text) else "?" for p in positions]

    return fn


def annotate(samples: list[Sample], adapter: Any, dictionaries: Sequence[RunDictionary], out_dir: Path, *,
             regions: Callable | None, options: dict[str, Any], info: dict[str, Any],
             progress: bool = True) -> dict[str, Any]:
    """Write the annotation of ``samples`` under ``out_dir`` (resuming a killed job); returns its summary."""
    if len({s.id for s in samples}) != len(samples):
        dup = pd.Series([s.id for s in samples]).duplicated()
        raise DataError(f"sequence id {samples[int(dup.idxmax())].id!r} appears twice", path=info.get("input"),
                        fix="make the ids unique")
    size = max(1, int(options["batch_sequences"]))
    batches = [samples[a:a + size] for a in range(0, len(samples), size)]
    keys = ("top_features", "span_threshold", "html_max", "html_tracks", "token_column", "regions", "tsv")
    job = AnnotationJob(out_dir, fingerprint(((s.id, s.text) for s in samples),
                                             [d.folder / "sae_weights.safetensors" for d in dictionaries],
                                             {"model": info.get("model_config"), "batch": size,
                                              "dictionaries": [d.name for d in dictionaries],
                                              **{k: options.get(k) for k in keys}}), len(batches))
    job.check()
    if job.complete:
        log.info("%s is complete; nothing to do", out_dir)
        return job.manifest
    job.start(info)
    encoders = {d.name: (d.hook, d.sae.to(options["device"])) for d in dictionaries}
    labels = {d.name: FeatureLabels.from_table(d.feature_labels(), d.d_sae) for d in dictionaries}
    text_of = token_text(adapter)
    tok_col = str(options["token_column"])
    bar = tqdm(total=len(samples), unit="seq", desc="annotate", disable=not progress)
    for k, batch in enumerate(batches):
        if job.done(k):
            bar.update(len(batch))
            continue
        regs = regions(batch) if regions is not None else None
        feats = encode_samples(adapter, batch, encoders, batch_tokens=int(options["batch_tokens"]),
                               device=options["device"])
        ann = annotate_batch(batch, feats, labels, text_of, regs, top_features=int(options["top_features"]),
                             span_threshold=float(options["span_threshold"]), token_column=tok_col,
                             tracks_per_sequence=int(options["html_tracks"]))
        index = _pages(out_dir, k * size, batch, ann, regs, regions, options, feats, text_of)
        residues = pd.concat(ann.residues, ignore_index=True) if ann.residues else None
        if residues is not None:
            for col in residues.columns:
                if residues[col].dtype == object:
                    residues[col] = residues[col].astype("string")
        job.write_batch(k, residues, {"features": ann.features, "spans": ann.spans, "index": index})
        del feats, ann, residues
        release_freed_memory()
        bar.update(len(batch))
    bar.close()
    entries = job.index_rows().to_dict("records")
    from core.io import write_text
    from core.report.static import write_assets

    write_assets(out_dir / "html")
    write_text(out_dir / "html" / "index.html",
               index_page(entries, title="Annotated sequences", subtitle=_subtitle(info, len(samples))))
    return job.finish(tsv=bool(options["tsv"]), summary={"n_sequences": len(samples),
                                                         "n_pages": sum(1 for e in entries if e.get("page"))})


def _subtitle(info: dict[str, Any], n: int) -> str:
    return (f"{n} sequences from {info.get('input')} annotated with the run {info.get('run')} "
            f"(dictionaries: {', '.join(info.get('dictionaries', []))})")


def _pages(out_dir: Path, offset: int, batch: list[Sample], ann, regs, regions, options, feats, text_of) -> list[dict]:
    from core.io import write_text

    limit = options.get("html_max")
    rows_of = feats.rows_of()
    out = []
    for i, s in enumerate(batch):
        g = offset + i
        tracks = ann.tracks.get(i, [])
        entry = {"sequence_id": s.id, "length": len(s.text),
                 "top": "; ".join(f"{t['dictionary']} f{t['feature']}" + (f" {t['best_concept']}" if t['best_concept']
                                                                          else "") for t in tracks[:3]),
                 "page": ""}
        if limit is None or g < int(limit):
            name = f"{g:05d}_{''.join(c if c.isalnum() or c in '-_.' else '_' for c in s.id)[:60]}.html"
            rows = rows_of.get(i, slice(0, 0))
            letters = list(s.text)
            for t, p in zip(text_of(feats.token[rows], feats.position[rows], s), feats.position[rows], strict=True):
                if 0 <= p < len(letters):
                    letters[p] = t
            track = region_track(regs[i] if regs else None, len(s.text))
            write_text(out_dir / "html" / name,
                       sequence_page(s.id, letters, tracks, track, region_name=getattr(regions, "name", "region"),
                                     colours=getattr(regions, "colours", None), token_column=options["token_column"],
                                     subtitle=f"{len(s.text)} positions; top {len(tracks)} features of "
                                              f"{', '.join(feats.X)}"))
            entry["page"] = name
        out.append(entry)
    return out

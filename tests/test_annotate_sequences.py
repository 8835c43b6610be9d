"""Annotating new sequences with a trained run, on a planted toy where the truth is known:
feature 0 fires on the residues of every KDEL motif and nowhere else."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pandas as pd
import pytest
from omegaconf import OmegaConf
from planted_run import MOTIF, build_run, motif_sequences, write_fasta

from core.errors import ConfigError, DataError, ShapeError


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    root = tmp_path_factory.mktemp("annot")
    run = build_run(root)
    samples, truth = motif_sequences(30, seed=5, prefix="new")
    fasta = write_fasta(samples, root / "new.fasta")
    return root, run, fasta, samples, truth


def _cfg(run: Path, fasta: Path, **extra) -> OmegaConf:
    return OmegaConf.create({"annotate": {"run": str(run), "fasta": str(fasta), "batch_sequences": 7,
                                          "html_max": 10, **extra}})


def _annotate(run, fasta, out, **extra):
    from core.stages import annotate_sequences

    return annotate_sequences.run(_cfg(run, fasta, **extra), out)


@pytest.fixture(scope="module")
def annotated(toy, tmp_path_factory):
    _, run, fasta, _, _ = toy
    out = tmp_path_factory.mktemp("out")
    res = _annotate(run, fasta, out, regions={"_target_": "planted_run.region_stub_factory"})
    return out / "annotations", res


def test_spans_are_exactly_the_motif_residues(toy, annotated):
    _, _, _, samples, truth = toy
    out, res = annotated
    spans = pd.read_csv(out / "spans.tsv", sep="\t", dtype={"sequence_id": str})
    motif = spans[(spans.dictionary == "sae") & (spans.feature == 0)]
    found = {sid: sorted(zip(g.start, g.end, strict=True)) for sid, g in motif.groupby("sequence_id")}
    assert {k: v for k, v in truth.items() if v} == found
    assert set(motif["residue"]) == {MOTIF}
    assert sum(len(v) for v in truth.values()) >= 30 and any(len(s.text) > 60 for s in samples)
    residues = pd.read_parquet(out / "residues.parquet")
    f0 = residues[(residues.feature == 0)]
    expect = {(sid, p) for sid, sp in truth.items() for a, b in sp for p in range(a, b + 1)}
    assert set(zip(f0.sequence_id, f0.position, strict=True)) == expect
    assert "".join(f0.sort_values(["sequence_id", "position"]).residue)[:4] == MOTIF
    w = residues[residues.feature == 1]
    text = {s.id: s.text for s in samples}
    assert all(text[sid][p - 1] == "W" for sid, p in zip(w.sequence_id, w.position, strict=True))
    assert len(w) == sum(s.text.count("W") for s in samples)
    assert res["annotate"]["n_sequences"] == 30


def test_summary_carries_the_runs_labels_and_regions(toy, annotated):
    _, _, _, _, truth = toy
    out, _ = annotated
    feats = pd.read_csv(out / "features.tsv", sep="\t", dtype={"sequence_id": str})
    top = feats[feats.feature == 0].set_index("sequence_id")
    assert set(top.index) == {k for k, v in truth.items() if v}
    assert (top["best_concept"] == "motif").all() and (top["f1_test"] == 1.0).all()
    assert (top["rank"] == 1).all()
    assert (top["relative_activation"] == 1.0).all()
    sid, (a, b) = next((k, v[0]) for k, v in truth.items() if len(v) == 1 and not k.endswith("1"))
    assert top.loc[sid, "spans"] == f"{a}-{b}"
    length = int(top.loc[sid, "length"])
    half = "N" if b <= length // 2 else ("C" if a > length // 2 else None)
    if half:
        assert top.loc[sid, "regions"] == f"{half} 100%"
    residues = pd.read_parquet(out / "residues.parquet")
    assert {"region", "label"} <= set(residues.columns)
    assert residues.loc[residues.sequence_id.str.endswith("1"), "region"].isna().all()


def test_html_pages_and_index(annotated):
    out, _ = annotated
    pages = sorted((out / "html").glob("0*.html"))
    assert len(pages) == 10
    index = (out / "html" / "index.html").read_text()
    assert index.count("<tr>") == 1 + 30 and "class=search" in index
    page = next(p for p in pages if "sae f0" in p.read_text())
    text = page.read_text()
    assert "motif (F1 1.00)" in text and "assets/site.js" in text
    assert (out / "html" / "assets" / "site.css").exists()
    manifest = json.loads((out / "annotate.json").read_text())
    assert manifest["complete"] and not (out / ".parts").exists()


def test_killed_job_resumes_to_the_same_tables(toy, annotated, tmp_path, monkeypatch):
    from core.sequence_annotation import run as run_mod

    _, run, fasta, _, _ = toy
    calls = {"n": 0}
    real = run_mod.annotate_batch

    def dies_on_third(*a, **k):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return real(*a, **k)

    monkeypatch.setattr(run_mod, "annotate_batch", dies_on_third)
    regions = {"_target_": "planted_run.region_stub_factory"}
    with pytest.raises(KeyboardInterrupt):
        _annotate(run, fasta, tmp_path, regions=regions)
    assert len(list((tmp_path / "annotations" / ".parts").glob("*.done"))) == 2
    calls["n"] = 10
    _annotate(run, fasta, tmp_path, regions=regions)
    assert calls["n"] == 10 + 5 - 2
    ref, _ = annotated
    for name in ("spans.tsv", "features.tsv", "residues.tsv"):
        assert (tmp_path / "annotations" / name).read_text() == (ref / name).read_text()


def test_bad_records_are_skipped_and_counted_when_asked(toy, tmp_path):
    root, run, _, samples, _ = toy
    mixed = root / "mixed.fasta"
    mixed.write_text(f">{samples[0].id}\n{samples[0].text}\n>d1\nMK1V\n>{samples[1].id}\n{samples[1].text}\n")
    res = _annotate(run, mixed, tmp_path, on_error="skip", regions=False)["annotate"]
    assert res["n_sequences"] == 2 and res["skipped"]["reader"] == {"bad_characters": 1}


def test_other_inputs_in_the_same_folder_are_refused(toy, tmp_path):
    root, run, fasta, samples, _ = toy
    _annotate(run, fasta, tmp_path, regions=False)
    before = (tmp_path / "annotations" / "annotate.json").read_text()
    other = write_fasta(samples[:5], root / "five.fasta")
    with pytest.raises(ConfigError, match="other inputs"):
        _annotate(run, other, tmp_path, regions=False)
    assert (tmp_path / "annotations" / "annotate.json").read_text() == before


def test_bad_inputs_stop_before_anything_is_written(toy, tmp_path):
    root, run, fasta, samples, _ = toy
    out = tmp_path / "out"
    no_sae = root / "no_sae"
    (no_sae / ".hydra").mkdir(parents=True, exist_ok=True)
    with pytest.raises(DataError, match="no dictionary"):
        _annotate(no_sae, fasta, out)
    bad = root / "bad.fasta"
    bad.write_text(f">{samples[0].id}\n{samples[0].text}\n>odd\nMKVLBAAC\n")
    with pytest.raises(DataError, match=r"bad\.fasta.*record odd.*'B'"):
        _annotate(run, bad, out)
    digits = root / "digits.fasta"
    digits.write_text(f">{samples[0].id}\n{samples[0].text}\n>d1\nMK1V\n")
    with pytest.raises(DataError, match=r"digits\.fasta:3.*record d1"):
        _annotate(run, digits, out)
    wide = root / "wide.yaml"
    model = OmegaConf.load(run / ".hydra" / "config.yaml").model
    model.extra = 11
    OmegaConf.save(model, wide)
    with pytest.raises(ShapeError, match="d_in=24.*d_model=32"):
        _annotate(run, fasta, out, model=str(wide))
    empty = root / "empty.fasta"
    empty.write_text("")
    with pytest.raises(DataError, match="no sequences"):
        _annotate(run, empty, out)
    with pytest.raises(ConfigError, match="unknown annotate options"):
        _annotate(run, fasta, out, spans=3)
    with pytest.raises(ConfigError, match="run directory itself"):
        _annotate(run, fasta, run)
    assert not out.exists() or not any(out.rglob("*"))


def _cli(monkeypatch, capsys, *args: str) -> tuple[int, str]:
    """``sparsescope ARGS`` in this process (the real argv handling and Hydra composition; the
    CLI's exit status and stderr)."""
    from core import cli

    monkeypatch.setattr(sys, "argv", ["sparsescope", *args])
    try:
        cli.main()
        code = 0
    except SystemExit as stop:
        code = int(stop.code or 0)
    return code, capsys.readouterr().err


def test_sub_command_runs_and_bad_input_exits_2_with_one_message(toy, tmp_path, monkeypatch, capsys):
    root, run, fasta, _, _ = toy
    code, err = _cli(monkeypatch, capsys, "annotate", f"annotate.fasta={fasta}", f"annotate.run={run}",
                     f"hydra.run.dir={tmp_path / 'ok'}", "annotate.regions=false")
    assert code == 0, err[-2000:]
    assert (tmp_path / "ok" / "annotations" / "residues.parquet").exists()
    assert json.loads((tmp_path / "ok" / "results.json").read_text())["run"]["name"] == "stage=annotate_sequences"
    empty = root / "empty2.fasta"
    empty.write_text("")
    code, err = _cli(monkeypatch, capsys, "annotate", f"annotate.fasta={empty}", f"annotate.run={run}",
                     f"hydra.run.dir={tmp_path / 'bad'}")
    assert code == 2 and "Traceback" not in err
    assert err.startswith("sparsescope: error: ") and "empty2.fasta" in err and "no sequences" in err
    assert not (tmp_path / "bad" / "results.json").exists() and not (tmp_path / "bad" / "annotations").exists()


def _files(folder: Path) -> dict[str, bytes]:
    """Every file a job left, except Hydra's own record of the latest command (``.hydra/``, logs)."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file() and ".hydra" not in p.parts and p.suffix != ".log"}


def test_four_bad_inputs_exit_2_naming_the_file_and_overwrite_nothing(toy, tmp_path, monkeypatch, capsys):
    root, run, fasta, samples, _ = toy
    out = tmp_path / "done"
    ok = ["annotate", f"annotate.run={run}", f"hydra.run.dir={out}", "annotate.regions=false"]
    code, err = _cli(monkeypatch, capsys, *ok, f"annotate.fasta={fasta}")
    assert code == 0, err[-2000:]
    before = _files(out)
    assert "results.json" in before and "annotations/residues.parquet" in before
    no_sae = root / "run_without_sae"
    (no_sae / ".hydra").mkdir(parents=True, exist_ok=True)
    (no_sae / "results.json").write_text("{}")
    odd = root / "unencodable.fasta"
    odd.write_text(f">{samples[0].id}\n{samples[0].text}\n>odd\nMKVLBAAC\n")
    wide = root / "wider_model.yaml"
    model = OmegaConf.load(run / ".hydra" / "config.yaml").model
    model.extra = 11
    OmegaConf.save(model, wide)
    empty = root / "nothing.fasta"
    empty.write_text("")
    cases = {
        "no SAE": ([f"annotate.fasta={fasta}", f"annotate.run={no_sae}"], str(no_sae), "no dictionary"),
        "unencodable": ([f"annotate.fasta={odd}"], "unencodable.fasta", "record odd"),
        "width": ([f"annotate.fasta={fasta}", f"annotate.model={wide}"], str(run / "sae" / "cfg.json"),
                  "d_in=24.*d_model=32"),
        "empty": ([f"annotate.fasta={empty}"], "nothing.fasta", "no sequences"),
    }
    for name, (args, where, what) in cases.items():
        base = [a for a in ok if not (a.startswith("annotate.run=") and any("annotate.run=" in x for x in args))]
        code, err = _cli(monkeypatch, capsys, *base, *args)
        assert code == 2, (name, err[-2000:])
        assert "Traceback" not in err and err.startswith("sparsescope: error: "), name
        assert where in err and re.search(what, err) and " -- fix: " in err, (name, err)
        assert _files(out) == before, f"{name}: a file of the earlier job changed"

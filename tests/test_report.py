"""The annotate -> enrich -> report stages on a tiny planted store, and the report in headless Chromium."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from omegaconf import OmegaConf

from core.enrich.concepts import ConceptMatrix
from core.errors import ConfigError, DataError

CHROMIUM = "/usr/bin/chromium"


def planted_concepts(tokens: pd.DataFrame, samples=None, motif_every: int = 5):
    """A concept builder for the annotate stage: the same 'motif' spans the store was planted with."""
    from test_enrich import planted

    ref_tokens, cm, _, _ = planted()
    rows = cm.row_index(tokens["sample"], tokens["position"])
    values = cm.values[np.maximum(rows, 0)]
    labels = pd.DataFrame({"has_motif": ["yes" if s % motif_every != 4 else "no"
                                         for s in sorted(tokens["sample"].unique())]},
                          index=sorted(tokens["sample"].unique()))
    return ConceptMatrix(values, cm.concepts, tokens[["sample", "position"]]), labels


def _run_dir(tmp_path: Path) -> tuple[Path, object]:
    from test_enrich import _store_and_sae

    from core.checkpoint import save_sae

    store, sae, _, _ = _store_and_sae(tmp_path / "build")
    run_dir = tmp_path / "run"
    shutil.copytree(store.root, run_dir / "activations" / "blocks.0.hook_resid_post")
    save_sae(sae, run_dir / "sae")
    cfg = OmegaConf.create({
        "analysis": {"min_positives": 3, "umap": False, "chunk_tokens": 400, "n_cards": 3,
                     "splits": "splits.tsv"},
        "domain": {"concepts": {"_target_": "test_report.planted_concepts", "motif_every": 5}},
    })
    pd.DataFrame({"sample": range(90), "split": [("train", "valid", "test")[s % 3] for s in range(90)]}) \
        .to_csv(run_dir / "splits.tsv", sep="\t", index=False)
    return run_dir, cfg


@pytest.fixture(scope="module")
def staged(tmp_path_factory):
    from core.stages import annotate, enrich, report

    run_dir, cfg = _run_dir(tmp_path_factory.mktemp("stages"))
    out = {"annotate": annotate.run(cfg, run_dir), "enrich": enrich.run(cfg, run_dir),
           "report": report.run(cfg, run_dir)}
    return run_dir, cfg, out


def test_stages_chain_from_store_to_report(staged):
    run_dir, _, out = staged
    assert out["annotate"]["concepts"]["n_concepts"] == 2
    assert out["annotate"]["concepts"]["sample_labels"] == ["has_motif"]
    assert (run_dir / "concepts" / "concepts.npz").exists()
    assert (run_dir / "concepts" / "concepts.labels.tsv").exists()
    best = pd.read_csv(run_dir / "enrichment" / "enrichment_best.tsv", sep="\t").set_index(["concept", "basis"])
    assert best.loc[("motif", "sae"), "feature"] == 0
    assert best.loc[("motif", "sae"), "f1_test"] > 0.95
    assert (run_dir / "enrichment" / "rank_has_motif.tsv").exists()
    page = (run_dir / "report.html").read_text()
    assert "Concept enrichment" in page and "enrichment/report.html" in page
    detail = (run_dir / "enrichment" / "report.html").read_text()
    for section in ("Feature enrichment", "Feature cards", "Sample-level labels", "best_f1_per_concept"):
        assert section in detail


def test_stage_errors_name_the_fix(tmp_path):
    from core.stages import annotate, enrich, report

    run_dir, cfg = _run_dir(tmp_path)
    with pytest.raises(ConfigError, match="domain.concepts._target_"):
        annotate.run(OmegaConf.create({"analysis": {}}), run_dir)
    with pytest.raises(DataError, match="stage=annotate"):
        enrich.run(cfg, run_dir)
    with pytest.raises(ConfigError, match="unknown analysis options"):
        enrich.run(OmegaConf.create({"analysis": {"treshold": 1}}), run_dir)
    with pytest.raises(DataError, match="nothing to report"):
        report.run(cfg, tmp_path / "empty")


def _screenshot(page: Path, png: Path) -> None:
    subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                    "--window-size=1200,2400", f"--screenshot={png}", page.resolve().as_uri()],
                   check=True, timeout=120, capture_output=True)


@pytest.mark.slow
@pytest.mark.skipif(not Path(CHROMIUM).exists(), reason=f"{CHROMIUM} is absent (Debian package 'chromium')")
def test_report_renders_in_headless_chromium(staged, tmp_path):
    import matplotlib.image as mpimg

    run_dir, _, _ = staged
    for page in (run_dir / "enrichment" / "report.html", run_dir / "report.html"):
        png = tmp_path / f"{page.parent.name}.png"
        _screenshot(page, png)
        img = mpimg.imread(png)[..., :3]
        assert img.shape[0] > 100 and img.shape[1] > 100
        not_white = (img < 0.95).any(axis=-1).mean()
        assert not_white > 0.02, f"{page} rendered (almost) blank: {not_white:.3%} non-white pixels"
        assert img.std() > 0.05

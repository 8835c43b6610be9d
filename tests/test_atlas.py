"""The feature atlas on a planted run (feature 0 fires on KDEL motifs, feature 1 on W, six
dead features): one page per live feature with the right examples, the map, the index, and
the pages rendered in headless Chromium."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest
from omegaconf import OmegaConf
from planted_run import MOTIF, build_run

from core.errors import ConfigError, DataError

CHROMIUM = "/usr/bin/chromium"


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    from core.stages import atlas

    root = tmp_path_factory.mktemp("atlas")
    run = build_run(root)
    (run / "explanations").mkdir()
    (run / "explanations" / "explanations.tsv").write_text("feature\texplanation\tscore\nf0\tthe KDEL motif\t0.93\n")
    out = atlas.run(OmegaConf.create({"atlas": {"run": str(run), "top_n": 3, "n_quantiles": 2}}), root / "stage")
    return run, root / "stage" / "atlas", out["atlas"]


def test_one_page_per_live_feature_and_an_index_of_all(site):
    _, atlas, summary = site
    pages = sorted(p.name for p in (atlas / "sae").glob("f*.html"))
    assert pages == ["f0.html", "f1.html"]
    assert summary["n_features"] == 8 and summary["n_pages"] == 2
    index = (atlas / "index.html").read_text()
    assert index.count("<tr>") == 1 + 8 and index.count("<span class=muted>dead</span>") == 6
    assert "href='sae/f0.html'" in index and "the KDEL motif" in index and "class=search" in index
    assert json.loads((atlas / "atlas.json").read_text())["n_pages"] == 2
    assert (atlas / "assets" / "site.js").exists() and (atlas / "assets" / "site.css").exists()


def test_feature_page_shows_the_motif_shaded_its_concept_and_neighbours(site):
    _, atlas, _ = site
    page = (atlas / "sae" / "f0.html").read_text()
    assert "motif" in page and "the KDEL motif" in page and "0.93" in page
    examples = re.findall(r"<div class=seq>(.*?)</div>", page)
    assert len(examples) == 3 + 2
    for ex in examples:
        shaded = "".join(re.findall(r"<i class=s9 title=1>(.)</i>", ex))
        assert shaded and set(re.findall(MOTIF, shaded)) == {MOTIF} and len(shaded) % len(MOTIF) == 0
        assert not re.findall(r"<i class=s[1-8]", ex)
    assert "<svg" in page and "tokens</title>" in page
    assert "Nearest features by decoder cosine" in page and "href='f1.html'" in page
    assert page.count("<tr>") >= 8 + 1 + 1


def test_map_links_live_features(site):
    _, atlas, _ = site
    page = (atlas / "sae" / "map.html").read_text()
    assert "<a href='f0.html'><circle id='f0'" in page and "<a href='f1.html'><circle id='f1'" in page
    assert "href='f2.html'" not in page and "id='f2'" in page


def test_atlas_refuses_a_run_without_enrichment_or_an_unsafe_folder(tmp_path):
    from core.atlas import build_atlas
    from core.stages import atlas

    run = build_run(tmp_path, enrich=False)
    with pytest.raises(DataError, match="enrich"):
        build_atlas(run, tmp_path / "atlas")
    assert not (tmp_path / "atlas").exists()
    with pytest.raises(ConfigError, match="contain the run"):
        build_atlas(run, run.parent)
    with pytest.raises(ConfigError, match="unknown atlas options"):
        atlas.run(OmegaConf.create({"atlas": {"topn": 3}}), tmp_path)


def test_atlas_inside_a_run_keeps_the_runs_results(site):
    from core.stages import atlas

    run, _, _ = site
    record = run / "results.json"
    record.write_text(json.dumps({"run": {"name": "case_study=antibody_regions"}}))
    with pytest.raises(ConfigError, match=r"record of case_study=antibody_regions.*atlas\.run="):
        atlas.run(OmegaConf.create({"atlas": {"top_n": 2}}), run)
    assert json.loads(record.read_text())["run"]["name"] == "case_study=antibody_regions"
    assert not (run / "atlas").exists()


def _screenshot(page: Path, png: Path) -> None:
    subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                    "--window-size=1200,1400", f"--screenshot={png}", page.resolve().as_uri()],
                   check=True, timeout=120, capture_output=True)


@pytest.mark.slow
@pytest.mark.skipif(not Path(CHROMIUM).exists(), reason=f"{CHROMIUM} is absent (Debian package 'chromium')")
def test_atlas_renders_in_headless_chromium(site, tmp_path):
    import matplotlib.image as mpimg

    _, atlas, _ = site
    for page in (atlas / "index.html", atlas / "sae" / "f0.html", atlas / "sae" / "map.html"):
        png = tmp_path / f"{page.stem}.png"
        _screenshot(page, png)
        img = mpimg.imread(png)[..., :3]
        assert img.shape[0] > 100 and img.shape[1] > 100
        not_white = (img < 0.95).any(axis=-1).mean()
        floor = 0.005 if page.stem == "map" else 0.02
        assert not_white > floor, f"{page} rendered (almost) blank: {not_white:.3%} non-white pixels"
        assert img.std() > 0.05
        orange = ((img[..., 0] > 0.8) & (img[..., 1] > 0.4) & (img[..., 1] < 0.75) & (img[..., 2] < 0.4)).mean()
        if page.stem == "f0":
            assert orange > 0.001, "the shaded motif residues are not visible"

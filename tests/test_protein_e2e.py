"""End to end: the esm2_interplm case study's reduced configuration on a tiny random ESM-2 and the
Swiss-Prot fixture (harvest, SAE per layer, Swiss-Prot concepts, enrichment, report, resume)."""

from __future__ import annotations

import json
import shutil

import pytest

from core.cli import CONF_DIR

pytestmark = pytest.mark.slow


def _compose(overrides):
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        return compose(config_name="config", overrides=overrides)


@pytest.fixture()
def tiny_run(tmp_path, monkeypatch):
    pytest.importorskip("core.harvest")
    monkeypatch.setenv("SPARSESCOPE_CACHE", str(tmp_path / "cache"))
    from domains.protein.tiny_esm import save_tiny_esm2

    pt = save_tiny_esm2(tmp_path / "esm2_t2_tiny.pt")
    overrides = ["case_study=esm2_interplm_tiny", f"model.name_or_path={pt}", "threads=2"]
    if shutil.which("mmseqs") is None:
        overrides.append("domain.split.method=random")
    return _compose(overrides), tmp_path / "run"


def test_esm2_interplm_tiny_runs_end_to_end_and_resumes(tiny_run):
    from core.cli import execute

    cfg, run_dir = tiny_run
    results = execute(cfg, run_dir)
    assert (run_dir / "results.json").exists() and (run_dir / "report.html").exists()
    saved = json.loads((run_dir / "results.json").read_text())
    assert set(saved["layers"]) == {"layer0", "layer1"}
    assert saved["data"]["n_proteins"] == 48
    for res in saved["layers"].values():
        assert isinstance(res["sae_concepts_f1_gt_0_5"], int) and isinstance(res["neuron_concepts_f1_gt_0_5"], int)
        assert res["n_concepts_scored"] > 0
        assert all(0.0 <= v <= 1.0 for v in res["best_f1"]["sae"].values() if v is not None)
    assert (run_dir / "layer1" / "sae" / "cfg.json").exists()
    splits = (run_dir / "data" / "splits.tsv").read_text().splitlines()
    assert len(splits) == 49
    # a second run over the same directory reuses every finished stage
    again = execute(cfg, run_dir)
    assert again["layers"] == results["layers"]
    assert again["seconds"].get("train_layer1", 0) < max(1.0, results["seconds"]["train_layer1"])

"""The antibody_model_diff case study end to end at reduced size (real AntiBERTy and IgLM on 60
abnativ chains, small crosscoders): results.json carries the diff fields and report.html the
histogram; a re-run resumes from the finished steps."""

from __future__ import annotations

import json

import pytest
from test_cli import sparsescope

pytestmark = pytest.mark.slow

SMALL = ("case_study=antibody_model_diff", "domain.data.n_pairs=30", "case_study.crosscoder.d_sae=256",
         "case_study.depth.crosscoder.d_sae=256", "case_study.crosscoder.epochs=1", "case_study.depth.crosscoder.epochs=1")


def test_antibody_model_diff_small_run(tmp_path):
    run = tmp_path / "run"
    out = sparsescope(*SMALL, f"hydra.run.dir={run}", cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    res = json.loads((run / "results.json").read_text())
    diff = res["diff"]
    for key in ("n_latents", "shared_frac", "a_only_frac", "b_only_frac", "shared_frac_after_scaling",
                "a_only_frac_after_scaling", "b_only_frac_after_scaling"):
        assert key in diff
    assert abs(sum(diff["before_scaling"][f"{c}_frac"] for c in ("shared", "a_only", "b_only", "other")) - 1) < 1e-3
    assert set(diff["fvu"]) == {"antiberty", "iglm"} and all(0 < v < 1.5 for v in diff["fvu"].values())
    assert "shared" in diff["concepts_before_scaling"] or diff["n_latents"] == 0
    dropped = res["data"]["alignment"]["dropped"]
    assert dropped["iglm:blocks.2.hook_resid_post"]["special_tokens"] == 3 * res["data"]["n_chains"]
    assert dropped["antiberty:blocks.5.hook_resid_post"]["special_tokens"] == 2 * res["data"]["n_chains"]
    assert (run / "figures" / "relative_norm.png").exists() and "relative_norm" in (run / "report.html").read_text()
    again = sparsescope(*SMALL, f"hydra.run.dir={run}", cwd=tmp_path)
    assert again.returncode == 0
    assert json.loads((run / "results.json").read_text())["diff"]["n_latents"] == diff["n_latents"]

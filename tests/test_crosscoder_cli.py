"""Crosscoders from the command line: train on two aligned stores of different widths, diff
them, and each bad input of issue 16 (stores of different token counts or different samples, a
width in the config that no store has, an unknown source name) ends with one message, exit 2,
nothing written."""

from __future__ import annotations

import json

import pytest
import torch
from test_cli import sparsescope

from core.store import ShardWriter

N = 512


def source_store(root, d: int, model: str, *, n: int = N, samples: str = "chains-v1", seed: int = 0):
    """A toy store of ``n`` tokens (16 per sample) as harvest_aligned writes it."""
    g = torch.Generator().manual_seed(seed)
    meta = {"samples_sha256": samples, "source_name": model,
            "alignment": {"rows_sha256": f"{samples}-{n}", "n_tokens": n}}
    w = ShardWriter(root, model=model, hook="blocks.1.hook_resid_post", d=d, shard_tokens=128, meta=meta)
    w.add(torch.randn(n, d, generator=g), torch.arange(n) // 16, torch.arange(n) % 16, torch.zeros(n, dtype=torch.long),
          samples_done=n // 16)
    w.close()
    return root


def train_args(a, b, run, *extra):
    return ("stage=train", "sae=crosscoder", "sae.d_sae=32", "sae.k=4", f"data.root=[{a},{b}]", "data.batch_size=64",
            "trainer.total_tokens=1024", "trainer.enable_progress_bar=false", f"hydra.run.dir={run}", *extra)


def test_crosscoder_trains_and_diffs_two_stores_of_different_widths(tmp_path):
    a = source_store(tmp_path / "a", 8, "antiberty")
    b = source_store(tmp_path / "b", 6, "iglm", seed=1)
    run = tmp_path / "run"
    out = sparsescope(*train_args(a, b, run), cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    cfg = json.loads((run / "sae" / "cfg.json").read_text())
    assert cfg["source_widths"] == [8, 6] and [s["name"] for s in cfg["sources"]] == ["antiberty", "iglm"]
    assert cfg["alignment"]["rows_sha256"] == "chains-v1-512"
    diff = tmp_path / "diff"
    out = sparsescope("stage=diff", f"diff.crosscoder={run / 'sae'}", f"hydra.run.dir={diff}", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    res = json.loads((diff / "results.json").read_text())["diff"]
    assert res["n_latents"] + res["before_scaling"]["n_dead"] == 32
    for key in ("shared_frac", "a_only_frac", "b_only_frac", "shared_frac_after_scaling"):
        assert 0 <= res[key] <= 1
    assert set(res["fvu"]) == {"antiberty", "iglm"} and (diff / "report.html").exists()
    bad = tmp_path / "diff_bad"
    out = sparsescope("stage=diff", f"diff.crosscoder={run / 'sae'}", "diff.sources=[antiberty,esm2]",
                      f"hydra.run.dir={bad}", cwd=tmp_path)
    assert out.returncode == 2 and "unknown source 'esm2'" in out.stderr and "antiberty" in out.stderr
    assert "Traceback" not in out.stderr and not (bad / "metrics.json").exists()


@pytest.mark.parametrize("case", ["fewer_tokens", "other_samples", "width_mismatch"])
def test_bad_crosscoder_inputs_are_refused_and_nothing_written(tmp_path, case):
    a = source_store(tmp_path / "a", 8, "antiberty")
    b = {"fewer_tokens": lambda: source_store(tmp_path / "b", 6, "iglm", n=N - 64),
         "other_samples": lambda: source_store(tmp_path / "b", 6, "iglm", samples="chains-v2"),
         "width_mismatch": lambda: source_store(tmp_path / "b", 6, "iglm")}[case]()
    extra = ["sae.source_widths=[8,8]"] if case == "width_mismatch" else []
    run = tmp_path / "run"
    run.mkdir()
    (run / "notes.txt").write_text("mine")
    out = sparsescope(*train_args(a, b, run, *extra), cwd=tmp_path)
    assert out.returncode == 2, out.stderr
    said = {"fewer_tokens": "tokens", "other_samples": "different samples", "width_mismatch": "widths [8, 6]"}[case]
    assert said in out.stderr and str(b) in out.stderr and "fix:" in out.stderr
    assert "Traceback" not in out.stderr
    assert {p.name for p in run.iterdir() if not p.name.startswith(".")} - {"cli.log"} == {"notes.txt"}
    assert (run / "notes.txt").read_text() == "mine"

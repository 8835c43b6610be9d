"""Crash consistency of a whole case study: ``case_study=esm2_interplm_tiny`` (tiny random ESM-2,
the 48-protein Swiss-Prot fixture: harvest, an SAE per layer, enrichment, report) is killed with
SIGKILL during harvest, during training, during enrichment and during the report, resumed each
time with the same ``hydra.run.dir``, and must end with the ``results.json`` of a run that was
never interrupted (timings aside) and a store whose every shard verifies."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from core.store import ActivationStore

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
HOOKS = ("blocks.0.hook_resid_post", "blocks.1.hook_resid_post")


def _strip_timings(value):
    if isinstance(value, dict):
        return {k: _strip_timings(v) for k, v in value.items() if k != "seconds"}
    if isinstance(value, list):
        return [_strip_timings(v) for v in value]
    return value


def _run(pt: Path, run_dir: Path, cache: Path, kill: str | None = None) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "tests.kill_driver", "case_study=esm2_interplm_tiny", f"model.name_or_path={pt}",
           "domain.split.method=random", "threads=1", f"hydra.run.dir={run_dir}"]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "SPARSESCOPE_CACHE": str(cache),
           "SPARSESCOPE_KILL_RUN_DIR": str(run_dir)}
    env.pop("SPARSESCOPE_KILL", None)
    if kill:
        env["SPARSESCOPE_KILL"] = kill
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)


def _killed(proc: subprocess.CompletedProcess) -> bool:
    return proc.returncode == -9


def test_case_study_killed_at_four_points_resumes_to_the_uninterrupted_result(tmp_path):
    from domains.protein.tiny_esm import save_tiny_esm2

    pt = save_tiny_esm2(tmp_path / "esm2_t2_tiny.pt")
    ref, run, cache = tmp_path / "reference", tmp_path / "killed", tmp_path / "cache"
    done = _run(pt, ref, cache)
    assert done.returncode == 0, done.stderr[-3000:]
    expected = json.loads((ref / "results.json").read_text())
    steps = expected["layers"]["layer0"]["sae_training"]["steps"]
    assert steps >= 20

    # 1. harvest: the third shard commit, after its file is written and before the manifest lists it
    p = _run(pt, run, cache, kill="harvest:3")
    assert _killed(p), p.stderr[-2000:]
    assert not all(json.loads((run / "activations" / h / "manifest.json").read_text())["complete"]
                   for h in HOOKS if (run / "activations" / h / "manifest.json").exists())
    # 2. training of layer 0, between two checkpoints
    p = _run(pt, run, cache, kill=f"train:{steps // 2 + 1}")
    assert _killed(p), p.stderr[-2000:]
    assert (run / "layer0" / "checkpoints" / "last.ckpt").exists() and not (run / "layer0" / "training.json").exists()
    # 3. enrichment of layer 0, tables written, AnnData not yet
    p = _run(pt, run, cache, kill="enrich:1")
    assert _killed(p), p.stderr[-2000:]
    assert (run / "layer0" / "enrichment").is_dir() and not (run / "layer0" / "enrichment" / "summary.json").exists()
    # 4. the case study's own report
    p = _run(pt, run, cache, kill="report:1")
    assert _killed(p), p.stderr[-2000:]
    assert (run / "layer1" / "results.json").exists() and not (run / "results.json").exists()

    p = _run(pt, run, cache)
    assert p.returncode == 0, p.stderr[-3000:]
    got = json.loads((run / "results.json").read_text())
    assert got["layers"]["layer0"]["sae_training"]["steps"] == steps
    assert _strip_timings(got) == _strip_timings(json.loads(json.dumps(expected).replace(str(ref), str(run))))
    for h in HOOKS:
        store = ActivationStore(run / "activations" / h, verify=True)  # every shard's sha256 checked
        assert len(store.shard_paths) >= 2  # the harvest kill landed between two shards
        assert sorted(p.name for p in store.root.glob("shard_*")) == [p.name for p in store.shard_paths]

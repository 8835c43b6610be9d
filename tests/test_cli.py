"""The command line: user mistakes get one clear message and a non-zero exit, never a traceback."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import torch

from core.store import ShardWriter

ROOT = Path(__file__).resolve().parent.parent


def sparsescope(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "core.cli", *args], cwd=cwd, capture_output=True, text=True,
                          env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin", "HOME": str(cwd)}, timeout=300)


def small_store(root: Path, d: int = 8, n: int = 256) -> Path:
    w = ShardWriter(root, model="toy", hook="blocks.0.hook_resid_post", d=d, shard_tokens=128)
    g = torch.Generator().manual_seed(0)
    w.add(torch.randn(n, d, generator=g), torch.arange(n) // 16, torch.arange(n) % 16, torch.zeros(n, dtype=torch.long),
          samples_done=n // 16)
    w.close()
    return root


def test_unknown_config_key_is_named(tmp_path):
    out = sparsescope("no_such_key=1", f"hydra.run.dir={tmp_path / 'run'}", cwd=tmp_path)
    assert out.returncode != 0
    assert "no_such_key" in out.stderr and "Traceback" not in out.stderr
    assert not (tmp_path / "run" / "results.json").exists()


def test_unknown_key_inside_a_group_is_named(tmp_path):
    out = sparsescope("sae.bogus_option=3", f"hydra.run.dir={tmp_path / 'run'}", cwd=tmp_path)
    assert out.returncode != 0
    assert "bogus_option" in out.stderr and "Traceback" not in out.stderr


def test_unknown_stage_lists_the_stages(tmp_path):
    out = sparsescope("stage=polish", f"hydra.run.dir={tmp_path / 'run'}", cwd=tmp_path)
    assert out.returncode == 2
    assert "unknown stage 'polish'" in out.stderr and "train" in out.stderr
    assert "Traceback" not in out.stderr


def test_unknown_architecture_lists_the_registry_and_writes_nothing(tmp_path):
    store = small_store(tmp_path / "store")
    run = tmp_path / "run"
    out = sparsescope("stage=train", "sae.architecture=sparsest", f"data.root={store}", "data.batch_size=64",
                      "trainer.total_tokens=128", f"hydra.run.dir={run}", cwd=tmp_path)
    assert out.returncode == 2, out.stderr
    assert "sparsest" in out.stderr and "topk" in out.stderr and "jumprelu" in out.stderr
    assert "Traceback" not in out.stderr
    assert not (run / "sae").exists() and not (run / "results.json").exists()


def test_train_stage_runs_and_writes_results(tmp_path):
    store = small_store(tmp_path / "store")
    run = tmp_path / "run"
    out = sparsescope("stage=train", "sae.k=2", "sae.expansion_factor=2", f"data.root={store}", "data.batch_size=64",
                      "trainer.total_tokens=256", "trainer.enable_progress_bar=false", f"hydra.run.dir={run}",
                      cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-2000:]
    assert (run / "results.json").exists() and (run / "sae" / "cfg.json").exists()

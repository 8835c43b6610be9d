"""Harvest on 2 processes (Lightning's predict loop under DDP, gloo on the CPU) through the
command a user types, against a one-process harvest of the same FASTA with a tiny random ESM-2:
one manifest lists both workers' shards, the stores hold the same rows in the same order, and a
worker killed with SIGKILL in the middle of its part resumes to the same store."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from core.store import ActivationStore

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
HOOKS = ("blocks.0.hook_resid_post", "blocks.1.hook_resid_post")
ATOL = 1e-5  # the same batches on 1 or 2 threads a process: float sums may round differently


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> tuple[Path, Path]:
    from domains.protein.tiny_esm import save_tiny_esm2

    base = tmp_path_factory.mktemp("ph")
    rng = random.Random(0)
    lines = []
    for i in range(60):
        seq = "".join(rng.choice("ACDEFGHIKLMNPQRSTVWY") for _ in range(rng.randint(20, 180)))
        lines += [f">p{i}", seq]
    fasta = base / "proteins.fasta"
    fasta.write_text("\n".join(lines) + "\n")
    return fasta, save_tiny_esm2(base / "esm2_t2_tiny.pt")


def _harvest(inputs, run_dir: Path, *extra: str, kill: str | None = None, kill_rank: int | None = None):
    fasta, pt = inputs
    cmd = [sys.executable, "-m", "tests.kill_driver", "stage=harvest", "model=esm2_fair",
           f"model.name_or_path={pt}", "model.device=cpu", "+harvest=default", f"harvest.fasta={fasta}",
           "harvest.layers=[0,1]", "harvest.batch_tokens=1024", "harvest.shard_tokens=700", "threads=1",
           f"hydra.run.dir={run_dir}", *extra]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    for var in ("SPARSESCOPE_KILL", "SPARSESCOPE_KILL_RANK"):
        env.pop(var, None)
    if kill:
        env["SPARSESCOPE_KILL"] = kill
    if kill_rank is not None:
        env["SPARSESCOPE_KILL_RANK"] = str(kill_rank)
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)


PARALLEL = ("harvest.parallel.devices=2", "harvest.parallel.accelerator=cpu")


def _rows(store: ActivationStore) -> dict[str, torch.Tensor]:
    return store.load(columns=("acts", "sample", "position", "token"))


def _assert_same_store(one: Path, two: Path) -> float:
    worst = 0.0
    for hook in HOOKS:
        a, b = ActivationStore(one / hook), ActivationStore(two / hook, verify=True)
        ra, rb = _rows(a), _rows(b)
        for col in ("sample", "position", "token"):
            assert torch.equal(ra[col], rb[col]), (hook, col)  # row for row, in the same order
        assert torch.allclose(ra["acts"], rb["acts"], rtol=0, atol=ATOL), hook
        worst = max(worst, float((ra["acts"] - rb["acts"]).abs().max()))
        assert (a.n_tokens, a.n_samples) == (b.n_tokens, b.n_samples)
        assert b.samples() is not None and len(b.samples()) == 60
    return worst


@pytest.fixture(scope="module")
def one_process(inputs, tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("one") / "run"
    proc = _harvest(inputs, run)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return run / "activations"


def test_two_workers_write_one_store_equal_to_one_process(inputs, one_process, tmp_path):
    proc = _harvest(inputs, tmp_path / "run", *PARALLEL)
    assert proc.returncode == 0, proc.stderr[-3000:]
    two = tmp_path / "run" / "activations"
    for hook in HOOKS:
        manifest = json.loads((two / hook / "manifest.json").read_text())
        files = [e["file"] for e in manifest["shards"]]
        assert {f.split("/")[0] for f in files} == {"part000", "part001"} and manifest["complete"]
        assert files == sorted(files)  # part 0's shards, then part 1's
        assert manifest["meta"]["parts"] == 2
    _assert_same_store(one_process, two)
    assert json.loads((tmp_path / "run" / "results.json").read_text())["n_samples"] == 60


def test_killed_worker_resumes_its_part(inputs, one_process, tmp_path):
    run = tmp_path / "run"
    killed = _harvest(inputs, run, *PARALLEL, kill="harvest:3", kill_rank=1)
    assert killed.returncode != 0
    part = json.loads((run / "activations" / HOOKS[0] / "part001" / "manifest.json").read_text())
    assert not part["complete"] and part["n_shards"] >= 1  # killed in the middle of its part
    assert not (run / "activations" / HOOKS[0] / "manifest.json").exists()
    resumed = _harvest(inputs, run, *PARALLEL)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    _assert_same_store(one_process, run / "activations")

"""``sparsescope stage=compare`` through the CLI: folders from sparsescope and from sae-lens itself,
and the three bad inputs (different widths, not a dictionary, activation matching without tokens)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from core.checkpoint import save_sae
from core.dictionaries import build_dictionary
from core.store import ShardWriter

ROOT = Path(__file__).resolve().parent.parent
D = 16


def sparsescope(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "core.cli", "stage=compare", *args], cwd=cwd, capture_output=True,
                          text=True, env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin", "HOME": str(cwd)},
                          timeout=300)


def store(root: Path, d: int = D, n: int = 2048) -> Path:
    w = ShardWriter(root, model="toy", hook="blocks.0.hook_resid_post", d=d, shard_tokens=512)
    g = torch.Generator().manual_seed(0)
    w.add(torch.randn(n, d, generator=g), torch.arange(n) // 16, torch.arange(n) % 16,
          torch.zeros(n, dtype=torch.long), samples_done=n // 16)
    w.close()
    return root


def ours(folder: Path, d_sae: int, d_in: int = D, arch: str = "topk", seed: int = 0) -> Path:
    torch.manual_seed(seed)
    extra = {"k": 4} if arch == "topk" else {"matryoshka_prefixes": [8, 16, d_sae], "k": 4} if arch == "matryoshka" else {}
    return save_sae(build_dictionary(dict(architecture=arch, d_in=d_in, d_sae=d_sae, **extra)), folder)


def sae_lens_folder(folder: Path, d_sae: int) -> Path:
    """A ReLU ('standard') SAE written by the sae-lens package's own save_model."""
    sae_lens = pytest.importorskip("sae_lens")
    from sae_lens.registry import get_sae_class

    cls, cfg_cls = get_sae_class("standard")
    theirs = cls(cfg_cls(d_in=D, d_sae=d_sae))
    with torch.no_grad():
        for p in theirs.parameters():
            p.copy_(torch.randn_like(p) * 0.2)
    theirs.save_model(str(folder))
    assert sae_lens is not None and (folder / "cfg.json").exists()
    return folder


def test_compare_a_sae_lens_folder_with_ours_and_a_token_sample(tmp_path):
    a = sae_lens_folder(tmp_path / "theirs", 32)
    b = ours(tmp_path / "ours", 64, arch="matryoshka")
    run = tmp_path / "run"
    out = sparsescope(f"compare.a={a}", f"compare.b={b}", f"compare.store={store(tmp_path / 'store')}",
                      "compare.split=all", f"hydra.run.dir={run}", cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    res = json.loads((run / "results.json").read_text())["compare"]
    assert res["a_architecture"] == "relu" and res["b_architecture"] == "matryoshka"
    dec = res["decoder"]
    assert (dec["n_a"], dec["n_b"], dec["d"]) == (32, 64, D)
    assert 0 < dec["chance_mmcs_a_to_b"] < 1 and "assigned_mean_cos" in dec
    assert res["activations"]["n_tokens"] == 2048
    assert res["splitting"]["n_small"] == 32 and res["splitting"]["small"] == "a"
    assert set(res["matryoshka_prefixes"]["b"]) == {"8->16", "16->64"}
    assert res["stitching"]["n_novel"] + res["stitching"]["n_reconstruction"] + res["stitching"]["n_dead"] == 64
    for name in ("pairs.tsv", "metrics.json", "splitting.tsv", "stitching_family.tsv", "report.html",
                 "figures/stitching.png"):
        assert (run / name).exists(), name
    header = (run / "pairs.tsv").read_text().splitlines()[0].split("\t")
    assert {"a", "b_best", "cos_best", "b_assigned", "cos_assigned", "corr_assigned"} <= set(header)


def test_compare_two_of_our_folders_by_decoder_alone_with_snapshots(tmp_path):
    run = tmp_path / "run"
    a, b = ours(tmp_path / "a", 48), ours(tmp_path / "b", 48, seed=1)
    out = sparsescope(f"compare.a={a}", f"compare.b={b}", f"compare.snapshots=[{a},{b}]", f"hydra.run.dir={run}",
                      cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    res = json.loads((run / "results.json").read_text())["compare"]
    assert "activations" not in res and "splitting" not in res and "stitching" not in res
    assert len((run / "pairs.tsv").read_text().splitlines()) == 49
    life = res["lifecycle"]["table"]
    # snapshot a against final b: the share of b's features present in a is the b -> a share
    assert life[0]["present_0.9"] == res["decoder"]["b_to_a_frac_above_0.9"] and life[1]["present_0.9"] == 1.0
    assert life[1]["median_angle_deg"] == 0.0 and (run / "lifecycle.tsv").exists()


@pytest.mark.parametrize("case", ["widths", "not_a_dictionary", "activations_without_tokens"])
def test_bad_input_gives_one_message_and_exit_2(tmp_path, case):
    a = ours(tmp_path / "a", 32)
    if case == "widths":
        args, expect = [f"compare.b={ours(tmp_path / 'b', 32, d_in=D + 8)}"], "different spaces"
    elif case == "not_a_dictionary":
        (tmp_path / "notes").mkdir()
        (tmp_path / "notes" / "readme.txt").write_text("hello")
        args, expect = [f"compare.b={tmp_path / 'notes'}"], "cfg.json is missing"
    else:
        args, expect = [f"compare.b={ours(tmp_path / 'b', 64)}", "compare.activations=true"], "needs a token sample"
    run = tmp_path / "run"
    out = sparsescope(f"compare.a={a}", *args, f"hydra.run.dir={run}", cwd=tmp_path)
    assert out.returncode == 2, out.stderr[-2000:]
    assert expect in out.stderr and "fix:" in out.stderr and "Traceback" not in out.stderr
    assert not (run / "results.json").exists() and not (run / "pairs.tsv").exists()

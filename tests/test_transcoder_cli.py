"""Transcoders from the command line: train and evaluate on a pair of stores, and each bad input
of issue 15 (a target store whose tokens do not line up, a layer range beyond the model, a
transcoder folder given as an SAE and the reverse) ends with one message, exit 2, nothing written."""

from __future__ import annotations

import json

import torch
from test_cli import sparsescope

from core.checkpoint import save_sae
from core.dictionaries import build_dictionary
from core.store import ShardWriter

D, N = 8, 512


def pair_store(root, hook: str, *, seed: int = 0, key: str = "run-a", order=None):
    """A toy store of ``N`` tokens (32 samples of 16); ``order`` permutes the samples."""
    g = torch.Generator().manual_seed(seed)
    samples = torch.arange(N) // 16 if order is None else order.repeat_interleave(16)
    w = ShardWriter(root, model="toy", hook=hook, d=D, shard_tokens=128, meta={"rows_key": key})
    w.add(torch.randn(N, D, generator=g), samples, torch.arange(N) % 16, torch.zeros(N, dtype=torch.long),
          samples_done=N // 16)
    w.close()
    return root


def test_transcoder_trains_and_evaluates_on_a_pair_of_stores(tmp_path):
    src = pair_store(tmp_path / "in", "blocks.1.hook_mlp_in")
    dst = pair_store(tmp_path / "out", "blocks.1.hook_mlp_out", seed=1)
    run = tmp_path / "run"
    out = sparsescope("stage=train", "sae=batchtopk", "sae.d_sae=32", "sae.k=4", "sae.skip_connection=true",
                      f"data.root={src}", f"data.targets={dst}", "data.batch_size=64", "trainer.total_tokens=512",
                      "trainer.enable_progress_bar=false", f"hydra.run.dir={run}", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    cfg = json.loads((run / "sae" / "cfg.json").read_text())
    assert cfg["architecture"] == "jumprelu_skip_transcoder" and cfg["apply_b_dec_to_input"] is False
    assert cfg["hook_name"] == "blocks.1.hook_mlp_in" and cfg["hook_name_out"] == "blocks.1.hook_mlp_out"
    ev = tmp_path / "ev"
    out = sparsescope("stage=evaluate", f"+evaluate.sae={run / 'sae'}", f"data.root={src}", f"data.targets={dst}",
                      "data.batch_size=64", f"hydra.run.dir={ev}", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    metrics = json.loads((ev / "metrics.json").read_text())["core"]
    assert metrics["n_tokens"] > 0 and 0 < metrics["fvu"] < 2


def test_target_store_that_does_not_line_up_is_refused_and_nothing_written(tmp_path):
    src = pair_store(tmp_path / "in", "blocks.1.hook_mlp_in")
    shuffled = pair_store(tmp_path / "out", "blocks.1.hook_mlp_out", key="run-b",
                          order=torch.randperm(N // 16, generator=torch.Generator().manual_seed(3)))
    run = tmp_path / "run"
    run.mkdir()
    (run / "notes.txt").write_text("mine")
    out = sparsescope("stage=train", "sae.d_sae=32", "sae.k=4", f"data.root={src}", f"data.targets={shuffled}",
                      "data.batch_size=64", "trainer.total_tokens=512", f"hydra.run.dir={run}", cwd=tmp_path)
    assert out.returncode == 2, out.stderr
    assert str(shuffled) in out.stderr and str(src) in out.stderr and "fix:" in out.stderr
    assert "Traceback" not in out.stderr
    written = {p.name for p in run.iterdir() if not p.name.startswith(".")} - {"cli.log"}  # Hydra's own log
    assert written == {"notes.txt"}
    assert (run / "notes.txt").read_text() == "mine"


def test_transcoder_given_as_sae_and_reverse_are_refused(tmp_path):
    src = pair_store(tmp_path / "in", "blocks.1.hook_mlp_in")
    dst = pair_store(tmp_path / "out", "blocks.1.hook_mlp_out", seed=1)
    tc = save_sae(build_dictionary(dict(architecture="topk", d_in=D, d_sae=16, k=2, transcoder=True)), tmp_path / "tc",
                  metadata={"hook_name": "blocks.1.hook_mlp_in", "hook_name_out": "blocks.1.hook_mlp_out"})
    sae = save_sae(build_dictionary(dict(architecture="topk", d_in=D, d_sae=16, k=2)), tmp_path / "sae")
    for folder, extra, said in ((tc, [], "holds a transcoder"), (sae, [f"data.targets={dst}"], "holds an SAE")):
        ev = tmp_path / f"ev_{folder.name}"
        out = sparsescope("stage=evaluate", f"+evaluate.sae={folder}", f"data.root={src}", *extra,
                          "data.batch_size=64", f"hydra.run.dir={ev}", cwd=tmp_path)
        assert out.returncode == 2, out.stderr
        assert str(folder) in out.stderr and said in out.stderr and "fix:" in out.stderr
        assert "Traceback" not in out.stderr
        assert not (ev / "metrics.json").exists() and not (ev / "results.json").exists()


def test_layer_range_beyond_the_model_is_refused(tmp_path):
    from test_adapters import _tiny_causal

    model = _tiny_causal("llama", tmp_path / "llama")
    texts = tmp_path / "texts.txt"
    texts.write_text("hello there\nthe cat sat\n")
    run = tmp_path / "run"
    out = sparsescope("stage=harvest", "model=causal_lm", f"model.name_or_path={model}", "model.device=cpu",
                      f"+harvest.texts={texts}",
                      "+harvest.site=mlp_pair", "+harvest.layers=[1,5]", f"hydra.run.dir={run}", cwd=tmp_path)
    assert out.returncode == 2, out.stderr
    assert "has layer 5, but the model has 3 layers" in out.stderr and "Traceback" not in out.stderr
    assert not (run / "activations").exists()

"""Crosscoders: the L1 loss's per-source norm sum, BatchTopK's norm-weighted selection, sources of
different widths, per-source scaling folded at save, training on two stores, the checkpoint
layout, and recovery of a planted two-model toy."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from crosscoder_toy import best_latents, two_model_toy

from core.checkpoint import load_sae, read_cfg, save_sae
from core.dictionaries import build_dictionary
from core.errors import ConfigError
from core.store import ActivationDataModule, ShardWriter
from core.training import TensorDataModule, train_sae

QUIET = dict(enable_progress_bar=False, logger="none", accelerator="cpu")


@pytest.fixture
def one_thread():
    """Tiny matrices: one thread beats two on a shared 2-core machine (20x here under load)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def crosscoder(arch: str = "crosscoder_batchtopk", widths=(6, 4), d_sae: int = 12, seed: int = 0, **kw):
    torch.manual_seed(seed)
    cfg = dict(architecture=arch, d_in=widths[0], d_sae=d_sae, n_inputs=len(widths), source_widths=list(widths),
               **{"k": 2, "l1_coefficient": 0.5, **kw})
    return build_dictionary(cfg)


def relative_norm(cc) -> torch.Tensor:
    n = cc.source_decoder_norms().detach()
    return 0.5 * ((n[1] - n[0]) / n.max(0).values.clamp_min(1e-12) + 1)


def test_l1_penalty_is_the_sum_over_sources_of_decoder_norms():
    cc = crosscoder("crosscoder_l1", widths=(3, 2), d_sae=3)
    with torch.no_grad():
        cc.W_dec.copy_(torch.tensor([[3.0, 4.0, 0.0, 0.0, 0.0],    # A only: norms (5, 0)
                                     [0.0, 0.0, 0.0, 6.0, 8.0],    # B only: (0, 10)
                                     [1.0, 0.0, 0.0, 1.0, 0.0]]))  # both: (1, 1), sum 2, not sqrt(2)
        cc.b_enc.fill_(1.0)  # every latent fires
        cc.W_enc.abs_()
    x = torch.randn(16, 5).abs()
    out = cc.loss(x, progress=1.0)
    f = cc.encode(x)
    expected = (f * torch.tensor([5.0, 10.0, 2.0])).sum(1).mean()
    assert torch.allclose(out.terms["l1"], expected, rtol=1e-5)
    concatenated = (f * cc.W_dec.norm(dim=1)).sum(1).mean()
    assert not torch.allclose(out.terms["l1"], concatenated, rtol=1e-3)
    assert torch.allclose(out.loss, out.terms["mse"] + 0.5 * expected, rtol=1e-5)


def test_batchtopk_crosscoder_selects_by_norm_weighted_activation():
    cc = crosscoder(widths=(3, 3), d_sae=2, k=1)
    with torch.no_grad():
        cc.W_enc.copy_(torch.ones(6, 2))  # equal pre-activations for both latents
        cc.b_dec.zero_()
        cc.W_dec.copy_(torch.tensor([[1.0, 0, 0, 0, 0, 0], [1.0, 0, 0, 2.0, 0, 0]]))  # norm sums 1 and 3
    cc.train()
    f = cc.encode(torch.ones(4, 6))
    assert (f[:, 1] > 0).all() and (f[:, 0] == 0).all()
    cc.eval()
    cc.threshold.fill_(10.0)  # score = 6 * norm sum: 6 for latent 0, 18 for latent 1
    f = cc.encode(torch.ones(4, 6))
    assert (f[:, 1] > 0).all() and (f[:, 0] == 0).all()


@pytest.mark.parametrize("arch", ["crosscoder_l1", "crosscoder_batchtopk"])
def test_per_source_scaling_folds_into_the_weights(arch):
    cc = crosscoder(arch, widths=(6, 4)).eval()
    with torch.no_grad():
        cc.b_dec.normal_()
        cc.W_dec.mul_(torch.rand(12, 1) + 0.5)
    scale = torch.cat([torch.full((6,), 2.0), torch.full((4,), 0.25)])
    x = torch.randn(32, 10)
    expected = cc(x * scale) / scale
    norms = cc.source_decoder_norms().detach().clone()
    cc.fold_scaling(scale)
    assert torch.allclose(cc(x), expected, atol=1e-5)
    assert torch.allclose(cc.source_scale, torch.tensor([2.0, 0.25]))
    assert torch.allclose(cc.source_decoder_norms(), norms, rtol=1e-5)  # normalised units survive the fold


def test_crosscoder_configuration_errors():
    with pytest.raises(ConfigError, match="at least two sources"):
        build_dictionary(dict(architecture="crosscoder_batchtopk", d_in=8, d_sae=16, k=2))
    with pytest.raises(ConfigError, match="one positive width per"):
        build_dictionary(dict(architecture="crosscoder_l1", d_in=8, d_sae=16, n_inputs=2, source_widths=[8]))
    with pytest.raises(ConfigError, match="no skip"):
        build_dictionary(dict(architecture="crosscoder_l1", d_in=8, d_sae=16, n_inputs=2, skip_connection=True))


def test_equal_widths_stack_as_batch_sources_d():
    cc = crosscoder("crosscoder_l1", widths=(5, 5)).eval()
    x = torch.randn(7, 2, 5)
    assert cc(x).shape == (7, 2, 5)
    assert torch.allclose(cc(x).reshape(7, -1), cc(x.reshape(7, -1)).reshape(7, -1))


def _toy_train(arch: str, tmp_path: Path, **kw):
    toy = two_model_toy(p=0.04, seed=0)
    cfg = dict(architecture=arch, d_in=toy.widths[0], d_sae=48, k=1, n_inputs=2, source_widths=toy.widths,
               dead_after_tokens=10_000, l1_coefficient=kw.pop("l1", 0.0))
    dm = TensorDataModule(toy.x[:-5000], batch_size=1024, val=toy.x[-5000:])
    cc, summary = train_sae(cfg, dm, tmp_path, trainer_cfg=QUIET, save=False, **kw)
    return toy, cc, summary


def test_batchtopk_crosscoder_recovers_the_planted_two_model_toy(tmp_path, one_thread):
    """Each planted concept's best latent (decoder cosine > 0.9) falls in the planted class by the
    relative-norm cut-offs of core.diff (class accuracy >= 0.9), and the live latents' classes
    count the planted sets."""
    from core.diff import classify

    toy, cc, summary = _toy_train("crosscoder_batchtopk", tmp_path, total_tokens=150_000, lr=0.01)
    assert len(summary["scale"]) == 2  # one normalisation factor per source
    idx, cos = best_latents(toy, cc)
    rel = relative_norm(cc)[idx]
    got = classify(rel.numpy())
    hit = (cos > 0.9).numpy() & (got == np.array(toy.classes, dtype=object))
    assert hit.mean() >= 0.9, (cos, got)
    want = torch.tensor([{"shared": 0.5, "a_only": 0.0, "b_only": 1.0}[c] for c in toy.classes])
    assert float((rel - want).abs()[torch.as_tensor(hit)].max()) < 0.1, rel
    assert summary["metrics"]["val/fvu"] < 0.05


def test_l1_crosscoder_recovers_the_planted_two_model_toy(tmp_path, one_thread):
    toy, cc, summary = _toy_train("crosscoder_l1", tmp_path, total_tokens=300_000, lr=0.003, l1=0.3)
    idx, cos = best_latents(toy, cc)
    assert float(cos.median()) > 0.95
    rel = relative_norm(cc)[idx]
    shared = torch.tensor([c == "shared" for c in toy.classes])
    assert float((rel[shared] - 0.5).abs().max()) < 0.1
    assert float(rel[~shared].sub(0.5).abs().min()) > 0.4  # exclusive concepts: relative norm near 0 or 1


def _two_stores(root: Path, toy, n_samples: int = 400) -> list[Path]:
    """The toy's rows as two stores of different widths that hold the same tokens."""
    xa, xb = toy.x.split(toy.widths, dim=1)
    n = xa.shape[0] // n_samples * n_samples
    sample = torch.arange(n) // (n // n_samples)
    position = torch.arange(n) % (n // n_samples)
    paths = []
    for name, x in (("a", xa), ("b", xb)):
        w = ShardWriter(root / name, model=name, hook="blocks.0.hook_resid_post", d=x.shape[1], shard_tokens=8192)
        for lo in range(0, n, 4000):
            hi = min(n, lo + 4000)
            w.add(x[lo:hi], sample[lo:hi], position[lo:hi], torch.zeros(hi - lo), samples_done=int(sample[hi - 1]) + 1)
        w.close()
        paths.append(root / name)
    return paths


def test_train_save_and_load_a_crosscoder_over_two_stores(tmp_path, one_thread):
    toy = two_model_toy(n=20_000, p=0.04)
    paths = _two_stores(tmp_path, toy)
    dm = ActivationDataModule(paths, batch_size=512)
    assert next(iter(dm.train_dataloader())).shape == (512, sum(toy.widths))
    cfg = dict(architecture="crosscoder_batchtopk", d_in=toy.widths[0], d_sae=32, k=1, n_inputs=2,
               source_widths=toy.widths)
    sources = [{"name": "model_a", "model": "a", "hook": "blocks.0.hook_resid_post", "d": toy.widths[0]},
               {"name": "model_b", "model": "b", "hook": "blocks.0.hook_resid_post", "d": toy.widths[1]}]
    cc, _ = train_sae(cfg, dm, tmp_path / "train", trainer_cfg=QUIET, total_tokens=20_000,
                      metadata={"sources": sources, "alignment": {"rows_sha256": "abc"}})
    folder = tmp_path / "train" / "sae"
    cfg_json = read_cfg(folder)
    assert cfg_json["architecture"] == "crosscoder_batchtopk"
    assert (cfg_json["n_inputs"], cfg_json["n_outputs"], cfg_json["source_widths"]) == (2, 2, toy.widths)
    assert [s["name"] for s in cfg_json["sources"]] == ["model_a", "model_b"]
    assert cfg_json["alignment"] == {"rows_sha256": "abc"}
    assert cfg_json["sparsescope"]["sae_lens_loadable"] is False
    back = load_sae(folder)
    x = toy.x[:64]
    assert torch.allclose(back(x), cc(x), atol=1e-5)
    assert torch.allclose(back.source_scale, cc.source_scale)
    with pytest.raises(ConfigError, match=r"a crosscoder over 2 sources \['model_a', 'model_b'\].*not an SAE"):
        load_sae(folder, plain=True)
    with pytest.raises(ConfigError, match="not an SAE"):
        load_sae(folder, expect="sae")
    assert load_sae(folder, expect="crosscoder").kind == "crosscoder"


def test_plain_sae_still_loads_with_plain(tmp_path):
    sae = build_dictionary(dict(architecture="topk", d_in=8, d_sae=16, k=2))
    save_sae(sae, tmp_path / "sae")
    assert load_sae(tmp_path / "sae", plain=True).cfg.n_inputs == 1

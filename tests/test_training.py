"""Training: initialisation, schedules, optimisers, compile, dead-latent counting, the saved folder, resume."""

from __future__ import annotations

import copy

import pytest
import torch
from lightning.pytorch.callbacks import Callback

from core.checkpoint import load_sae
from core.dictionaries import build_dictionary
from core.errors import ConfigError
from core.training import DictionaryModule, TensorDataModule, activation_scale, geometric_median, train_sae
from core.training.module import lr_lambda
from core.training.optimizers import SignSGD, build_optimizer, in_train_mode, set_mode

QUIET = dict(enable_progress_bar=False, logger="csv", accelerator="cpu", devices=1)


def planted(n=2048, d=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    dirs = torch.randn(32, d, generator=g)
    coeff = (torch.rand(n, 32, generator=g) < 0.1) * torch.rand(n, 32, generator=g)
    return coeff @ dirs + 3.0


def test_geometric_median_ignores_outliers():
    g = torch.Generator().manual_seed(0)
    center = torch.tensor([1.0, -2.0, 0.5])
    inliers = center + 0.01 * torch.randn(200, 3, generator=g)
    outliers = torch.full((60, 3), 100.0)
    pts = torch.cat([inliers, outliers])
    med = geometric_median(pts)
    assert (med - center).norm() < 0.05
    assert (pts.mean(0) - center).norm() > 10


def test_geometric_median_of_symmetric_points_is_their_center():
    pts = torch.tensor([[0.0, 0.0], [2.0, 0.0], [0.0, 2.0], [2.0, 2.0]])
    assert torch.allclose(geometric_median(pts), torch.tensor([1.0, 1.0]), atol=1e-5)


def test_activation_scale_gives_unit_mean_squared_norm():
    x = 5.0 * torch.randn(1000, 16)
    s = activation_scale(x)
    assert (x * s).pow(2).sum(-1).mean().item() == pytest.approx(1.0, rel=1e-5)


def test_lr_schedule_warms_up_and_decays():
    f = lambda s: lr_lambda(s, total_steps=100, warmup_steps=10, decay_fraction=0.2)  # noqa: E731
    assert f(0) == pytest.approx(0.1) and f(9) == pytest.approx(1.0)
    assert f(50) == 1.0 and f(79) == 1.0
    assert f(90) == pytest.approx(0.5) and f(100) == 0.0


@pytest.mark.parametrize("arch", ["topk", "batchtopk", "matryoshka", "relu"])
def test_encoder_scale_init_is_the_least_squares_optimum(arch):
    """After the fit the initial reconstruction error is minimal along the encoder's scale:
    refitting gives c = 1, and scaling by 0.9 or 1.1 reconstructs worse."""
    from core.training.init import fit_encoder_scale, init_from_sample

    torch.manual_seed(0)
    x = torch.randn(512, 16) @ torch.randn(16, 16) + 3.0
    x = x * activation_scale(x)
    sae = build_dictionary(dict(architecture=arch, d_in=16, d_sae=64, k=4, l1_coefficient=0.1,
                                matryoshka_prefixes=[16, 64]))
    init_from_sample(sae, x)

    @torch.no_grad()
    def err(model):  # on a copy: a training-mode pass updates BatchTopK's running threshold
        return float((copy.deepcopy(model).loss(x).reconstruction - x).pow(2).sum())

    before = err(sae)
    c = fit_encoder_scale(sae, x)
    assert c > 0 and c != pytest.approx(1.0, abs=1e-3)
    best = err(sae)
    assert best < before
    for factor in (0.9, 1.1):
        other = build_dictionary(sae.cfg)
        other.load_state_dict(sae.state_dict())
        with torch.no_grad():
            other.W_enc.mul_(factor)
        assert err(other) > best
    assert fit_encoder_scale(sae, x) == pytest.approx(1.0, abs=1e-4)
    for name, buf in sae.named_buffers():  # the trial pass leaves running statistics alone
        assert torch.count_nonzero(buf) == 0, name


def test_encoder_scale_init_leaves_threshold_architectures_alone():
    from core.training.init import fit_encoder_scale

    x = torch.randn(64, 8)
    for arch in ("jumprelu", "gated"):
        sae = build_dictionary(dict(architecture=arch, d_in=8, d_sae=16))
        w = sae.W_enc.detach().clone()
        assert fit_encoder_scale(sae, x) == 1.0
        assert torch.equal(sae.W_enc, w)


def test_dead_latents_counted_in_tokens_since_last_fire():
    sae = build_dictionary(dict(architecture="topk", d_in=4, d_sae=6, k=1))
    module = DictionaryModule(sae, lr=1e-3, total_steps=10, dead_after_tokens=100)
    fired = torch.tensor([3, 0, 0, 1, 0, 0])
    module._count_fires(fired, 60)
    module._count_fires(torch.tensor([0, 2, 0, 0, 0, 0]), 60)
    assert module.tokens_since_fired.tolist() == [60, 0, 120, 60, 120, 120]
    assert module.dead_mask().tolist() == [False, False, True, False, True, True]


def test_sparsity_and_k_warmups():
    relu = build_dictionary(dict(architecture="relu", d_in=4, d_sae=8, sparsity_warmup=0.1))
    assert relu.sparsity_scale(0.05) == pytest.approx(0.5) and relu.sparsity_scale(0.5) == 1.0
    topk = build_dictionary(dict(architecture="topk", d_in=4, d_sae=64, k=4, k_anneal_from=32,
                                 k_anneal_fraction=0.5))
    assert topk.current_k(0.0) == 32 and topk.current_k(0.25) == 18 and topk.current_k(0.9) == 4


def test_unknown_trainer_key_is_config_error(tmp_path):
    dm = TensorDataModule(planted(), batch_size=256)
    with pytest.raises(ConfigError, match="unknown trainer keys"):
        train_sae(dict(architecture="topk", d_in=8, d_sae=32, k=2), dm, tmp_path, total_tokens=512,
                  trainer_cfg={"gpus": 2})


def test_train_sae_writes_a_loadable_folder_in_model_units(tmp_path):
    x = planted()
    dm = TensorDataModule(x, batch_size=256)
    sae, summary = train_sae(dict(architecture="topk", d_in=8, d_sae=32, k=3), dm, tmp_path,
                             total_tokens=256 * 12, lr=5e-3, trainer_cfg=QUIET)
    assert summary["steps"] == 12 and summary["tokens"] == 256 * 12
    assert (tmp_path / "checkpoints" / "last.ckpt").exists()
    assert (tmp_path / "logs" / "metrics.csv").exists()
    # decoder rows were unit norm in scaled units, so after the fold they are all 1/scale
    norms = sae.W_dec.norm(dim=1)
    assert torch.allclose(norms, torch.full_like(norms, 1.0 / summary["scale"]), rtol=1e-4)
    loaded = load_sae(tmp_path / "sae")
    loaded.eval()
    assert torch.allclose(loaded(x[:50]), sae(x[:50]), atol=1e-5)
    fvu = (sae(x) - x).pow(2).sum() / (x - x.mean(0)).pow(2).sum()
    assert fvu < 0.9


class _StopAt(Callback):
    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.global_step >= self.step:
            trainer.should_stop = True


def test_resume_from_lightning_checkpoint_matches_uninterrupted_run(tmp_path):
    x = planted(n=256 * 4)
    cfg = dict(architecture="batchtopk", d_in=8, d_sae=32, k=3)
    kw = dict(total_tokens=256 * 8, lr=5e-3, save=False,
              trainer_cfg=dict(QUIET, checkpoint_every_n_steps=4, val_check_interval=100, logger="none"))
    full, s_full = train_sae(cfg, TensorDataModule(x, batch_size=256, shuffle=False), tmp_path / "a", **kw)
    _, s_half = train_sae(cfg, TensorDataModule(x, batch_size=256, shuffle=False), tmp_path / "b",
                          callbacks=[_StopAt(4)], **kw)
    assert s_half["steps"] == 4
    resumed, s_res = train_sae(cfg, TensorDataModule(x, batch_size=256, shuffle=False), tmp_path / "b", **kw)
    assert s_res["resumed_from"].endswith("last.ckpt")
    assert s_res["steps"] == 8 and s_res["tokens"] == 256 * 8
    for name, p in full.state_dict().items():
        assert torch.allclose(p, resumed.state_dict()[name], atol=1e-5), name


def test_bf16_mixed_keeps_threshold_fp32_and_trains(tmp_path):
    dm = TensorDataModule(planted(), batch_size=256)
    sae, summary = train_sae(dict(architecture="jumprelu", d_in=8, d_sae=32, l0_coefficient=1e-3,
                                  jumprelu_bandwidth=0.05, jumprelu_init_threshold=0.05),
                             dm, tmp_path, total_tokens=256 * 4, lr=1e-2, save=False,
                             trainer_cfg=dict(QUIET, precision="bf16-mixed", logger="none"))
    assert sae.threshold.dtype == torch.float32
    assert not torch.allclose(sae.threshold, torch.full_like(sae.threshold, 0.05))
    assert summary["steps"] == 4


def test_train_and_evaluate_stages_on_a_store(tmp_path):
    from omegaconf import OmegaConf

    from core.io import read_json
    from core.stages import evaluate as evaluate_stage
    from core.stages import train as train_stage
    from core.store import ShardWriter

    x = planted(n=4096)
    with ShardWriter(tmp_path / "store", model="toy", hook="h", d=8, shard_tokens=1024) as w:
        w.add(x, torch.arange(4096) // 16, torch.arange(4096) % 16, torch.zeros(4096, dtype=torch.long),
              samples_done=256)
    cfg = OmegaConf.create({
        "seed": 0,
        "sae": {"architecture": "topk", "d_in": None, "d_sae": None, "expansion_factor": 4, "k": 3},
        "data": {"root": str(tmp_path / "store"), "batch_size": 512, "holdout_fraction": 0.1},
        "trainer": {"total_tokens": 512 * 6, "lr": 5e-3, "accelerator": "cpu", "enable_progress_bar": False},
    })
    out = train_stage.run(cfg, tmp_path / "run")
    assert out["train"]["steps"] == 6
    assert (tmp_path / "run" / "sae" / "cfg.json").exists()
    metrics = evaluate_stage.run(cfg, tmp_path / "run")["metrics"]["core"]
    on_disk = read_json(tmp_path / "run" / "metrics.json")["core"]
    assert on_disk == metrics
    for key in ("mse", "fvu", "cosine", "l0", "dead_frac", "dense_frac", "l2_ratio",
                "relative_reconstruction_bias"):
        assert key in metrics
    assert 0 < metrics["l0"] <= 3 and 0 <= metrics["fvu"] < 1.5 and -1 <= metrics["cosine"] <= 1


def test_metrics_on_known_reconstructions():
    from core.eval.metrics import MetricAccumulator

    y = torch.tensor([[1.0, 0.0], [0.0, 2.0], [3.0, 1.0]])
    acc = MetricAccumulator(d_sae=3)
    acc.update(y, 0.5 * y, torch.tensor([[1.0, 0, 0], [0, 2.0, 0], [1.0, 0, 0]]))
    m = acc.result()
    assert m["cosine"] == pytest.approx(1.0)
    assert m["l2_ratio"] == pytest.approx(0.5)
    assert m["relative_reconstruction_bias"] == pytest.approx(0.5)
    assert m["l0"] == pytest.approx(1.0) and m["dead_frac"] == pytest.approx(1 / 3)
    assert m["dense_frac"] == pytest.approx(2 / 3)
    err = (0.25 * y.pow(2)).sum()
    assert m["mse"] == pytest.approx(float(err / 6))
    assert m["fvu"] == pytest.approx(float(err / (y - y.mean(0)).pow(2).sum()))


def test_resuming_a_checkpoint_of_another_architecture_is_a_config_error(tmp_path):
    dm = TensorDataModule(planted(), batch_size=256)
    kw = dict(total_tokens=512, lr=1e-3, save=False, trainer_cfg=dict(QUIET, logger="none"))
    train_sae(dict(architecture="topk", d_in=8, d_sae=32, k=2), dm, tmp_path, **kw)
    with pytest.raises(ConfigError, match="does not match"):
        train_sae(dict(architecture="batchtopk", d_in=8, d_sae=32, k=2), dm, tmp_path, **kw)


def test_sign_sgd_moves_every_weight_by_lr_against_the_gradient_sign():
    w = torch.nn.Parameter(torch.tensor([1.0, -2.0, 0.5, 3.0]))
    w.grad = torch.tensor([1e-6, -40.0, 0.0, 2.0])
    SignSGD([w], lr=0.1).step()
    assert torch.allclose(w.detach(), torch.tensor([0.9, -1.9, 0.5, 2.9]))


def test_schedule_free_signum_eval_point_is_the_average_and_train_restores_y():
    w = torch.nn.Parameter(torch.zeros(3))
    opt = build_optimizer("signum", [{"params": [w], "lr": 0.1}], lr=0.1, betas=(0.9, 0.999), fused=False)
    assert isinstance(opt, torch.optim.Optimizer)
    set_mode(opt, True)
    for g in ([1.0, -1.0, 1.0], [1.0, 1.0, -1.0], [1.0, -1.0, -1.0]):
        w.grad = torch.tensor(g)
        opt.step()
    y = w.detach().clone()
    z = opt.state[w]["z"].clone()
    set_mode(opt, False)
    x = w.detach().clone()
    assert not in_train_mode(opt)
    assert torch.allclose(y, 0.95 * x + 0.05 * z, atol=1e-6)  # y interpolates x and z
    # z ran plain sign descent: three steps of 0.1 in the first coordinate
    assert torch.allclose(z, torch.tensor([-0.3, 0.1, 0.1]), atol=1e-6)
    set_mode(opt, True)
    assert torch.allclose(w.detach(), y, atol=1e-6)


def test_unknown_optimizer_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="unknown trainer.optimizer 'lion'"):
        train_sae(dict(architecture="topk", d_in=8, d_sae=32, k=2), TensorDataModule(planted(), batch_size=256),
                  tmp_path, total_tokens=512, optimizer="lion", trainer_cfg=dict(QUIET, logger="none"))


@pytest.mark.parametrize("name", ["signum", "adamw_schedulefree"])
def test_schedule_free_training_learns_and_leaves_the_average_unit_norm(tmp_path, name):
    x = planted()
    sae, summary = train_sae(dict(architecture="topk", d_in=8, d_sae=32, k=3), TensorDataModule(x, batch_size=256),
                             tmp_path, total_tokens=256 * 24, lr=5e-3, optimizer=name, save=False,
                             trainer_cfg=dict(QUIET, logger="none"))
    assert summary["optimizer"] == name
    norms = sae.W_dec.norm(dim=1)
    assert torch.allclose(norms, torch.full_like(norms, 1.0 / summary["scale"]), rtol=1e-4)
    fvu = (sae(x) - x).pow(2).sum() / (x - x.mean(0)).pow(2).sum()
    assert fvu < 0.5


@pytest.mark.parametrize("name", ["signum", "adamw_schedulefree"])
def test_schedule_free_resume_and_mid_run_validation_match_one_uninterrupted_run(tmp_path, name):
    x = planted(n=256 * 4)
    cfg = dict(architecture="topk", d_in=8, d_sae=32, k=3)
    kw = dict(total_tokens=256 * 8, lr=5e-3, warmup_steps=2, optimizer=name, save=False)

    def dm():
        return TensorDataModule(x, batch_size=256, shuffle=False, val=planted(n=512, seed=1))

    plain = dict(QUIET, logger="none", checkpoint_every_n_steps=4, val_check_interval=100)
    full, _ = train_sae(cfg, dm(), tmp_path / "a", trainer_cfg=plain, **kw)
    # validating every 3 steps swaps the average in and out; the trajectory must not notice
    validated, _ = train_sae(cfg, dm(), tmp_path / "v", trainer_cfg=dict(plain, val_check_interval=3), **kw)
    _, s_half = train_sae(cfg, dm(), tmp_path / "b", trainer_cfg=plain, callbacks=[_StopAt(4)], **kw)
    assert s_half["steps"] == 4
    resumed, s_res = train_sae(cfg, dm(), tmp_path / "b", trainer_cfg=plain, **kw)
    assert s_res["resumed_from"].endswith("last.ckpt") and s_res["steps"] == 8
    for name_, p in full.state_dict().items():
        assert torch.allclose(p, validated.state_dict()[name_], atol=1e-5), name_
        assert torch.allclose(p, resumed.state_dict()[name_], atol=1e-5), name_


def test_compiled_training_matches_the_plain_path(tmp_path):
    x = planted(n=256 * 4)
    cfg = dict(architecture="relu", d_in=8, d_sae=32, l1_coefficient=1e-2, sparsity_warmup=0.5)
    kw = dict(total_tokens=256 * 6, lr=5e-3, save=False, trainer_cfg=dict(QUIET, logger="none", val_check_interval=100))
    plain, _ = train_sae(cfg, TensorDataModule(x, batch_size=256, shuffle=False), tmp_path / "a", **kw)
    from torch._dynamo.utils import counters

    counters.clear()
    compiled, _ = train_sae(cfg, TensorDataModule(x, batch_size=256, shuffle=False), tmp_path / "b",
                            compile=True, **kw)
    assert counters["stats"]["unique_graphs"] >= 1  # the loss really went through dynamo
    for name, p in plain.state_dict().items():
        assert torch.allclose(p, compiled.state_dict()[name], atol=1e-4), name

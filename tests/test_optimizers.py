"""Optimisers: sign descent, the schedule-free train/eval switch through Lightning, resume."""

from __future__ import annotations

import pytest
import torch
from lightning.pytorch.callbacks import Callback

from core.errors import ConfigError
from core.training import TensorDataModule, train_sae
from core.training.optimizers import SignSGD, build_optimizer, in_train_mode, set_mode

QUIET = dict(enable_progress_bar=False, logger="none", accelerator="cpu", devices=1)


def planted(n=2048, d=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    dirs = torch.randn(32, d, generator=g)
    coeff = (torch.rand(n, 32, generator=g) < 0.1) * torch.rand(n, 32, generator=g)
    return coeff @ dirs + 3.0


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
                  tmp_path, total_tokens=512, optimizer="lion", trainer_cfg=QUIET)


@pytest.mark.parametrize("name", ["signum", "adamw_schedulefree"])
def test_schedule_free_training_learns_and_leaves_the_average_unit_norm(tmp_path, name):
    x = planted()
    sae, summary = train_sae(dict(architecture="topk", d_in=8, d_sae=32, k=3), TensorDataModule(x, batch_size=256),
                             tmp_path, total_tokens=256 * 24, lr=5e-3, optimizer=name, save=False,
                             trainer_cfg=QUIET)
    assert summary["optimizer"] == name
    norms = sae.W_dec.norm(dim=1)
    assert torch.allclose(norms, torch.full_like(norms, 1.0 / summary["scale"]), rtol=1e-4)
    fvu = (sae(x) - x).pow(2).sum() / (x - x.mean(0)).pow(2).sum()
    assert fvu < 0.5


class _StopAt(Callback):
    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.global_step >= self.step:
            trainer.should_stop = True


@pytest.mark.parametrize("name", ["signum", "adamw_schedulefree"])
def test_schedule_free_resume_and_mid_run_validation_match_one_uninterrupted_run(tmp_path, name):
    x = planted(n=256 * 4)
    cfg = dict(architecture="topk", d_in=8, d_sae=32, k=3)
    kw = dict(total_tokens=256 * 8, lr=5e-3, warmup_steps=2, optimizer=name, save=False)

    def dm():
        return TensorDataModule(x, batch_size=256, shuffle=False, val=planted(n=512, seed=1))

    plain = dict(QUIET, checkpoint_every_n_steps=4, val_check_interval=100)
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
    kw = dict(total_tokens=256 * 6, lr=5e-3, save=False, trainer_cfg=dict(QUIET, val_check_interval=100))
    plain, _ = train_sae(cfg, TensorDataModule(x, batch_size=256, shuffle=False), tmp_path / "a", **kw)
    from torch._dynamo.utils import counters

    counters.clear()
    compiled, _ = train_sae(cfg, TensorDataModule(x, batch_size=256, shuffle=False), tmp_path / "b",
                            compile=True, **kw)
    assert counters["stats"]["unique_graphs"] >= 1  # the loss really went through dynamo
    for name, p in plain.state_dict().items():
        assert torch.allclose(p, compiled.state_dict()[name], atol=1e-4), name

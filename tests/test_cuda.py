"""The CUDA paths: fast paths, bf16 autocast, torch.compile and resume on a GPU.

Skipped where no GPU is present (CI has none); run on a lent GPU with
``python -m pytest tests/test_cuda.py`` (bench/gpu_run.sh does). No timings here.
"""

from __future__ import annotations

import pytest
import torch
from test_training import _StopAt  # tests/ is on sys.path under pytest's default import mode

from core.dictionaries import build_dictionary
from core.training import TensorDataModule, train_sae

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
GPU = dict(enable_progress_bar=False, logger="none", accelerator="gpu", devices=1)


def planted(n: int = 4096, d: int = 32, n_dirs: int = 96, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    dirs = torch.randn(n_dirs, d, generator=g)
    coeff = (torch.rand(n, n_dirs, generator=g) < 0.05) * torch.rand(n, n_dirs, generator=g)
    return coeff @ dirs + 1.0


def _loss_and_grads(sae, x, dead):
    sae.train()
    out = sae.loss(x, dead_mask=dead)
    out.loss.backward()
    grads = {n: p.grad.detach().cpu() for n, p in sae.named_parameters() if p.grad is not None}
    return out.loss.detach().cpu(), out.reconstruction.detach().cpu(), out.fired.cpu(), grads


@pytest.mark.parametrize("arch", ["topk", "batchtopk", "matryoshka"])
def test_sparse_decode_on_cuda_matches_dense_and_cpu(arch):
    """The index_select/index_add kernels on the GPU give the dense path's loss and gradients,
    and both give the CPU's (atomics reorder sums, so float tolerance, not bit equality)."""
    torch.manual_seed(0)
    cfg = dict(architecture=arch, d_in=64, d_sae=1024, k=16, aux_k=32)
    x = torch.randn(512, 64) * 2 + 0.5
    dead = torch.zeros(1024, dtype=torch.bool)
    dead[::7] = True
    ref = build_dictionary({**cfg, "sparse_decode": False})
    results = {}
    for device in ("cpu", "cuda"):
        for sparse in (False, True):
            sae = build_dictionary({**cfg, "sparse_decode": sparse})
            sae.load_state_dict(ref.state_dict())
            results[device, sparse] = _loss_and_grads(sae.to(device), x.to(device), dead.to(device))
    base = results["cpu", False]
    for key, (loss, rec, fired, grads) in results.items():
        assert torch.allclose(loss, base[0], rtol=1e-4), key
        assert torch.allclose(rec, base[1], atol=1e-4, rtol=1e-4), key
        assert torch.equal(fired, base[2]), key
        for name, g in grads.items():
            assert torch.allclose(g, base[3][name], atol=1e-4, rtol=1e-3), (key, name)


def test_bf16_autocast_on_gpu_keeps_fp32_pieces_and_tracks_fp32(tmp_path):
    """bf16-mixed: parameters and the JumpReLU threshold stay fp32 and train; a TopK SAE trained
    under autocast reconstructs held-out data about as well as the fp32 run."""
    x = planted()
    sae, summary = train_sae(dict(architecture="jumprelu", d_in=32, d_sae=128, l0_coefficient=1e-3,
                                  jumprelu_bandwidth=0.05, jumprelu_init_threshold=0.05),
                             TensorDataModule(x, batch_size=512), tmp_path / "j", total_tokens=512 * 6,
                             lr=1e-2, save=False, trainer_cfg=dict(GPU, precision="bf16-mixed"))
    assert summary["steps"] == 6
    assert all(p.dtype == torch.float32 for p in sae.parameters())
    assert not torch.allclose(sae.threshold, torch.full_like(sae.threshold, 0.05))

    held = planted(n=1024, seed=1)
    fvu = {}
    for precision in ("32-true", "bf16-mixed"):
        topk, _ = train_sae(dict(architecture="topk", d_in=32, d_sae=256, k=8),
                            TensorDataModule(x, batch_size=512), tmp_path / precision, total_tokens=512 * 40,
                            lr=5e-3, save=False, trainer_cfg=dict(GPU, precision=precision))
        with torch.no_grad():
            err = (topk(held) - held).pow(2).sum() / (held - held.mean(0)).pow(2).sum()
        fvu[precision] = float(err)
    assert fvu["32-true"] < 0.5, fvu
    assert abs(fvu["bf16-mixed"] - fvu["32-true"]) < 0.05, fvu


def test_compiled_training_on_gpu_matches_plain(tmp_path):
    import torch._dynamo

    x = planted(n=2048)
    torch._dynamo.reset()
    runs = {}
    for compiled in (False, True):
        sae, summary = train_sae(dict(architecture="topk", d_in=32, d_sae=256, k=8), TensorDataModule(x, batch_size=256, shuffle=False),
                                 tmp_path / str(compiled), total_tokens=256 * 6, lr=5e-3, save=False, warmup_steps=2,
                                 compile=compiled, trainer_cfg=GPU)
        runs[compiled] = sae.state_dict()
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] >= 1
    for name, p in runs[False].items():
        assert torch.allclose(p, runs[True][name], atol=1e-4, rtol=1e-3), name


@pytest.mark.parametrize("optimizer", ["adam", "signum"])
def test_resume_on_gpu_matches_uninterrupted_run(tmp_path, optimizer):
    """Optimiser state (Adam moments, the schedule-free average) saved from the GPU and resumed
    there gives the uninterrupted run's parameters."""
    x = planted(n=256 * 4)  # the stop falls on an epoch boundary, where Lightning resumes exactly
    cfg = dict(architecture="topk", d_in=32, d_sae=128, k=4)
    kw = dict(total_tokens=256 * 8, lr=5e-3, optimizer=optimizer, save=False,
              trainer_cfg=dict(GPU, checkpoint_every_n_steps=4, val_check_interval=100))
    full, _ = train_sae(cfg, TensorDataModule(x, batch_size=256, shuffle=False), tmp_path / "a", **kw)
    train_sae(cfg, TensorDataModule(x, batch_size=256, shuffle=False), tmp_path / "b", callbacks=[_StopAt(4)], **kw)
    resumed, summary = train_sae(cfg, TensorDataModule(x, batch_size=256, shuffle=False), tmp_path / "b", **kw)
    assert summary["resumed_from"].endswith("last.ckpt") and summary["steps"] == 8
    for name, p in full.state_dict().items():
        assert torch.allclose(p, resumed.state_dict()[name], atol=1e-5), name

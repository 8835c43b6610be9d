"""Every fast path agrees with the plain path it replaces (values and gradients).

Fast paths: sparse TopK encode/decode kernels (vs dense matmuls), the b_dec gradient taken
as a matrix-vector product (vs the per-token input gradient), AuxK reading only the dead
columns (vs masking the whole pre-activation matrix), and Adam's fused update (vs the
per-tensor loop). No timings here: bench/ measures speed.
"""

from __future__ import annotations

import copy

import pytest
import torch

from core.dictionaries import build_dictionary
from core.dictionaries.sparse import ActiveSet, gather_preactivation, sparse_decode
from core.training.module import DictionaryModule


def _grads(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.grad.clone() for n, p in module.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("x_needs_grad", [False, True])
def test_centered_gather_matches_autograd(x_needs_grad):
    torch.manual_seed(0)
    n, d, m = 11, 6, 20
    active = ActiveSet.from_mask(torch.rand(n, m) < 0.25)
    x = torch.randn(n, d, requires_grad=x_needs_grad)
    c = torch.randn(d, requires_grad=True)
    W = torch.randn(d, m, requires_grad=True)
    b = torch.randn(m, requires_grad=True)
    D = torch.randn(m, d, requires_grad=True)
    go = torch.randn(n, d)
    with torch.no_grad():
        pre = (x - c) @ W + b
    vals = gather_preactivation(x, W, b, pre, active, center=c)
    sparse_decode(vals, D, active).backward(go)
    leaves = [t for t in (x, c, W, b, D) if t.requires_grad]
    fast = [t.grad.clone() for t in leaves]
    for t in leaves:
        t.grad = None
    mask = torch.zeros(n, m)
    mask[active.rows, active.cols] = 1.0
    (((x - c) @ W + b) * mask @ D).backward(go)
    for g, t in zip(fast, leaves, strict=True):
        assert torch.allclose(g, t.grad, atol=1e-5, rtol=1e-5)


def test_pre_gathered_values_give_the_same_result():
    torch.manual_seed(1)
    x, W, b = torch.randn(7, 5), torch.randn(5, 9, requires_grad=True), torch.randn(9)
    pre = x @ W.detach() + b
    idx = pre.topk(3, dim=-1).indices
    active = ActiveSet.from_topk(idx, 9)
    full = gather_preactivation(x, W, b, pre, active)
    gathered = gather_preactivation(x, W, b, pre.gather(1, idx).reshape(-1), active)
    assert torch.equal(full, gathered)


@pytest.mark.parametrize("n_dead", [0, 10, 90])
@pytest.mark.parametrize("shape", ["sae", "transcoder"])
def test_sparse_topk_training_loss_matches_dense(n_dead, shape):
    """Loss, reconstruction, fired counts and every gradient, with AuxK on few dead latents
    (dead-column gather) and on most of them (masked), and on a transcoder (no centring)."""
    torch.manual_seed(2)
    d_sae = 128
    cfg = dict(architecture="topk", d_in=24, d_sae=d_sae, k=6, aux_k=16)
    x = torch.randn(96, 24) * 2 + 0.5
    y = None
    if shape == "transcoder":
        cfg.update(d_out=18, skip_connection=True)
        y = torch.randn(96, 18)
    dead = torch.zeros(d_sae, dtype=torch.bool)
    dead[torch.randperm(d_sae)[:n_dead]] = True
    plain = build_dictionary({**cfg, "sparse_decode": False})
    with torch.no_grad():
        plain.b_dec.normal_()
        plain.b_enc.normal_(std=0.1)
    fast = build_dictionary({**cfg, "sparse_decode": True})
    fast.load_state_dict(plain.state_dict())
    outs = []
    for sae in (plain, fast):
        sae.train()
        out = sae.loss(x, y, dead_mask=dead)
        out.loss.backward()
        outs.append((out, _grads(sae)))
    (o_p, g_p), (o_f, g_f) = outs
    assert torch.allclose(o_p.loss, o_f.loss, atol=1e-5, rtol=1e-5)
    assert torch.allclose(o_p.terms["aux"], o_f.terms["aux"], atol=1e-5, rtol=1e-5)
    assert (o_p.terms["aux"] > 0) == (n_dead > 0)
    assert torch.allclose(o_p.reconstruction, o_f.reconstruction, atol=1e-5)
    assert torch.equal(o_p.fired, o_f.fired)
    assert set(g_p) == set(g_f)
    for name in g_p:
        assert torch.allclose(g_p[name], g_f[name], atol=1e-5, rtol=1e-4), name


@pytest.mark.parametrize("arch", ["relu", "gated", "jumprelu", "batchtopk"])
@pytest.mark.parametrize("shape", ["sae", "transcoder"])
def test_fused_encoder_matches_plain(arch, shape):
    """The fused dense encoder (bias in the matmul, ``b_dec`` gradient as a matrix-vector
    product) and the fused decoder/L1 give the plain path's loss, terms and every gradient."""
    torch.manual_seed(3)
    cfg = dict(architecture=arch, d_in=20, d_sae=96, k=5, l1_coefficient=0.3, target_l0=5.0,
               l0_coefficient=0.1, sparse_decode=False)
    x = torch.randn(64, 20) * 3 + 1.0
    y = None
    if shape == "transcoder":
        cfg.update(d_out=12, skip_connection=True)
        y = torch.randn(64, 12)
    plain = build_dictionary({**cfg, "fused_encoder": False})
    with torch.no_grad():
        plain.b_dec.normal_()
        for p in plain.parameters():
            p.add_(torch.randn_like(p) * 0.01)
    fast = build_dictionary({**cfg, "fused_encoder": True})
    fast.load_state_dict(plain.state_dict())
    outs = []
    for sae in (plain, fast):
        sae.train()
        out = sae.loss(x, y, progress=0.5)
        out.loss.backward()
        outs.append((out, _grads(sae)))
    (o_p, g_p), (o_f, g_f) = outs
    assert o_p.loss.item() > 0
    assert torch.allclose(o_p.loss, o_f.loss, atol=1e-5, rtol=1e-5)
    for name in o_p.terms:
        assert torch.allclose(o_p.terms[name].float(), o_f.terms[name].float(), atol=1e-5, rtol=1e-5), name
    assert torch.allclose(o_p.reconstruction, o_f.reconstruction, atol=1e-5)
    assert set(g_p) == set(g_f) and "b_dec" in g_p
    for name in g_p:
        assert g_p[name].abs().sum() > 0 or name == "W_skip", name
        assert torch.allclose(g_p[name], g_f[name], atol=1e-4, rtol=1e-4), name


def test_centered_linear_input_gradient():
    """When the input does need a gradient, it is the plain one too."""
    from core.dictionaries.dense import centered_linear

    torch.manual_seed(4)
    x = torch.randn(8, 5, requires_grad=True)
    c = torch.randn(5, requires_grad=True)
    W = torch.randn(5, 7, requires_grad=True)  # noqa: N806
    b = torch.randn(7, requires_grad=True)
    go = torch.randn(8, 7)
    centered_linear(x, W, b, c).backward(go)
    fast = [t.grad.clone() for t in (x, c, W, b)]
    for t in (x, c, W, b):
        t.grad = None
    ((x - c) @ W + b).backward(go)
    for f, t in zip(fast, (x, c, W, b), strict=True):
        assert torch.allclose(f, t.grad, atol=1e-5)


def _train_steps(module: DictionaryModule, batches: list[torch.Tensor]) -> None:
    opt = module.configure_optimizers()["optimizer"]
    for x in batches:
        opt.zero_grad(set_to_none=True)
        out = module.sae.loss(x, dead_mask=module.dead_mask())
        out.loss.backward()
        module.on_before_optimizer_step(opt)
        opt.step()
        module.sae.post_step()


@pytest.mark.parametrize("arch", ["topk", "relu"])
def test_fused_adam_matches_plain_adam(arch):
    torch.manual_seed(3)
    cfg = dict(architecture=arch, d_in=16, d_sae=64, k=4, l1_coefficient=1.0)
    sae = build_dictionary(cfg)
    batches = [torch.randn(32, 16) for _ in range(5)]
    results = []
    for fused in (False, True):
        module = DictionaryModule(copy.deepcopy(sae), lr=1e-2, total_steps=5, fused_optimizer=fused)
        assert module.use_fused_adam() == fused
        _train_steps(module, batches)
        results.append(module.sae.state_dict())
    plain, fused = results
    moved = sum(float((plain[n] - sae.state_dict()[n]).abs().sum()) for n in plain)
    assert moved > 0
    for name in plain:
        assert torch.allclose(plain[name], fused[name], atol=1e-5, rtol=1e-4), name


@pytest.mark.parametrize("n", [300, 70_000])
def test_numpy_stable_argsort_equals_torch_sort(n):
    from core.dictionaries.sparse import stable_argsort

    idx = torch.randint(0, n, (5000,))
    assert torch.equal(stable_argsort(idx, n), stable_argsort(idx, n, fast=False))
    assert torch.equal(stable_argsort(idx, n), torch.sort(idx, stable=True).indices)


def test_topk_row_offsets_match_counted_offsets():
    from core.dictionaries.sparse import _offsets

    idx = torch.randint(0, 50, (7, 4))
    active = ActiveSet.from_topk(idx, 50)
    assert torch.equal(active.row_offsets, _offsets(active.rows, 7))


def test_blocked_transpose_equals_plain_transpose():
    from core.dictionaries.sparse import transpose_contiguous

    a = torch.randn(1000, 7)
    out = transpose_contiguous(a, block=64)
    assert out.is_contiguous() and torch.equal(out, a.t())
    assert torch.equal(transpose_contiguous(a[:10]), a[:10].t())


@pytest.mark.parametrize("arch", ["topk", "batchtopk", "matryoshka"])
def test_reused_preactivation_tensor_matches_fresh_allocation(arch):
    """Two losses taken before either backward (so the second overwrites the reused tensor)
    give the freshly allocated path's losses and gradients; the tensor is neither saved nor
    copied with the module."""
    torch.manual_seed(4)
    cfg = dict(architecture=arch, d_in=20, d_sae=96, k=5, aux_k=8, sparse_decode=True)
    xs = [torch.randn(48, 20) * 2 + 0.3 for _ in range(2)]
    dead = torch.zeros(96, dtype=torch.bool)
    dead[::4] = True
    runs = []
    ref = build_dictionary(cfg)
    for reuse in (False, True):
        sae = build_dictionary(cfg)
        sae.load_state_dict(ref.state_dict())
        sae.reuse_preactivations = reuse
        sae.train()
        outs = [sae.loss(x, dead_mask=dead) for x in xs]
        sum(o.loss for o in outs).backward()
        runs.append(([o.loss.detach() for o in outs], _grads(sae), sae))
    (l_f, g_f, _), (l_r, g_r, reused) = runs
    assert "pre" in reused._scratch._tensors
    for a, b in zip(l_f, l_r, strict=True):
        assert torch.allclose(a, b, atol=1e-6)
    for name in g_f:
        assert torch.allclose(g_f[name], g_r[name], atol=1e-6), name
    assert not any("scratch" in k or k == "pre" for k in reused.state_dict())
    assert copy.deepcopy(reused)._scratch._tensors == {}

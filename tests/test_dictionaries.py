"""Each architecture's defining property, the sparse kernels' parity with the dense path,
the scaling fold, and the transcoder/crosscoder shapes."""

from __future__ import annotations

import pytest
import torch

from core.dictionaries import REGISTRY, DictionaryConfig, build_dictionary
from core.errors import ConfigError, ShapeError

ARCHS = ["relu", "topk", "batchtopk", "jumprelu", "gated", "matryoshka"]


def make(arch: str, d_in: int = 16, d_sae: int = 64, **kw):
    torch.manual_seed(0)
    cfg = dict(architecture=arch, d_in=d_in, d_sae=d_sae, k=4, l1_coefficient=1.0, l0_coefficient=0.1)
    cfg.update(kw)
    return build_dictionary(cfg)


def test_registry_has_every_architecture():
    assert set(ARCHS) <= set(REGISTRY)


def test_unknown_architecture_lists_valid_names():
    with pytest.raises(ConfigError) as err:
        build_dictionary(dict(architecture="nope", d_in=4, d_sae=8))
    for name in ARCHS:
        assert name in str(err.value)


def test_unknown_config_key_is_config_error():
    with pytest.raises(ConfigError, match="unknown dictionary config keys"):
        build_dictionary(dict(architecture="topk", d_in=4, d_sae=8, k=2, colour="red"))


def test_topk_needs_k():
    with pytest.raises(ConfigError, match="sae.k"):
        build_dictionary(dict(architecture="topk", d_in=4, d_sae=8))


def test_wrong_input_width_is_shape_error():
    with pytest.raises(ShapeError):
        make("topk").encode(torch.randn(3, 5))


def test_topk_has_exactly_k_active():
    sae = make("topk", k=5)
    sae.b_enc.data.fill_(10.0)  # every pre-activation positive, so ReLU removes none of the k
    f = sae.encode(torch.randn(50, 16))
    assert ((f != 0).sum(-1) == 5).all()


def test_batchtopk_mean_l0_is_k_and_threshold_is_used_at_inference():
    sae = make("batchtopk", k=6)
    sae.b_enc.data.fill_(10.0)
    x = torch.randn(40, 16)
    sae.train()
    f = sae.encode(x)
    per_row = (f != 0).sum(-1).float()
    assert per_row.mean().item() == pytest.approx(6.0)
    assert per_row.std() > 0  # the budget is shared, not per token
    assert (sae.threshold > 0).all()
    sae.eval()
    f_eval = sae.encode(x)
    pre = sae.pre_activation(x)
    assert torch.equal(f_eval != 0, pre > sae.threshold)


def test_batchtopk_token_warmup_selects_per_token_then_per_batch():
    sae = make("batchtopk", k=3, batchtopk_token_warmup=0.5)
    sae.b_enc.data.fill_(10.0)
    x = torch.randn(40, 16)
    out = sae.loss(x, progress=0.1)
    assert out.terms["l0"].item() == pytest.approx(3.0)
    assert int(sae.threshold_updates) == 0
    sae.loss(x, progress=0.9)
    assert int(sae.threshold_updates) == 1


def test_jumprelu_threshold_moves_under_training():
    sae = make("jumprelu", jumprelu_init_threshold=0.5, jumprelu_bandwidth=0.5, l0_coefficient=1.0,
               sparsity_warmup=0.0)
    before = sae.threshold.detach().clone()
    opt = torch.optim.Adam(sae.parameters(), lr=1e-2)
    for _ in range(5):
        opt.zero_grad()
        sae.loss(torch.randn(64, 16)).loss.backward()
        assert sae.threshold.grad is not None and sae.threshold.grad.abs().sum() > 0
        opt.step()
        sae.post_step()
    assert sae.threshold.dtype == torch.float32
    assert (sae.threshold - before).abs().max() > 1e-3
    assert (sae.threshold >= 0).all()


def test_gated_has_separate_gate_and_magnitude_paths():
    sae = make("gated")
    names = {n for n, _ in sae.named_parameters()}
    assert {"b_gate", "r_mag", "b_mag", "W_enc", "W_dec", "b_dec"} <= names and "b_enc" not in names
    x = torch.randn(32, 16)
    f0 = sae.encode(x)
    with torch.no_grad():
        sae.r_mag.fill_(1.0)  # magnitudes scale by e, the gate (which latents fire) is unchanged
    f1 = sae.encode(x)
    assert torch.equal(f0 != 0, f1 != 0)
    assert torch.allclose(f1, f0 * torch.e, atol=1e-5)
    with torch.no_grad():
        sae.b_gate.fill_(-100.0)  # the gate alone can switch everything off
    assert (sae.encode(x) == 0).all()
    # the auxiliary loss reaches the gate bias through the frozen decoder
    sae.b_gate.data.zero_()
    out = sae.loss(x)
    assert out.terms["aux"] > 0
    out.loss.backward()
    assert sae.b_gate.grad.abs().sum() > 0 and sae.b_mag.grad.abs().sum() > 0


@pytest.mark.parametrize("arch", ARCHS)
def test_projected_step_keeps_decoder_rows_unit_norm(arch):
    sae = make(arch)
    opt = torch.optim.Adam(sae.parameters(), lr=1e-2)
    for _ in range(3):
        opt.zero_grad()
        sae.loss(torch.randn(32, 16), dead_mask=torch.ones(64, dtype=torch.bool)).loss.backward()
        if sae.unit_norm_decoder:
            sae.project_decoder_grad()
            w = sae.W_dec / sae.W_dec.norm(dim=1, keepdim=True)
            assert (sae.W_dec.grad * w).sum(1).abs().max() < 1e-5
        opt.step()
        sae.post_step()
    if sae.unit_norm_decoder:
        assert torch.allclose(sae.W_dec.norm(dim=1), torch.ones(64), atol=1e-5)


@pytest.mark.parametrize("arch", ARCHS)
def test_fold_scaling_gives_identical_outputs_in_model_units(arch):
    sae = make(arch)
    with torch.no_grad():
        for p in sae.parameters():
            p.add_(0.05 * torch.randn_like(p))
        if hasattr(sae, "threshold"):
            sae.threshold.fill_(0.05)
    sae.eval()
    x = torch.randn(20, 16) * 7.0
    scale = 0.13
    f_ref = sae.encode(x * scale)
    y_ref = sae(x * scale) / scale
    sae.fold_scaling(scale)
    assert torch.allclose(sae.encode(x), f_ref, atol=1e-5)
    assert torch.allclose(sae(x), y_ref, atol=1e-4)


@pytest.mark.parametrize("arch", ["topk", "batchtopk", "matryoshka"])
def test_sparse_and_dense_paths_agree_in_values_and_grads(arch):
    torch.manual_seed(1)
    x = torch.randn(64, 16)
    dead = torch.zeros(64, dtype=torch.bool)
    dead[::3] = True
    results = []
    for sparse in (True, False):
        sae = make(arch, sparse_decode=sparse, aux_k=8)
        sae.train()
        out = sae.loss(x, dead_mask=dead)
        out.loss.backward()
        grads = {n: p.grad.clone() for n, p in sae.named_parameters()}
        results.append((out.loss.detach(), out.reconstruction.detach(), out.fired, grads))
    (l_s, r_s, f_s, g_s), (l_d, r_d, f_d, g_d) = results
    assert torch.allclose(l_s, l_d, atol=1e-5)
    assert torch.allclose(r_s, r_d, atol=1e-5)
    assert torch.equal(f_s, f_d)
    for name in g_d:
        assert torch.allclose(g_s[name], g_d[name], atol=1e-5, rtol=1e-4), name


def test_sparse_kernels_match_autograd_on_random_coordinates():
    from core.dictionaries.sparse import ActiveSet, gather_preactivation, sparse_decode

    torch.manual_seed(2)
    n, d, m = 9, 5, 12
    mask = torch.rand(n, m) < 0.3
    active = ActiveSet.from_mask(mask)
    x = torch.randn(n, d, requires_grad=True)
    W = torch.randn(d, m, requires_grad=True)
    b = torch.randn(m, requires_grad=True)
    D = torch.randn(m, d, requires_grad=True)
    go = torch.randn(n, d)
    pre = x @ W + b
    vals = gather_preactivation(x, W, b, pre, active)
    sparse_decode(vals, D, active).backward(go)
    got = [t.grad.clone() for t in (x, W, b, D)]
    for t in (x, W, b, D):
        t.grad = None
    f = ((x @ W + b) * mask)
    (f @ D).backward(go)
    for g, t in zip(got, (x, W, b, D), strict=True):
        assert torch.allclose(g, t.grad, atol=1e-5)


def test_transcoder_and_crosscoder_forward_and_loss():
    tc = build_dictionary(dict(architecture="topk", d_in=12, d_out=20, d_sae=48, k=4, skip_connection=True))
    x, y = torch.randn(8, 12), torch.randn(8, 20)
    assert tc(x).shape == (8, 20)
    out = tc.loss(x, y)
    out.loss.backward()
    assert tc.W_skip.grad is not None and tc.W_enc.grad.abs().sum() > 0
    with pytest.raises(ShapeError):
        tc.loss(x, torch.randn(8, 12))

    cc = build_dictionary(dict(architecture="batchtopk", d_in=10, d_sae=40, k=3, n_inputs=3, n_outputs=3))
    x = torch.randn(8, 3, 10)
    assert cc.encode(x).shape == (8, 40)
    assert cc(x).shape == (8, 3, 10)
    assert cc.W_enc.shape == (30, 40) and cc.W_dec.shape == (40, 30)
    out = cc.loss(x)
    out.loss.backward()
    assert 0 < out.terms["l0"].item() <= 3.0 + 1e-6


def test_config_roundtrip():
    cfg = DictionaryConfig(architecture="matryoshka", d_in=8, d_sae=32, k=2, matryoshka_prefixes=[4, 16, 32])
    again = DictionaryConfig.from_dict(cfg.to_dict())
    assert again == cfg
    assert build_dictionary(again).prefixes == [4, 16, 32]

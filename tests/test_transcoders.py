"""Transcoders on planted truth: a per-layer transcoder recovers a planted sparse linear "MLP",
the skip path learns a planted linear map, cross-layer transcoders never write backwards,
folders round trip (and sae-lens loads ours), and folders of the wrong kind are refused."""

from __future__ import annotations

import json
import tempfile

import pytest
import torch

from core.checkpoint import load_sae, save_sae
from core.dictionaries import REGISTRY, build_dictionary
from core.errors import ConfigError
from core.training import TensorDataModule, train_sae
from domains.synthetic.toy import mmcs

QUIET = dict(enable_progress_bar=False, logger="none", accelerator="cpu", devices=1, limit_val_batches=0)
CLTS = ["clt_topk", "clt_batchtopk", "clt_relu"]


def planted_mlp(n: int, n_feat: int = 32, d_in: int = 16, d_out: int = 12, p: float = 0.06, seed: int = 0):
    """A toy MLP whose output is a sparse code of its input: ``x = a E``, ``y = a D + c`` for
    sparse non-negative ``a`` and planted unit directions ``E`` (read) and ``D`` (written)."""
    g = torch.Generator().manual_seed(seed)
    E = torch.randn(n_feat, d_in, generator=g)  # noqa: N806
    D = torch.randn(n_feat, d_out, generator=g)  # noqa: N806
    E, D = E / E.norm(dim=1, keepdim=True), D / D.norm(dim=1, keepdim=True)  # noqa: N806
    a = (torch.rand(n, n_feat, generator=g) < p) * (0.5 + torch.rand(n, n_feat, generator=g))
    return a @ E, a @ D + 0.3, D


@pytest.mark.parametrize("arch", ["topk", "batchtopk"])
def test_transcoder_recovers_a_planted_sparse_mlp(arch):
    x, y, D = planted_mlp(16384)  # noqa: N806
    cfg = dict(architecture=arch, d_in=16, d_out=12, d_sae=64, k=3, transcoder=True, aux_k=4, dead_after_tokens=8192)
    if arch == "batchtopk":
        cfg["batchtopk_token_warmup"] = 0.25
    with tempfile.TemporaryDirectory() as tmp:
        tc, _ = train_sae(cfg, TensorDataModule(x, y, batch_size=512), tmp, total_tokens=8 * 16384,
                          trainer_cfg=QUIET, save=False, lr=1e-2)
    score, best = mmcs(tc.W_dec.detach(), D)
    assert score >= 0.9, (score, best)
    # the same architecture as an SAE on the MLP output alone has no access to the input
    assert not tc.subtracts_b_dec


def test_skip_path_learns_a_planted_linear_map_exactly():
    g = torch.Generator().manual_seed(0)
    A = torch.randn(16, 12, generator=g) / 4  # noqa: N806
    x = torch.randn(8192, 16, generator=g) * 2 + 1
    y = x @ A
    cfg = dict(architecture="relu", d_in=16, d_out=12, d_sae=32, l1_coefficient=1.0, skip_connection=True,
               transcoder=True)
    with tempfile.TemporaryDirectory() as tmp:
        tc, _ = train_sae(cfg, TensorDataModule(x, y, batch_size=256), tmp, total_tokens=8 * 8192,
                          trainer_cfg=QUIET, save=False, lr=3e-2)
    with torch.no_grad():
        assert float((tc.W_skip - A).norm() / A.norm()) < 1e-3
        assert float((tc.encode(x) > 0).float().sum(-1).mean()) < 0.01  # the sparse part stays off
        assert float((tc(x) - y).pow(2).sum() / (y - y.mean(0)).pow(2).sum()) < 1e-5


def test_skip_is_zero_at_init_and_transcoders_are_not_centred_or_tied():
    tc = build_dictionary(dict(architecture="topk", d_in=16, d_sae=32, k=4, transcoder=True, skip_connection=True))
    sae = build_dictionary(dict(architecture="topk", d_in=16, d_sae=32, k=4))
    assert torch.count_nonzero(tc.W_skip) == 0
    assert not tc.subtracts_b_dec and sae.subtracts_b_dec
    assert not torch.allclose(tc.W_enc, tc.W_dec.T) and torch.allclose(sae.W_enc, sae.W_dec.T)
    assert tc.kind == "transcoder" and sae.kind == "sae"


def _clt(arch: str, L: int = 4, m: int = 8, d_in: int = 6, d_out: int = 5, **kw):  # noqa: N803
    torch.manual_seed(0)
    return build_dictionary(dict(architecture=arch, d_in=d_in, d_out=d_out, d_sae=L * m, k=2, n_inputs=L,
                                 n_outputs=L, l1_coefficient=0.1, **kw))


@pytest.mark.parametrize("arch", CLTS)
def test_clt_layer_never_writes_into_earlier_layers(arch):
    L, m, d_out = 4, 8, 5  # noqa: N806
    clt = _clt(arch, L, m, d_out=d_out)
    assert [tuple(w.shape) for w in clt.W_dec] == [(m, L - i, d_out) for i in range(L)]
    for layer in range(L):
        f = torch.zeros(3, L * m)
        f[:, layer * m:(layer + 1) * m] = torch.rand(3, m) + 0.1
        out = (clt.decode_flat(f) - clt.b_dec).view(3, L, d_out)
        assert torch.count_nonzero(out[:, :layer]) == 0
        assert out[:, layer:].abs().sum(-1).min() > 0
    # gradients: the MLP outputs of layers < l do not depend on layer l's encoder
    x = torch.randn(16, L, 6)
    clt.train()
    out = clt.loss(x, torch.randn(16, L, d_out)).reconstruction.view(16, L, d_out)
    out[:, 0].sum().backward()
    assert clt.W_enc.grad[1:].abs().sum() == 0 and clt.W_enc.grad[0].abs().sum() > 0


@pytest.mark.parametrize("arch", CLTS)
def test_clt_loss_is_the_sum_of_per_layer_errors_and_memory_formula(arch):
    L, m, d_in, d_out = 3, 8, 6, 5  # noqa: N806
    clt = _clt(arch, L, m, d_in, d_out, skip_connection=True)
    n_params = sum(p.numel() for p in clt.parameters())
    assert n_params == L * m * (d_in + 1) + m * d_out * L * (L + 1) // 2 + L * d_out + L * d_in * d_out
    x, y = torch.randn(32, L, d_in), torch.randn(32, L, d_out)
    out = clt.loss(x, y)
    per_layer = (out.reconstruction.view(32, L, d_out) - y).pow(2).sum(-1).mean(0)
    assert float(out.terms["mse"]) == pytest.approx(float(per_layer.sum()), rel=1e-5)
    assert out.fired.shape == (L * m,)
    if arch != "clt_relu":
        assert float(out.terms["l0"]) <= 2 * L + 1e-6


def test_clt_trains_and_per_layer_view_encodes_its_layer():
    L, d = 3, 8  # noqa: N806
    g = torch.Generator().manual_seed(0)
    x = torch.randn(4096, L, d, generator=g)
    w = torch.randn(L, d, d, generator=g) / d**0.5
    y = torch.relu(torch.einsum("bld,lde->ble", x, w)).cumsum(1)  # each layer's output carries earlier ones
    with tempfile.TemporaryDirectory() as tmp:
        clt, summary = train_sae(dict(architecture="clt_batchtopk", d_in=d, d_sae=L * 32, k=4, n_inputs=L,
                                      n_outputs=L), TensorDataModule(x, y, batch_size=256), tmp,
                                 total_tokens=4 * 4096, trainer_cfg=QUIET, save=False)
    with torch.no_grad():
        fvu = float((clt(x) - y).pow(2).sum() / (y - y.mean(0)).pow(2).sum())
        assert fvu < 0.5
        view = clt.layer_view(1)
        assert torch.equal(view.encode(x[:, 1]), clt.encode(x)[:, 32:64])
        assert view.W_dec.shape == (32, 2 * d)
    with pytest.raises(ConfigError, match="outside this CLT"):
        clt.layer_view(L)


@pytest.mark.parametrize("arch", ["topk", "batchtopk", "jumprelu", "relu"])
@pytest.mark.parametrize("skip", [False, True])
def test_transcoder_save_load_same_outputs(tmp_path, arch, skip):
    tc = build_dictionary(dict(architecture=arch, d_in=16, d_sae=48, k=4, transcoder=True, skip_connection=skip))
    with torch.no_grad():
        for p in tc.parameters():
            p.add_(0.1 * torch.randn_like(p))
    tc.eval()
    folder = save_sae(tc, tmp_path / "tc", metadata={"hook_name": "blocks.2.hook_mlp_in",
                                                     "hook_name_out": "blocks.2.hook_mlp_out"})
    cfg = json.loads((folder / "cfg.json").read_text())
    assert cfg["apply_b_dec_to_input"] is False and cfg["d_out"] == 16
    assert cfg["hook_name_out"] == "blocks.2.hook_mlp_out"
    loaded = load_sae(folder, expect="transcoder")
    x = torch.randn(20, 16)
    assert torch.equal(loaded(x), tc(x))


@pytest.mark.parametrize("arch", CLTS)
def test_clt_folder_round_trip_in_circuit_tracer_layout(tmp_path, arch):
    from safetensors.torch import load_file

    clt = _clt(arch, skip_connection=True)
    with torch.no_grad():
        for p in clt.parameters():
            p.add_(0.1 * torch.randn_like(p))
        if hasattr(clt, "threshold"):
            clt.threshold.uniform_(0.0, 0.2)
    clt.eval()
    folder = save_sae(clt, tmp_path / "clt", metadata={"layers": [3, 4, 5, 6], "model_name": "toy",
                                                       "hook_name": [f"blocks.{i}.hook_mlp_in" for i in range(3, 7)],
                                                       "hook_name_out": [f"blocks.{i}.hook_mlp_out" for i in range(3, 7)]})
    enc = load_file(str(folder / "W_enc_1.safetensors"))
    assert tuple(enc["W_enc_1"].shape) == (8, 6) and tuple(enc["b_dec_1"].shape) == (5,)
    assert ("threshold_1" in enc) == (arch == "clt_batchtopk")
    assert tuple(load_file(str(folder / "W_dec_1.safetensors"))["W_dec_1"].shape) == (8, 3, 5)
    assert "feature_output_hook: hook_mlp_out" in (folder / "config.yaml").read_text()
    loaded = load_sae(folder, expect="clt")
    x = torch.randn(10, 4, 6)
    assert torch.equal(loaded(x), clt(x)) and loaded.metadata["layers"] == [3, 4, 5, 6]


@pytest.mark.parametrize("arch", ["batchtopk", "jumprelu", "relu"])
@pytest.mark.parametrize("skip", [False, True])
def test_sae_lens_loads_our_transcoders_with_the_same_outputs(tmp_path, arch, skip):
    sae_lens = pytest.importorskip("sae_lens")
    tc = build_dictionary(dict(architecture=arch, d_in=16, d_sae=48, k=4, transcoder=True, skip_connection=skip))
    with torch.no_grad():
        for p in tc.parameters():
            p.add_(0.1 * torch.randn_like(p))
        if hasattr(tc, "threshold"):
            tc.threshold.copy_(torch.full_like(tc.threshold, 0.05))
    tc.eval()
    theirs = sae_lens.SAE.load_from_disk(str(save_sae(tc, tmp_path / "tc")))
    expected = {"relu": "transcoder", "jumprelu": "jumprelu_transcoder", "batchtopk": "jumprelu_transcoder"}[arch]
    assert type(theirs).__name__.lower().replace("skip", "") == expected.replace("_", "").replace("skip", "")
    assert hasattr(theirs, "W_skip") == skip
    x = torch.randn(32, 16)
    with torch.no_grad():
        assert torch.allclose(theirs.encode(x), tc.encode(x), atol=1e-5)
        assert torch.allclose(theirs(x), tc(x), atol=1e-5)
        assert (tc.encode(x) > 0).any()


def test_folder_of_the_wrong_kind_is_refused(tmp_path):
    tc = save_sae(build_dictionary(dict(architecture="topk", d_in=8, d_sae=16, k=2, transcoder=True)),
                  tmp_path / "tc", metadata={"hook_name": "blocks.1.hook_mlp_in", "hook_name_out": "blocks.1.hook_mlp_out"})
    sae = save_sae(build_dictionary(dict(architecture="topk", d_in=8, d_sae=16, k=2)), tmp_path / "sae")
    with pytest.raises(ConfigError) as err:
        load_sae(tc, expect="sae")
    assert str(tc) in str(err.value) and "blocks.1.hook_mlp_out" in str(err.value) and "fix:" in str(err.value)
    with pytest.raises(ConfigError, match="holds an SAE, not a transcoder"):
        load_sae(sae, expect="transcoder")
    assert set(REGISTRY) >= set(CLTS)

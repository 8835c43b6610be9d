"""Checkpoints: our SAELens-layout folders round trip, load in sae-lens with the same features,
and dictionary_learning / sparsify folders import with the same encode; bad shapes fail clearly."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import save_file

from core.checkpoint import import_dictionary_learning, import_sparsify, load_sae, save_sae
from core.dictionaries import REGISTRY, DictionaryConfig, build_dictionary
from core.errors import ConfigError, DataError, ShapeError

D_IN, D_SAE, K = 16, 48, 4
ARCHS = sorted(a for a in REGISTRY if not a.startswith(("clt_", "crosscoder_")))  # CLTs: tests/test_transcoders.py; crosscoders: tests/test_crosscoders.py


def make(arch: str, **over) -> torch.nn.Module:
    kw = {"architecture": arch, "d_in": D_IN, "d_sae": D_SAE}
    if arch in ("topk", "batchtopk", "matryoshka"):
        kw["k"] = K
    if arch == "matryoshka":
        kw["matryoshka_prefixes"] = [12, 24, D_SAE]
    kw.update(over)
    sae = build_dictionary(DictionaryConfig(**kw))
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for t in sae.state_dict().values():
            if t.is_floating_point():
                t.add_(0.1 * torch.randn(t.shape, generator=g))
        if hasattr(sae, "threshold"):
            value = 0.05 + 0.1 * torch.rand(sae.threshold.shape, generator=g)
            if arch in ("batchtopk", "matryoshka"):
                value = value[:1].expand_as(sae.threshold)
            sae.threshold.copy_(value)
    return sae.eval()


def inputs(n: int = 32, d: int = D_IN) -> torch.Tensor:
    return torch.randn(n, d, generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize("arch", ARCHS)
def test_save_load_round_trip(tmp_path, arch):
    sae = make(arch)
    folder = save_sae(sae, tmp_path / "sae", metadata={"model_name": "toy", "hook_name": "blocks.1"})
    cfg = json.loads((folder / "cfg.json").read_text())
    assert cfg["d_in"] == D_IN and cfg["d_sae"] == D_SAE and cfg["sparsescope"]["architecture"] == arch
    assert cfg["metadata"]["hook_name"] == "blocks.1"
    loaded = load_sae(folder)
    assert type(loaded) is type(sae) and loaded.cfg == sae.cfg
    for name, t in sae.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], t), name
    x = inputs()
    assert torch.equal(loaded.encode(x), sae.encode(x))
    assert loaded.metadata["model_name"] == "toy"


def test_save_replaces_folder_atomically(tmp_path):
    folder = tmp_path / "sae"
    save_sae(make("relu"), folder)
    (folder / "stale.txt").write_text("left from an older save")
    save_sae(make("topk"), folder)
    assert not (folder / "stale.txt").exists()
    assert load_sae(folder).architecture == "topk"
    assert [p.name for p in tmp_path.iterdir()] == ["sae"]


@pytest.mark.parametrize("over", [{"d_out": 24}, {"d_out": 24, "skip_connection": True},
                                  {"n_inputs": 2, "n_outputs": 2}])
@pytest.mark.parametrize("arch", [a for a in ("relu", "jumprelu", "topk") if a in REGISTRY])
def test_transcoder_and_crosscoder_round_trip(tmp_path, arch, over):
    sae = make(arch, **over)
    loaded = load_sae(save_sae(sae, tmp_path / "sae"))
    x = inputs(d=sae.cfg.in_features)
    assert torch.equal(loaded(x), sae(x))


@pytest.mark.parametrize("arch", ARCHS)
def test_sae_lens_loads_same_features(tmp_path, arch):
    sae_lens = pytest.importorskip("sae_lens")
    sae = make(arch)
    folder = save_sae(sae, tmp_path / "sae", metadata={"hook_name": "blocks.1.hook_resid_post"})
    theirs = sae_lens.SAE.load_from_disk(str(folder))
    x = inputs()
    with torch.no_grad():
        ours_f, their_f = sae.encode(x), theirs.encode(x)
        assert torch.allclose(their_f, ours_f, atol=1e-5)
        assert (ours_f > 0).float().sum() > 0
        assert torch.allclose(theirs.decode(their_f), sae.decode(ours_f), atol=1e-5)
    assert theirs.cfg.metadata.hook_name == "blocks.1.hook_resid_post"


@pytest.mark.parametrize("over", [{"d_out": 24}, {"d_out": 24, "skip_connection": True}])
@pytest.mark.parametrize("arch", [a for a in ("relu", "jumprelu") if a in REGISTRY])
def test_sae_lens_loads_transcoders(tmp_path, arch, over):
    sae_lens = pytest.importorskip("sae_lens")
    sae = make(arch, **over)
    theirs = sae_lens.SAE.load_from_disk(str(save_sae(sae, tmp_path / "tc")))
    x = inputs()
    with torch.no_grad():
        assert torch.allclose(theirs(x), sae(x), atol=1e-5)


@pytest.mark.parametrize("their_arch,ours", [("standard", "relu"), ("topk", "topk"), ("jumprelu", "jumprelu"),
                                              ("gated", "gated")])
def test_foreign_sae_lens_folder_loads(tmp_path, their_arch, ours):
    pytest.importorskip("sae_lens")
    from sae_lens.registry import get_sae_class

    if ours not in REGISTRY:
        pytest.skip(f"{ours} not registered")
    sae_cls, cfg_cls = get_sae_class(their_arch)
    kw = {"k": K} if their_arch == "topk" else {}
    theirs = sae_cls(cfg_cls(d_in=D_IN, d_sae=D_SAE, **kw))
    with torch.no_grad():
        for p in theirs.parameters():
            p.copy_(torch.randn_like(p) * 0.2)
        if their_arch == "jumprelu":
            theirs.threshold.abs_()
    theirs.save_model(str(tmp_path / "sl"))
    loaded = load_sae(tmp_path / "sl")
    x = inputs()
    with torch.no_grad():
        assert loaded.architecture == ours
        assert torch.allclose(loaded.encode(x), theirs.encode(x), atol=1e-5)
        assert torch.allclose(loaded(x), theirs(x), atol=1e-5)


def test_shape_mismatch_names_file_tensor_and_fix(tmp_path):
    folder = save_sae(make("relu"), tmp_path / "sae")
    cfg = json.loads((folder / "cfg.json").read_text())
    cfg["d_sae"] = 64
    cfg["sparsescope"]["dictionary"]["d_sae"] = 64
    (folder / "cfg.json").write_text(json.dumps(cfg))
    with pytest.raises(ShapeError) as err:
        load_sae(folder)
    msg = str(err.value)
    assert "sae_weights.safetensors" in msg and "'W_enc'" in msg
    assert "[16, 48]" in msg and "[16, 64]" in msg and "fix:" in msg


def test_unknown_architecture_and_missing_folder(tmp_path):
    folder = save_sae(make("relu"), tmp_path / "sae")
    cfg = json.loads((folder / "cfg.json").read_text())
    cfg["sparsescope"]["dictionary"]["architecture"] = "nonesuch"
    (folder / "cfg.json").write_text(json.dumps(cfg))
    with pytest.raises(ConfigError, match="nonesuch"):
        load_sae(folder)
    with pytest.raises(DataError, match="does not exist"):
        load_sae(tmp_path / "nowhere")


# --- dictionary_learning folders, written the way its trainers write them ---------------------

def write_dl(folder, state, trainer):
    folder.mkdir(parents=True)
    torch.save(state, folder / "ae.pt")
    (folder / "config.json").write_text(json.dumps({"trainer": trainer, "buffer": {"d_submodule": D_IN}}))
    return folder


def _rand(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed)) * 0.3


def dl_case(name):
    """(state dict, trainer config, reference encode written from dictionary_learning's source)."""
    d, n = D_IN, D_SAE
    base = {"activation_dim": d, "dict_size": n, "lm_name": "toy-lm", "layer": 3,
            "submodule_name": "resid_post_layer_3"}
    if name == "AutoEncoder":
        s = {"bias": _rand(d, seed=1), "encoder.weight": _rand(n, d, seed=2), "encoder.bias": _rand(n, seed=3),
             "decoder.weight": _rand(d, n, seed=4)}
        ref = lambda x: torch.relu((x - s["bias"]) @ s["encoder.weight"].T + s["encoder.bias"])  # noqa: E731
        return s, {**base, "dict_class": "AutoEncoder"}, ref
    if name == "GatedAutoEncoder":
        s = {"decoder_bias": _rand(d, seed=1), "encoder.weight": _rand(n, d, seed=2), "r_mag": _rand(n, seed=3),
             "gate_bias": _rand(n, seed=4), "mag_bias": _rand(n, seed=5), "decoder.weight": _rand(d, n, seed=6)}

        def ref(x):
            h = (x - s["decoder_bias"]) @ s["encoder.weight"].T
            return (h + s["gate_bias"] > 0).float() * torch.relu(s["r_mag"].exp() * h + s["mag_bias"])
        return s, {**base, "dict_class": "GatedAutoEncoder"}, ref
    if name == "JumpReluAutoEncoder":
        s = {"W_enc": _rand(d, n, seed=1), "b_enc": _rand(n, seed=2), "W_dec": _rand(n, d, seed=3),
             "b_dec": _rand(d, seed=4), "threshold": _rand(n, seed=5).abs()}

        def ref(x):
            pre = x @ s["W_enc"] + s["b_enc"]
            return torch.relu(pre * (pre > s["threshold"]))
        return s, {**base, "dict_class": "JumpReluAutoEncoder"}, ref
    if name in ("AutoEncoderTopK", "BatchTopKSAE"):
        s = {"k": torch.tensor(K, dtype=torch.int), "threshold": torch.tensor(0.1),
             "decoder.weight": _rand(d, n, seed=1), "encoder.weight": _rand(n, d, seed=2),
             "encoder.bias": _rand(n, seed=3), "b_dec": _rand(d, seed=4)}

        def ref(x):
            post = torch.relu((x - s["b_dec"]) @ s["encoder.weight"].T + s["encoder.bias"])
            if name == "BatchTopKSAE":
                return post * (post > s["threshold"])
            top = post.topk(K, dim=-1)
            return torch.zeros_like(post).scatter_(-1, top.indices, top.values)
        if name == "AutoEncoderTopK":
            del s["threshold"]
        return s, {**base, "dict_class": name, "k": K}, ref
    if name == "MatryoshkaBatchTopKSAE":
        s = {"k": torch.tensor(K, dtype=torch.int), "threshold": torch.tensor(-1.0),
             "group_sizes": torch.tensor([12, 12, 24]), "W_enc": _rand(d, n, seed=1), "b_enc": _rand(n, seed=2),
             "W_dec": _rand(n, d, seed=3), "b_dec": _rand(d, seed=4)}

        def ref(x):
            post = torch.relu((x - s["b_dec"]) @ s["W_enc"] + s["b_enc"])
            return post * (post > s["threshold"])
        return s, {**base, "dict_class": name, "k": K}, ref
    raise KeyError(name)


DL_TARGET = {"AutoEncoder": "relu", "GatedAutoEncoder": "gated", "JumpReluAutoEncoder": "jumprelu",
             "AutoEncoderTopK": "topk", "BatchTopKSAE": "batchtopk", "MatryoshkaBatchTopKSAE": "matryoshka"}


@pytest.mark.parametrize("dict_class", [c for c, a in DL_TARGET.items() if a in REGISTRY])
def test_import_dictionary_learning_same_features(tmp_path, dict_class):
    state, trainer, ref = dl_case(dict_class)
    folder = write_dl(tmp_path / "trainer_0", state, trainer)
    sae = import_dictionary_learning(folder)
    assert sae.architecture == DL_TARGET[dict_class]
    x = inputs()
    with torch.no_grad():
        assert torch.allclose(sae.encode(x), ref(x), atol=1e-5)
    assert sae.metadata["model_name"] == "toy-lm"
    again = load_sae(save_sae(sae, tmp_path / "converted"))
    assert torch.equal(again.encode(x), sae.encode(x))
    if dict_class == "MatryoshkaBatchTopKSAE":
        assert sae.prefixes == [12, 24, D_SAE]


def test_load_sae_detects_dictionary_learning_folder(tmp_path):
    state, trainer, ref = dl_case("AutoEncoder")
    folder = write_dl(tmp_path / "t", state, trainer)
    x = inputs()
    assert torch.allclose(load_sae(folder).encode(x), ref(x), atol=1e-5)


def test_import_dictionary_learning_shape_error(tmp_path):
    state, trainer, _ = dl_case("AutoEncoder")
    state["encoder.weight"] = _rand(D_SAE, D_IN + 1)
    folder = write_dl(tmp_path / "t", state, trainer)
    with pytest.raises(ShapeError) as err:
        import_dictionary_learning(folder)
    msg = str(err.value)
    assert "ae.pt" in msg and "encoder.weight" in msg and f"[{D_SAE}, {D_IN + 1}]" in msg
    assert f"[{D_SAE}, {D_IN}]" in msg and "fix:" in msg


# --- sparsify folders, written the way SparseCoder.save_to_disk writes them -------------------

def write_sparsify(folder, *, skip=False, transcode=False, wrong=False):
    folder.mkdir(parents=True)
    s = {"encoder.weight": _rand(D_SAE, D_IN + int(wrong), seed=1), "encoder.bias": _rand(D_SAE, seed=2),
         "W_dec": _rand(D_SAE, D_IN, seed=3), "b_dec": _rand(D_IN, seed=4)}
    if skip:
        s["W_skip"] = _rand(D_IN, D_IN, seed=5)
    save_file(s, str(folder / "sae.safetensors"))
    cfg = {"activation": "topk", "expansion_factor": 32, "normalize_decoder": True, "num_latents": D_SAE,
           "k": K, "multi_topk": False, "skip_connection": skip, "transcode": transcode, "d_in": D_IN}
    (folder / "cfg.json").write_text(json.dumps(cfg))
    return s


def sparsify_reference(s, x, transcode):
    """sparsify's encode + decode, written from its source (fused_encoder, decode, forward)."""
    xin = x if transcode else x - s["b_dec"]
    pre = torch.relu(xin @ s["encoder.weight"].T + s["encoder.bias"])
    top = pre.topk(K, dim=-1)
    f = torch.zeros_like(pre).scatter_(-1, top.indices, top.values)
    out = f @ s["W_dec"] + s["b_dec"]
    if "W_skip" in s:
        out = out + x @ s["W_skip"].T
    return f, out


@pytest.mark.skipif("topk" not in REGISTRY, reason="topk architecture not registered")
@pytest.mark.parametrize("skip,transcode", [(False, False), (True, False), (False, True), (True, True)])
def test_import_sparsify_same_features(tmp_path, skip, transcode):
    folder = tmp_path / "layers.3"
    s = write_sparsify(folder, skip=skip, transcode=transcode)
    sae = import_sparsify(folder)
    x = inputs()
    f_ref, out_ref = sparsify_reference(s, x, transcode)
    with torch.no_grad():
        assert torch.allclose(sae.encode(x), f_ref, atol=1e-5)
        assert torch.allclose(sae(x), out_ref, atol=1e-5)
    assert sae.metadata["hook_name"] == "layers.3"
    assert torch.equal(load_sae(folder).encode(x), sae.encode(x))


@pytest.mark.skipif("topk" not in REGISTRY, reason="topk architecture not registered")
def test_import_sparsify_shape_error_and_parent_folder(tmp_path):
    write_sparsify(tmp_path / "run" / "layers.5", wrong=True)
    with pytest.raises(ShapeError) as err:
        import_sparsify(tmp_path / "run" / "layers.5")
    msg = str(err.value)
    assert "sae.safetensors" in msg and "encoder.weight" in msg and f"[{D_SAE}, {D_IN}]" in msg
    with pytest.raises(DataError, match="layers.5"):
        import_sparsify(tmp_path / "run")

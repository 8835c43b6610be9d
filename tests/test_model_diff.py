"""Model diffing on planted truth: relative-norm classes of a hand-built crosscoder, Latent
Scaling telling a truly exclusive latent from a decoupled pair and a shrunk decoder."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from core.dictionaries import build_dictionary
from core.diff import Cutoffs, class_counts, classify, latent_scaling, reclassify, relative_norm, source_norms
from core.diff.scaling import ratios
from core.errors import ConfigError

D = 8


def planted(n: int = 20_000, seed: int = 0):
    """Four concepts in two 8-d "models": c0 shared, c1 only in A, c2 and c3 in both. The
    crosscoder is built by hand: latent 0 shared; 1 A-only (truly); 2 and 3 a decoupled pair
    (A-only and B-only latents firing on the same concept c2); 4 has c3's A decoder and a zero B
    decoder although B carries c3 (complete shrinkage)."""
    g = torch.Generator().manual_seed(seed)
    codes = (torch.rand(n, 4, generator=g) < 0.1).float() * (0.5 + torch.rand(n, 4, generator=g))
    a_dirs, b_dirs = torch.eye(D)[:4], torch.eye(D)[[5, 6, 7, 4]]  # B's basis unrelated to A's order
    b_dirs[1] = 0  # c1 absent from B
    xa = codes @ a_dirs + 0.01 * torch.randn(n, D, generator=g)
    xb = codes @ b_dirs + 0.01 * torch.randn(n, D, generator=g)
    cc = build_dictionary(dict(architecture="crosscoder_l1", d_in=D, d_sae=5, n_inputs=2, source_widths=[D, D]))
    enc = torch.zeros(2 * D, 5)
    dec = torch.zeros(5, 2 * D)
    for j, (a_vec, b_vec, read_b) in enumerate([(a_dirs[0], b_dirs[0], False), (a_dirs[1], None, False),
                                                (a_dirs[2], None, False), (None, b_dirs[2], True),
                                                (a_dirs[3], None, False)]):
        enc[:, j] = torch.cat([torch.zeros(D), b_vec]) if read_b else torch.cat([a_vec, torch.zeros(D)])
        if a_vec is not None:
            dec[j, :D] = a_vec
        if b_vec is not None:
            dec[j, D:] = b_vec
    with torch.no_grad():
        cc.W_enc.copy_(enc)
        cc.W_dec.copy_(dec)
        cc.b_enc.fill_(-0.05)
        cc.b_dec.zero_()
    return cc.eval(), torch.cat([xa, xb], dim=1)


def test_relative_norm_classes_of_the_planted_crosscoder():
    cc, _ = planted()
    n = source_norms(cc)
    r = relative_norm(n[0], n[1])
    assert np.allclose(r, [0.5, 0.0, 0.0, 1.0, 0.0])
    classes = classify(r)
    assert list(classes) == ["shared", "a_only", "a_only", "b_only", "a_only"]
    counts = class_counts(classes)
    assert counts["n_latents"] == 5 and counts["a_only_frac"] == 0.6 and counts["shared_n"] == 1
    assert list(classify(np.array([0.05, 0.3, 0.5, 0.7, 0.95, np.nan]))) == \
        ["a_only", "other", "shared", "other", "b_only", "dead"]


def test_latent_scaling_flags_the_decoupled_pair_and_the_shrunk_latent():
    cc, x = planted()
    frame = latent_scaling(cc, x.split(4096), progress=False)
    classes = classify(relative_norm(*source_norms(cc)))
    nu = ratios(frame, classes)
    assert nu.loc[1, "nu_eps"] < 0.1 and nu.loc[1, "nu_r"] < 0.1  # truly exclusive
    assert nu.loc[2, "nu_r"] > 0.8 and nu.loc[3, "nu_r"] > 0.8  # decoupled pair: the other latent rebuilds it
    assert nu.loc[4, "nu_eps"] > 0.8 and nu.loc[4, "nu_r"] < 0.1  # shrunk: B's error keeps c3
    assert np.isnan(nu.loc[0, "nu_eps"])  # shared latents are not scored
    after, why = reclassify(classes, nu)
    assert list(after) == ["shared", "a_only", "shared", "shared", "shared"]
    assert list(why[1:]) == ["", "decoupling", "decoupling", "shrinkage"]
    assert frame.loc[1, "beta_eps_a"] == pytest.approx(1.0, abs=0.05)  # own source: beta along d is ~1


def test_latent_scaling_bad_sources_and_cutoffs():
    cc, x = planted(n=500)
    with pytest.raises(ConfigError, match="two distinct sources"):
        latent_scaling(cc, [x], a=0, b=0, progress=False)
    with pytest.raises(ConfigError, match="cut-offs"):
        Cutoffs(a_only=0.5, shared_low=0.4)
    with pytest.raises(ConfigError, match="not a crosscoder"):
        source_norms(build_dictionary(dict(architecture="topk", d_in=4, d_sae=8, k=2)))

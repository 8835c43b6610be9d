"""core/compare on planted truth: permuted copies, random dictionaries, planted splits, the toy
model's left-out features, snapshots through training."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from core.compare import (
    SnapshotCallback,
    births,
    coactivation,
    compare,
    correlation,
    encode_sparse,
    expected_max_cosine,
    lifecycle_table,
    load_snapshots,
    nested_trees,
    split_tree,
    stitch,
)
from core.compare.matching import cosine_matrix
from core.dictionaries import build_dictionary
from core.training import TensorDataModule, train_sae
from domains.synthetic.toy import ToyModel

QUIET = dict(enable_progress_bar=False, logger="none", accelerator="cpu")


@pytest.fixture
def one_thread():
    """Tiny matrices: one thread beats two on a shared 2-core machine (8x here under load)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def topk(d_in: int, d_sae: int, k: int = 4, seed: int = 0):
    torch.manual_seed(seed)
    sae = build_dictionary(dict(architecture="topk", d_in=d_in, d_sae=d_sae, k=k))
    with torch.no_grad():
        sae.b_enc.normal_(0, 0.1)
        sae.W_enc.add_(0.3 * torch.randn_like(sae.W_enc))
    return sae.eval()


def permuted(sae, perm: torch.Tensor):
    """The same dictionary with its latents in another order (and decoder rows rescaled by a
    positive factor: sign and direction kept)."""
    out = build_dictionary(sae.cfg.to_dict())
    with torch.no_grad():
        out.W_enc.copy_(sae.W_enc[:, perm])
        out.b_enc.copy_(sae.b_enc[perm])
        out.W_dec.copy_(sae.W_dec[perm] * 1.7)
        out.b_dec.copy_(sae.b_dec)
    return out.eval()


def test_a_permuted_copy_has_mmcs_one_and_gives_the_permutation_back():
    a = topk(32, 256)
    perm = torch.randperm(256, generator=torch.Generator().manual_seed(1))
    b = permuted(a, perm)
    x = torch.randn(3000, 32)
    comp = compare(a, b, codes_a=encode_sparse(a, x), codes_b=encode_sparse(b, x))
    dec = comp.summary["decoder"]
    assert dec["mmcs_a_to_b"] == pytest.approx(1.0, abs=1e-4) and dec["mmcs_b_to_a"] == pytest.approx(1.0, abs=1e-4)
    assert dec["assigned_frac_above_0.9"] == 1.0
    inverse = torch.argsort(perm).numpy()  # b row j is a row perm[j], so a row i sits at inverse[i]
    assert np.array_equal(comp.matching.b_for_a(), inverse)
    assert np.array_equal(comp.pairs["b_best"].to_numpy(), inverse)
    live = comp.pairs["firing_rate_a"].to_numpy() > 0
    assert np.allclose(comp.pairs["corr_assigned"].to_numpy()[live], 1.0, atol=1e-3)
    assert comp.summary["activations"]["best_match_agreement"] == pytest.approx(live.mean(), abs=1e-4)


@pytest.mark.parametrize("d,n", [(64, 512), (16, 128)])
def test_random_dictionaries_reach_the_chance_mmcs_of_random_unit_vectors(d, n):
    # chance level: the expected best cosine of a unit vector against n random unit vectors in R^d;
    # for d=64, n=512 it is 0.371, for d=16, n=128 it is 0.605 (computed, not fitted)
    a, b = topk(d, 2048, seed=2), topk(d, n, seed=3)
    comp = compare(a, b, assignment=False)
    expected = expected_max_cosine(d, n)
    assert comp.summary["decoder"]["chance_mmcs_a_to_b"] == pytest.approx(expected, abs=1e-4)
    assert comp.summary["decoder"]["mmcs_a_to_b"] == pytest.approx(expected, abs=0.01)
    assert expected == pytest.approx({64: 0.3706, 16: 0.6045}[d], abs=2e-3)


def test_correlation_and_coactivation_match_their_dense_definitions():
    g = torch.Generator().manual_seed(0)
    fa = torch.relu(torch.randn(500, 7, generator=g) - 0.5)
    fb = torch.relu(torch.randn(500, 5, generator=g) - 0.8)
    fb[:, 4] = 0  # a latent that never fires
    import scipy.sparse as sp

    r = correlation(sp.csr_matrix(fa.numpy()), sp.csr_matrix(fb.numpy()))
    dense = np.corrcoef(np.c_[fa.numpy(), fb.numpy()[:, :4]].T)[:7, 7:]
    assert np.allclose(r[:, :4], dense, atol=1e-5) and np.all(r[:, 4] == 0)
    co = coactivation(sp.csr_matrix(fa.numpy()), sp.csr_matrix(fb.numpy()))
    both = ((fa > 0).float().T @ (fb > 0).float()).numpy()
    assert np.allclose(co[:, :4], both[:, :4] / (fb[:, :4] > 0).float().sum(0).numpy(), atol=1e-6)


def planted_split(d: int = 64, n_small: int = 40, seed: int = 0):
    """Small rows; the large set keeps 20 of them, splits 10 into two children each, drops 10, adds 5 new."""
    g = torch.Generator().manual_seed(seed)
    small = torch.nn.functional.normalize(torch.randn(n_small, d, generator=g), dim=1)
    noise = lambda n: 0.35 * torch.nn.functional.normalize(torch.randn(n, d, generator=g), dim=1)  # noqa: E731
    kept = small[:20] + 0.1 * noise(20)
    children = torch.cat([small[20:30] + noise(10), small[20:30] + noise(10)])
    new = torch.nn.functional.normalize(torch.randn(5, d, generator=g), dim=1)
    return small, torch.cat([kept, children, new])


def test_splitting_tree_counts_planted_splits_orphans_and_new_features():
    small, large = planted_split()
    tree = split_tree(small, large)
    c = tree.counts()
    assert (c["one_to_one"], c["one_to_many"], c["orphan"], c["unparented"]) == (20, 10, 10, 5)
    assert c["children_max"] == 2 and c["children_of_split_parents_mean"] == 2.0
    table = tree.table()
    assert set(table.loc[table["parent"] == 25, "child"]) == {25, 35}
    # with co-activation, a child whose parent never fires with it is cut
    co = np.ones((40, 45), dtype=np.float32)
    co[25, 35] = 0.1
    assert split_tree(small, large, coact=co).counts()["one_to_one"] == 21


def test_nested_prefix_trees_find_refinements_among_the_new_latents():
    small, large = planted_split()
    rows = torch.cat([small[:30], large[20:40]])  # prefix 30, then two children for each of rows 20..29
    trees = nested_trees(rows, [30, 50])
    c = trees[(30, 50)].counts()
    assert c["one_to_many"] == 10 and c["orphan"] == 20 and c["unparented"] == 0
    assert trees[(30, 50)].edges["child"].min() == 30


def train_topk(x, d_sae: int, k: int, out, seed: int = 0, tokens: int | None = None, callbacks=None):
    sae, _ = train_sae(dict(architecture="topk", d_in=x.shape[1], d_sae=d_sae, k=k, aux_k=2 * k, dead_after_tokens=5000),
                       TensorDataModule(x, batch_size=256, seed=seed), out, total_tokens=tokens or x.shape[0],
                       lr=1e-2, save=False, seed=seed, trainer_cfg=QUIET, callbacks=callbacks)
    return sae


def test_stitching_classifies_exactly_the_left_out_features_as_novel(tmp_path, one_thread):
    # 64 frequent features (p 0.04) and 64 rare ones (p 0.005) in 32 dimensions: a 64-latent SAE
    # spends its latents on the frequent ones; the 128-latent SAE also learns rare ones.
    toy = ToyModel(d=32, n_features=128, p_active=0.04, n_rare=64, p_rare=0.005, seed=3)
    x, _ = toy.sample(200_000, seed=0)
    held_out, _ = toy.sample(8192, seed=99)
    small = train_topk(x, 64, 3, tmp_path / "s")
    large = train_topk(x, 128, 3, tmp_path / "l", seed=1)  # its own initialisation
    res = stitch(small, large, held_out)
    # truth: a large latent is novel when the planted feature it points at most closely is not
    # held by any small latent at cosine >= 0.7
    held = cosine_matrix(small.W_dec, toy.directions).max(axis=0)
    planted = cosine_matrix(large.W_dec, toy.directions).argmax(axis=1)
    truth = held[planted] < 0.7
    live = (res.features["class"] != "dead").to_numpy()
    novel = (res.features["class"] == "novel").to_numpy()
    tp = (novel & truth & live).sum()
    precision, recall = tp / novel.sum(), tp / (truth & live).sum()
    assert precision >= 0.9 and recall >= 0.9, (precision, recall)  # measured 0.98 / 0.98
    assert (truth & live).sum() >= 20  # the small SAE really left features out
    fam = res.family
    lo = res.originals["large (128)"]["mse_per_token"]
    hi = res.originals["small (64)"]["mse_per_token"]
    stitched = fam.loc[fam["stage"] == "add_novel", "mse_per_token"].to_numpy()
    assert len(stitched) == 8 and np.all((stitched < hi) & (stitched > lo))
    assert np.all(np.diff(stitched) <= 1e-9)  # each group of novel latents lowers the error
    # only swaps that alone lower the error are made (a replacement that reconstructs worse replaces
    # nothing), so the family need not end at the large SAE's error: it ends between the two
    # originals, at least half of the way down (the last point measured 0.569, the large SAE 0.525)
    end = fam.iloc[-1]["mse_per_token"]
    assert lo < end < hi and (hi - end) / (hi - lo) >= 0.5, (hi, end, lo)


def test_snapshots_through_training_and_the_life_cycle(tmp_path, one_thread):
    toy = ToyModel(d=16, n_features=32, p_active=0.06, seed=3)
    x, _ = toy.sample(256 * 120, seed=0)
    cb = SnapshotCallback(tmp_path / "snaps", [0.0, 0.1, 0.5, 1.0])
    final = train_topk(x, 32, 3, tmp_path / "run", callbacks=[cb])
    snaps = load_snapshots(tmp_path / "snaps")
    assert sorted(snaps) == [0.0, 0.1, 0.5, 1.0]
    assert snaps[1.0].metadata["snapshot"]["step"] == 120 and snaps[0.0].metadata["snapshot"]["step"] == 0
    assert torch.allclose(snaps[1.0].W_dec, final.W_dec, atol=1e-6)  # the last snapshot is the final SAE
    table = lifecycle_table(snaps, final)
    assert table["present_0.9"].iloc[-1] == 1.0 and table["median_angle_deg"].iloc[-1] < 0.1
    assert table["present_0.9"].iloc[0] < table["present_0.9"].iloc[-1]
    born = births(snaps, final)
    assert np.all(np.isin(born, [0.0, 0.1, 0.5, 1.0]))
    assert table["present_0.9"].iloc[0] < 0.5  # at initialisation few final directions exist yet


def test_coactivation_parents_find_refinements_that_point_elsewhere():
    g = torch.Generator().manual_seed(4)
    small = torch.nn.functional.normalize(torch.randn(3, 64, generator=g), dim=1)
    large = torch.nn.functional.normalize(torch.randn(3, 64, generator=g), dim=1)  # cosines ~0.1 with small
    co = np.array([[0.9, 0.1, 0.95], [0.05, 0.2, 0.0], [0.0, 0.3, 0.0]], dtype=np.float32)
    fires = np.array([40, 40, 2])  # child 2 fires on two sample tokens only
    by_decoder = split_tree(small, large, coact=co)
    by_behaviour = split_tree(small, large, coact=co, parent_by="coactivation", min_cosine=-1.0, child_fires=fires)
    assert by_decoder.counts()["unparented"] == 3
    assert by_behaviour.edges[["parent", "child"]].values.tolist() == [[0, 0]]
    assert by_behaviour.counts()["unparented"] == 2  # child 1: no parent at >= 0.5; child 2: too few firings

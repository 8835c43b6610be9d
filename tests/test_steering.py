"""Steering framework: interventions, directions, probes, held-out strength sweeps, fluency."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch import nn

from core.errors import ConfigError, DataError, ShapeError
from core.steering import (
    AblateFeatures,
    AddDirection,
    ClampFeatures,
    ProjectOut,
    SpareEdit,
    choose_strength,
    diffmean_direction,
    fluency,
    linear_probe,
    plot_sweep,
    position_mask,
    probe_direction,
    select_features,
    split_halves,
    steering_table,
    sweep_strengths,
)


class PerfectDictionary(nn.Module):
    """Orthonormal decoder, ReLU encoder: exact for activations built from non-negative codes."""

    def __init__(self, d: int, seed: int = 0) -> None:
        super().__init__()
        q, _ = torch.linalg.qr(torch.randn(d, d, generator=torch.Generator().manual_seed(seed)))
        self.W_dec = nn.Parameter(q.T.contiguous())  # rows orthonormal
        self.W_enc = nn.Parameter(q.contiguous())
        self.b_dec = nn.Parameter(torch.zeros(d))

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu((x - self.b_dec) @ self.W_enc)

    def decode(self, f: torch.Tensor) -> torch.Tensor:
        return f @ self.W_dec + self.b_dec


def _codes(n: int, d: int, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    f = torch.rand(n, d, generator=g) * 3
    return f * (torch.rand(n, d, generator=g) < 0.5)


def _batch(mask: torch.Tensor) -> SimpleNamespace:
    return SimpleNamespace(attention_mask=mask)


# ---------------------------------------------------------------- positions and directions

def test_last_position_respects_right_and_left_padding():
    act = torch.zeros(2, 4, 3)
    right = _batch(torch.tensor([[1, 1, 0, 0], [1, 1, 1, 1]]))
    m = position_mask(act, right, "last")
    assert m.tolist() == [[False, True, False, False], [False, False, False, True]]
    left = _batch(torch.tensor([[0, 0, 1, 1], [1, 1, 1, 1]]))
    assert position_mask(act, left, "last")[:, 3].all() and position_mask(act, left, "last").sum() == 2
    assert position_mask(act, right, "all").sum() == 6
    assert position_mask(act, None, "all").all()


def test_add_direction_only_touches_selected_positions():
    act = torch.randn(2, 4, 3)
    v = torch.tensor([1.0, -2.0, 0.5])
    batch = _batch(torch.tensor([[1, 1, 1, 0], [1, 1, 1, 1]]))
    out = AddDirection(v, 2.0, positions="last")(act, batch)
    diff = out - act
    assert torch.allclose(diff[0, 2], 2 * v) and torch.allclose(diff[1, 3], 2 * v)
    assert diff[0, :2].abs().sum() == 0 and diff[0, 3].abs().sum() == 0
    mask = torch.tensor([[True, False, False, False], [False, False, False, False]])
    out2 = AddDirection(v, 1.0, positions=mask)(act, batch)
    assert torch.allclose((out2 - act)[0, 0], v) and (out2 - act)[1].abs().sum() == 0


def test_project_out_removes_the_component():
    act = torch.randn(3, 5, 6)
    d = torch.randn(6)
    out = ProjectOut(d)(act, None)
    assert torch.allclose(out @ (d / d.norm()), torch.zeros(3, 5), atol=1e-5)
    with pytest.raises(ConfigError):
        ProjectOut(torch.zeros(6))


def test_wrong_width_direction_is_a_shape_error():
    with pytest.raises(ShapeError):
        AddDirection(torch.ones(4), 1.0)(torch.zeros(1, 2, 5), None)
    with pytest.raises(ConfigError):
        AddDirection(torch.ones(5), 1.0, positions="middle")(torch.zeros(1, 2, 5), None)


def test_diffmean_equals_group_mean_difference():
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(30, 7, generator=g) + 1.5, torch.randn(20, 7, generator=g)
    d = diffmean_direction(a, b)
    assert torch.allclose(d, a.mean(0) - b.mean(0), atol=1e-6)
    with pytest.raises(DataError):
        diffmean_direction(a, b[:0])


def _planted(n: int = 400, d: int = 32, seed: int = 0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    x = rng.normal(size=(n, d)).astype(np.float32)
    x[:, 3] += np.where(y == 1, 4.0, -4.0)
    return x, y


def test_probe_on_planted_direction_is_near_perfect_and_shuffled_is_chance():
    x, y = _planted()
    r = linear_probe(x[:300], y[:300], x[300:], y[300:], penalty="l1")
    assert r.accuracy > 0.97 and r.auroc > 0.99
    assert abs(r.coef[3]) == np.abs(r.coef).max()
    ys = np.random.default_rng(5).permutation(y)
    rs = linear_probe(x[:300], ys[:300], x[300:], ys[300:], penalty="l1")
    assert 0.35 < rs.accuracy < 0.65 and 0.3 < rs.auroc < 0.7


def test_probe_direction_points_from_class0_to_class1_and_spans_the_gap():
    x, y = _planted()
    w = probe_direction(x, y)
    assert int(torch.argmax(w.abs())) == 3 and w[3] > 0
    gap = (x[y == 1].mean(0) - x[y == 0].mean(0)) @ (w / w.norm()).numpy()
    assert math.isclose(float(w.norm()), float(gap), rel_tol=1e-4)
    with pytest.raises(DataError):
        probe_direction(x, np.zeros(len(x)))


# ---------------------------------------------------------------- SAE edits

def test_spare_edit_with_perfect_dictionary_reaches_targets_exactly():
    d = 8
    sae = PerfectDictionary(d)
    f = _codes(50, d)
    x = sae.decode(f).detach()
    assert torch.allclose(sae.encode(x), f, atol=1e-5)  # the dictionary really is perfect
    remove, add = [0, 2], [5, 6]
    rem_means, add_means = torch.tensor([1.0, 0.5]), torch.tensor([2.0, 1.5])
    edit = SpareEdit(sae, remove, add, rem_means, add_means, strength=1.5)
    x_new = edit(x[None], None)[0]
    f_new = sae.encode(x_new)
    want = f.clone()
    want[:, remove] = (f[:, remove] - 1.5 * rem_means).clamp_min(0)
    want[:, add] = torch.maximum(f[:, add], 1.5 * add_means)
    assert torch.allclose(f_new, want, atol=1e-5)
    assert torch.allclose(x_new, sae.decode(want), atol=1e-5)
    assert torch.allclose(SpareEdit(sae, remove, add, rem_means, add_means, 0.0)(x[None], None)[0], x)


def test_spare_keeps_the_reconstruction_error():
    d = 8
    sae = PerfectDictionary(d)
    x = sae.decode(_codes(10, d)).detach()
    noise = torch.randn(10, d) * 0.01
    edit = SpareEdit(sae, [1], [4], [0.7], [2.0], strength=1.0)
    clean, noisy = edit(x[None], None)[0], edit((x + noise)[None], None)[0]
    f_clean, f_noisy = sae.encode(x), sae.encode(x + noise)
    shift_clean = (edit.targets(f_clean) - f_clean[:, [1, 4]]) @ sae.W_dec[[1, 4]]
    shift_noisy = (edit.targets(f_noisy) - f_noisy[:, [1, 4]]) @ sae.W_dec[[1, 4]]
    assert torch.allclose(clean - x, shift_clean, atol=1e-5)
    assert torch.allclose(noisy - (x + noise), shift_noisy, atol=1e-5)
    with pytest.raises(ConfigError):
        SpareEdit(sae, [1, 2], [2], [1.0, 1.0], [1.0])


def test_clamp_and_ablate_features():
    d = 6
    sae = PerfectDictionary(d, seed=3)
    f = _codes(20, d, seed=4)
    x = sae.decode(f).detach()[None]
    clamped = sae.encode(ClampFeatures(sae, [1, 3], [4.0, 0.0])(x, None)[0])
    assert torch.allclose(clamped[:, 1], torch.full((20,), 4.0), atol=1e-5)
    assert torch.allclose(clamped[:, 3], torch.zeros(20), atol=1e-5)
    assert torch.allclose(clamped[:, [0, 2, 4, 5]], f[:, [0, 2, 4, 5]], atol=1e-5)
    ablated = AblateFeatures(sae, [0])(x, None)[0]
    assert torch.allclose(ablated, x[0] - f[:, :1] @ sae.W_dec[:1], atol=1e-5)
    with pytest.raises(ConfigError):
        AblateFeatures(sae, [d])


def test_select_features_splits_by_sign_of_mean_difference():
    rng = np.random.default_rng(0)
    y = np.r_[np.ones(60, int), np.zeros(60, int)]
    f = np.abs(rng.normal(size=(120, 10))) * (rng.random((120, 10)) < 0.2)
    f[y == 1, 2] += 3.0
    f[y == 0, 7] += 2.0
    sel = select_features(f, y, k=2)
    assert sel.a_features == [2] and sel.b_features == [7]
    assert sel.a_means[0] == pytest.approx(f[y == 1, 2].mean())


# ---------------------------------------------------------------- sweeps

def test_split_halves_is_disjoint_deterministic_and_complete():
    s1, t1 = split_halves(21, seed=3)
    s2, t2 = split_halves(21, seed=3)
    assert (s1, t1) == (s2, t2) and not set(s1) & set(t1) and sorted(s1 + t1) == list(range(21))
    with pytest.raises(DataError):
        split_halves(1)


def test_strength_selection_never_sees_the_scoring_half():
    prompts = [f"p{i}" for i in range(20)]
    select, score = split_halves(len(prompts), seed=0)
    score_set = {prompts[i] for i in score}
    calls = []

    class Steer:
        def __init__(self, s):
            self.s = s

    def behaviour(intervention, ps):
        s = None if intervention is None else intervention.s
        calls.append((s, tuple(ps)))
        if set(ps) <= score_set:  # the scoring half prefers the opposite strength
            return {"behaviour": -(s or 0.0), "fluency": 1.0}
        return {"behaviour": s or 0.0, "fluency": 1.0 + (s or 0.0) / 10}

    rows = sweep_strengths(Steer, [0.5, 1.0, 3.0], prompts, behaviour, method="m", layer=4, seed=0)
    chosen = [r for r in rows if r["method"] == "m" and r["split"] == "score"]
    assert len(chosen) == 1 and chosen[0]["strength"] == 3.0 and chosen[0]["behaviour"] == -3.0
    first_score_call = next(i for i, (_, ps) in enumerate(calls) if set(ps) & score_set)
    assert all(not set(ps) & score_set for _, ps in calls[:first_score_call])
    score_strengths = [s for s, ps in calls if set(ps) & score_set]
    assert sorted(score_strengths, key=str) == sorted([3.0, None], key=str)
    assert {r["split"] for r in rows} == {"select", "score"}
    table = steering_table(rows)
    assert list(table.columns[:8]) == ["method", "layer", "strength", "behaviour", "fluency", "n", "split",
                                       "chosen"]
    plot_sweep(rows)


def test_fluency_limit_and_objective():
    rows = [{"strength": 1.0, "behaviour": 0.2, "fluency": 10.0},
            {"strength": 2.0, "behaviour": 0.6, "fluency": 12.0},
            {"strength": 4.0, "behaviour": 0.9, "fluency": 80.0}]
    assert choose_strength(rows) == 4.0
    assert choose_strength(rows, max_fluency=20.0) == 2.0
    assert choose_strength(rows, objective="min") == 1.0
    assert choose_strength(rows, max_fluency=5.0) == 1.0


def test_fluency_is_geometric_mean_perplexity_of_scored_tokens():
    class Scorer:
        tokenizer = staticmethod(lambda t, add_special_tokens=False: {"input_ids": t.split()})

        def sequence_logprobs(self, prompts, conts):
            return torch.tensor([-math.log(4.0) * len(c.split()) for c in conts])

    assert fluency(Scorer(), ["a", "b", "c"], ["x y", "z", ""]) == pytest.approx(4.0)
    assert math.isnan(fluency(Scorer(), ["a"], [""]))


def test_probe_regularisation_chosen_inside_training_rows():
    x, y = _planted(n=200)
    groups = np.arange(150) // 2
    r = linear_probe(x[:150], y[:150], x[150:], y[150:], C=[0.001, 0.1, 1.0], groups_train=groups)
    assert r.C in (0.1, 1.0) and r.accuracy > 0.95

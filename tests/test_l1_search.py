"""The L1 coefficient search of the architecture comparison, on L0 curves with the cliff seen on
AntiBERTy (L0 172 at one coefficient, 0.2 at the next): bisection inside a bracket reaches the
target where secant steps alone overshoot."""

from __future__ import annotations

import math

from domains.benchmark.studies.architectures import next_l1


def search(l0, starts, target, max_runs=8):
    tried = {c: l0(c) for c in starts}
    while len(tried) < max_runs and (c := next_l1(tried, target)) is not None:
        tried[c] = l0(c)
    return tried


def cliff(c: float) -> float:
    return 500.0 if c < 0.1 else 30.0 * (0.1 / c) ** 2


def test_bisection_inside_a_cliffed_bracket_lands_within_ten_percent():
    tried = search(cliff, [0.03, 0.5], 16.0)
    best = min(tried.values(), key=lambda v: abs(math.log(v / 16)))
    assert abs(math.log(best / 16)) < math.log(1.1)
    assert len(tried) <= 8


def test_starts_on_one_side_step_outward_until_bracketed():
    tried = search(lambda c: 100.0 * c ** -1.0, [0.01, 0.02], 16.0)
    assert max(tried) > 0.02 and any(v < 16 * 1.1 for v in tried.values())


def test_flat_curve_moves_fourfold_and_stops_at_a_repeat():
    tried = {2.0: 46.9, 8.0: 47.8, 16.0: 48.1}  # gated on SmolLM2: L0 flat over 2-16
    assert next_l1(tried, 16.0) == 64.0
    assert next_l1({1.0: 5.0, 2.0: 5.0}, 16.0) == 0.25
    assert next_l1({1.0: 16.5}, 16.0) is None

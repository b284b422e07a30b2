"""The accuracy-cost metrics the benchmarks report for bf16 vs fp32 (load_tests/accuracy.py)."""

from __future__ import annotations

import random

import pytest

from load_tests.accuracy import compare_scores, kendall_tau, top_k_overlap


def test_kendall_tau_known_values():
    assert kendall_tau([1, 2, 3, 4], [10, 20, 30, 40]) == 1.0
    assert kendall_tau([1, 2, 3, 4], [4, 3, 2, 1]) == -1.0
    assert kendall_tau([1, 2, 3], [1, 3, 2]) == pytest.approx(1 / 3)  # one discordant pair of three
    assert kendall_tau([1, 1, 2], [1, 2, 3]) == pytest.approx(2 / 6**0.5)  # tau-b with a tie
    assert kendall_tau([5], [7]) == 1.0 and kendall_tau([], []) == 1.0
    with pytest.raises(ValueError):
        kendall_tau([1, 2], [1])


def test_kendall_tau_matches_a_brute_force_count_on_random_scores():
    rng = random.Random(1)
    for _ in range(20):
        a = [rng.random() for _ in range(15)]
        b = [x + rng.gauss(0, 0.2) for x in a]
        pairs = [(i, j) for i in range(15) for j in range(i + 1, 15)]
        agree = sum(1 if (a[i] - a[j]) * (b[i] - b[j]) > 0 else -1 for i, j in pairs)
        assert kendall_tau(a, b) == pytest.approx(agree / len(pairs))


def test_top_k_overlap():
    a = list(range(20))  # top 10 = items 10..19
    assert top_k_overlap(a, a) == 1.0
    assert top_k_overlap(a, [-x for x in a]) == 0.0
    b = a[:]
    b[19], b[0] = b[0], b[19]  # the best item falls out of b's top 10, a weak one enters
    assert top_k_overlap(a, b) == 0.9
    assert top_k_overlap([0.3, 0.1], [0.1, 0.3]) == 1.0  # fewer than k items: all of them
    assert top_k_overlap([], []) == 1.0


def test_compare_scores_reports_the_worst_job():
    ref = [[0.1, 0.5, 0.9], [0.2, 0.4]]
    other = [[0.1, 0.5, 0.9], [0.45, 0.4]]  # second job: order flipped, diff 0.25
    out = compare_scores(ref, other)
    assert out["max_abs_diff"] == 0.25
    assert out["kendall_tau_min"] == -1.0 and out["kendall_tau_mean"] == 0.0
    assert out["top10_overlap_min"] == 1.0  # both items of a 2-item job are its whole top 10
    with pytest.raises(ValueError):
        compare_scores(ref, other[:1])

"""Unit tests of the pure micro-batching helpers."""

import random

import pytest

from serve_app.engine.batching import MAX_PADDING, common_prefix_length, pad_left, pad_right, plan_micro_batches


def test_plan_covers_every_index_once_within_budget():
    rng = random.Random(0)
    lengths = [rng.randint(1, 600) for _ in range(300)]
    batches = plan_micro_batches(lengths, 2048)
    flat = [i for b in batches for i in b]
    assert sorted(flat) == list(range(300))
    for b in batches:
        assert len(b) * max(lengths[i] for i in b) <= 2048
        padded = len(b) * max(lengths[i] for i in b)
        assert len(b) == 1 or padded - sum(lengths[i] for i in b) <= MAX_PADDING * padded  # little padding
    maxima = [max(lengths[i] for i in b) for b in batches]
    assert maxima == sorted(maxima)  # shortest first


def test_a_job_that_fits_the_budget_is_still_split_by_length():
    lengths = [20, 21, 22, 500, 510]
    assert plan_micro_batches(lengths, 100_000) == [[0, 1, 2], [3, 4]]
    assert plan_micro_batches([16, 20, 24], 100_000) == [[0, 1], [2]]  # 24 would make a sixth of the batch padding
    assert plan_micro_batches([100] * 10, 100_000) == [list(range(10))]  # equal lengths: one batch


def test_oversized_item_gets_its_own_batch_and_empty_input():
    assert plan_micro_batches([10, 5000, 10], 100) == [[0, 2], [1]]
    assert plan_micro_batches([], 100) == []
    with pytest.raises(ValueError):
        plan_micro_batches([1], 0)


def test_padding_and_common_prefix():
    assert pad_left([[1, 2], [3]], 0) == ([[1, 2], [0, 3]], [[1, 1], [0, 1]])
    assert pad_right([[1, 2], [3]], 0) == ([[1, 2], [3, 0]], [[1, 1], [1, 0]])
    assert common_prefix_length([[1, 2, 3], [1, 2, 4], [1, 2]]) == 2
    assert common_prefix_length([[1], [2]]) == 0
    assert common_prefix_length([]) == 0

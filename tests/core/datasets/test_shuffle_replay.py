"""``split_vector.shuffle`` replays ``random.Random(seed).shuffle``: the same order, so existing splits stay reproducible."""

from __future__ import annotations

import random

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from modelyard.core.datasets.split_vector import shuffle, shuffle_draws, swapped


@pytest.mark.parametrize("count", [1, 2, 3, 4095, 4096, 4097, 8191, 8193, 65535, 65536, 65537, 131073, 250_000])
@pytest.mark.parametrize("seed", ["0/cat", "4294967295/", "7/日本"])
def test_shuffle_equals_random_shuffle(count: int, seed: str) -> None:
    members = np.arange(count, dtype=np.int64) * 3 + 5
    expected = members.tolist()
    random.Random(seed).shuffle(expected)
    assert shuffle(members, seed).tolist() == expected


def test_draws_are_those_of_random_randbelow() -> None:
    rng = random.Random("12/dog")
    draws = shuffle_draws(rng, 70_000)
    assert draws.tolist() == [rng._randbelow(i + 1) for i in range(69_999, 0, -1)]  # rng itself was not advanced


@settings(max_examples=200, deadline=None)
@given(st.data(), st.integers(1, 80))
def test_swaps_equal_the_sequential_swaps(data: st.DataObject, count: int) -> None:
    draws = [data.draw(st.integers(0, i)) for i in range(count - 1, 0, -1)]
    expected = list(range(10, 10 + count))
    for i, j in zip(range(count - 1, 0, -1), draws):
        expected[i], expected[j] = expected[j], expected[i]
    assert swapped(np.arange(10, 10 + count), np.array(draws, dtype=np.int64)).tolist() == expected

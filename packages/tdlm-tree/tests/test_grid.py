"""The integer grid the clustering computes on: its bound keeps float64 arithmetic exact."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from tdlm_tree.grid import MAX_GRID_BITS, grid_bits, to_grid


@given(st.integers(1, 2**40))
def test_grid_bits_keep_every_squared_distance_below_2_to_the_53(d):
    q = grid_bits(d)
    assert q <= MAX_GRID_BITS
    assert d * (2 ** (q + 1)) ** 2 <= 2**53
    assert q == MAX_GRID_BITS or d * (2 ** (q + 2)) ** 2 > 2**53  # and it is the largest such


@pytest.mark.parametrize(("d", "q"), [(1, 24), (8, 24), (9, 23), (64, 22), (768, 20), (4096, 19)])
def test_grid_bits_for_common_dimensions(d, q):
    assert grid_bits(d) == q


def test_extreme_grid_values_give_exact_float64_distances():
    d = 768
    q = grid_bits(d)
    a = np.full((1, d), 2.0**q)
    b = -a
    # The largest squared distance the grid allows, computed by BLAS: exact, and at most 2^53.
    assert (a - b) @ (a - b).T == d * 4.0 ** (q + 1) <= 2.0**53


def test_to_grid_scales_by_a_power_of_two_and_rounds():
    x = np.array([[3e30, -1.5e30, 0.0], [1e-300, 0.0, -0.0], [0.0, 0.0, 0.0]])
    grid, shift = to_grid(x, 10)
    assert shift == 10 - 102  # max |x| = 3e30 lies in [2^101, 2^102): scaled into [2^9, 2^10)
    # 3e30 / 2^92 = 605.85, -1.5e30 / 2^92 = -302.92; tiny values and zero rows become exact 0.
    np.testing.assert_array_equal(grid, [[606, -303, 0], [0, 0, 0], [0, 0, 0]])


def test_to_grid_of_tiny_values_and_of_zeros():
    grid, shift = to_grid(np.array([[1e-300, -2e-300], [0.0, 0.0]]), 24)
    assert shift == 24 + 995  # 2e-300 lies in [2^-996, 2^-995)
    # 2e-300 * 2^1019 = 11235582.09, 1e-300 * 2^1019 = 5617791.05: scaling up is exact too.
    np.testing.assert_array_equal(grid, [[5617791, -11235582], [0, 0]])
    zeros, shift = to_grid(np.zeros((3, 2)), 24)
    assert shift == 0
    np.testing.assert_array_equal(zeros, 0)


@given(st.integers(0, 2**32 - 1), st.integers(-60, 60))
def test_to_grid_is_invariant_to_power_of_two_scaling_and_odd(seed, power):
    x = np.random.default_rng(seed).standard_normal((20, 5))
    grid, _ = to_grid(x, 20)
    np.testing.assert_array_equal(to_grid(x * 2.0**power, 20)[0], grid)
    np.testing.assert_array_equal(to_grid(-x, 20)[0], -grid)

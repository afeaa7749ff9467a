"""Exact integer-grid arithmetic, so that the k-means constructions decide alike on every machine.

docs/method.md §2 (``embedding``, ``cooccurrence``): a tree must be a function of its input and
seed.
A float matrix product's rounding depends on the BLAS kernel, the thread count, the SIMD width
and the CPU, so float distances can order two near-equidistant points differently on two
machines. On the grid every coordinate is an integer of magnitude at most ``2^Q``, with ``Q``
small enough for the dimension that every dot product and squared distance between grid points,
and every partial sum of one, is an integer below ``2^53``: float64 holds each exactly, so any
summation order (any BLAS) gives the same exact result.
"""

import numpy as np

__all__ = ["MAX_GRID_BITS", "grid_bits", "to_grid"]

MAX_GRID_BITS = 24  # a float32 significand: a finer grid resolves nothing real inputs hold


def grid_bits(d: int) -> int:
    """The largest ``Q <= MAX_GRID_BITS`` with ``d (2^(Q+1))^2 <= 2^53``.

    A difference of two grid coordinates is at most ``2^(Q+1)``, so a squared distance in ``d``
    dimensions is at most ``d 4^(Q+1) <= 2^53``; a dot product is smaller still. That is
    ``Q = floor((51 - log2 d) / 2)``, computed in integers so that no rounding can move it.
    """
    if d < 1:
        raise ValueError(f"dimension must be at least 1, got {d}")
    q = MAX_GRID_BITS
    while d << (2 * q + 2) > 1 << 53:
        q -= 1
    return q


def to_grid(x: np.ndarray, bits: int) -> tuple[np.ndarray, int]:
    """``(rint(x 2^s), s)`` in float64, ``s`` the power of two that puts ``max |x|`` in
    ``[2^(bits-1), 2^bits)``, so every grid value has magnitude at most ``2^bits``.

    Scaling by a power of two is exact, so the grid depends on ``x``'s values alone: ``x`` times
    any power of two maps to the same grid, and, ``rint`` being odd (ties to even), negating a
    coordinate negates its grid values. An all-zero ``x`` maps to zeros with ``s = 0``.
    """
    grid = np.array(x, dtype=np.float64)  # a copy: scaled and rounded in place
    peak = max(float(grid.max()), -float(grid.min())) if grid.size else 0.0
    if peak == 0.0:
        return grid, 0
    shift = bits - int(np.frexp(peak)[1])
    np.ldexp(grid, shift, out=grid)
    np.rint(grid, out=grid)
    return grid, shift

"""Counting non-finite events (a row screen by one matrix product, then an exact check)."""

import numpy as np
import pytest

from mrdflow.gating._result import nonfinite_rows


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_nonfinite_rows_counts_rows_with_nan_or_infinity(dtype):
    ev = np.random.default_rng(0).uniform(-100, 262144, (5000, 7)).astype(dtype)
    ev[3, 0] = np.nan
    ev[4, 6] = np.inf
    ev[5, 2] = -np.inf
    ev[6, 1], ev[6, 2] = np.inf, -np.inf  # sums to NaN
    ev[7, 3], ev[7, 4] = np.nan, np.inf  # two in one row: one row
    big = np.finfo(dtype).max
    ev[8, :3] = big  # finite values whose sum overflows: not a non-finite row
    ev[9, :2] = big, -big
    assert nonfinite_rows(ev) == 5
    assert nonfinite_rows(ev[:0]) == 0 and nonfinite_rows(ev[10:]) == 0

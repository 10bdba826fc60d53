"""Density valley/peak finding on seeded synthetic data."""
import numpy as np
import pytest

from mrdflow.gating import density, peaks, threshold_valley
from mrdflow.gating._density import gaussian_smooth


def test_bimodal_valley_found_between_modes():
    rng = np.random.default_rng(0)
    v = np.concatenate([rng.normal(0.2, 0.05, 80_000), rng.normal(0.7, 0.08, 20_000)])
    t, how = threshold_valley(v, 0, 1, search=(0.3, 0.6))
    assert how == "valley"
    assert 0.33 < t < 0.5
    pk = np.sort(peaks(density(v, 0, 1)))
    assert len(pk) == 2 and abs(pk[0] - 0.2) < 0.02 and abs(pk[1] - 0.7) < 0.03


def test_unimodal_has_no_valley_label_and_stays_in_window():
    rng = np.random.default_rng(1)
    v = rng.normal(0.2, 0.05, 50_000)
    t, how = threshold_valley(v, 0, 1, search=(0.35, 0.6))
    assert how == "minimum" and 0.35 <= t <= 0.6


def test_empty_input_uses_fallback():
    t, how = threshold_valley(np.array([]), 0, 1, search=(0.3, 0.6), fallback=0.42)
    assert (t, how) == (0.42, "fallback")


def test_independent_of_event_count():
    rng = np.random.default_rng(2)
    small = np.concatenate([rng.normal(0.2, 0.05, 8_000), rng.normal(0.7, 0.08, 2_000)])
    big = np.concatenate([rng.normal(0.2, 0.05, 800_000), rng.normal(0.7, 0.08, 200_000)])
    ts, _ = threshold_valley(small, 0, 1, search=(0.3, 0.6))
    tb, _ = threshold_valley(big, 0, 1, search=(0.3, 0.6))
    assert abs(ts - tb) < 0.06


def test_find_peaks_is_scipys():
    """mrdflow's find_peaks (written out to spare every sample job scipy.signal's import) gives
    scipy.signal.find_peaks' peaks on smoothed densities, noisy curves and curves with plateaus."""
    from scipy.ndimage import gaussian_filter1d
    from scipy.signal import find_peaks as scipy_find_peaks

    from mrdflow.gating._density import find_peaks

    rng = np.random.default_rng(11)
    checked = 0
    for trial in range(3000):
        n = int(rng.integers(3, 600))
        y = rng.random(n)
        if trial % 3 == 0:
            y = gaussian_filter1d(y, rng.uniform(0.5, 20), mode="constant")
        if trial % 4 == 1:
            y = np.round(y * rng.integers(2, 12)) / 10  # plateaus and ties
        if trial % 5 == 2:
            y = np.concatenate([[0.0], y, [0.0]])
        top = float(y.max()) or 1.0
        for height, prominence in ((None, None), (0.02 * top, 0.01 * top), (None, 0.05 * top), (0.5 * top, None)):
            expect = scipy_find_peaks(y, height=height, prominence=prominence)[0]
            got = find_peaks(y, height=height, prominence=prominence)
            assert np.array_equal(got, expect), (trial, height, prominence)
            checked += 1
    assert checked == 12000


@pytest.mark.parametrize("mode", ["constant", "reflect"])
def test_gaussian_smooth_is_scipy_ndimage_bit_for_bit(mode):
    """The hand-written smoothing (no scipy.ndimage import in a sample job) equals
    gaussian_filter1d exactly, kernels wider than the curve included."""
    from scipy.ndimage import gaussian_filter1d

    rng = np.random.default_rng(7)
    for i in range(1500):
        n = int(rng.integers(1, 700))
        sigma = float(rng.uniform(0.3, 40))
        y = (rng.poisson(rng.uniform(0, 50), n) * (rng.random(n) < rng.random())).astype(float)
        if i % 3 == 0:
            y = rng.normal(0, 1, n)
        assert np.array_equal(gaussian_smooth(y, sigma, mode=mode), gaussian_filter1d(y, sigma, mode=mode)), (n, sigma)

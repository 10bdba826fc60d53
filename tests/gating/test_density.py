"""Density valley/peak finding on seeded synthetic data."""
import numpy as np

from mrdflow.gating import density, peaks, threshold_valley


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

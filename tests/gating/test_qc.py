"""QC steps on seeded synthetic acquisitions."""
import numpy as np

from mrdflow.gating import QCSettings, singlet_gate, time_qc


def _acquisition(n=100_000, clog=(40.0, 46.0), seed=0):
    rng = np.random.default_rng(seed)
    t = np.sort(rng.uniform(0, 100, n))
    sig = rng.normal(0.5, 0.1, (n, 2))
    if clog:
        inside = (t > clog[0]) & (t < clog[1])
        # a clog: most events in the window lost and the signal drifts down
        drop = inside & (rng.random(n) < 0.8)
        t, sig, inside = t[~drop], sig[~drop], inside[~drop]
        sig[inside] -= 0.15
    return t, sig


def test_clean_run_keeps_everything():
    t, sig = _acquisition(clog=None)
    res = time_qc(t, sig)
    assert res.keep.all() and res.segments == []


def test_clog_segment_is_flagged_and_removed():
    t, sig = _acquisition()
    res = time_qc(t, sig, signal_names=["FSC", "CD45"])
    assert res.segments, "clog not found"
    s0 = min(s for s, _ in res.segments)
    s1 = max(e for _, e in res.segments)
    assert 38 <= s0 <= 41 and 45 <= s1 <= 48
    assert res.keep[(t > 41) & (t < 45)].sum() == 0
    assert res.keep[(t < 35) | (t > 50)].all()
    assert "rate" in ",".join(res.reasons)


def test_settings_change_the_answer():
    t, sig = _acquisition()
    loose = time_qc(t, sig, QCSettings(rate_z=1e6, drift_z=1e6))
    assert loose.keep.all()


def test_singlets_exclude_doublets():
    rng = np.random.default_rng(3)
    h = rng.lognormal(11, 0.3, 50_000)
    a = h * rng.normal(1.05, 0.03, h.size)
    hd = rng.lognormal(11.3, 0.3, 2_000)
    ad = hd * rng.normal(1.6, 0.12, hd.size)
    A, H = np.concatenate([a, ad]), np.concatenate([h, hd])
    g = singlet_gate(A, H)
    assert g.keep[:50_000].mean() > 0.99
    assert g.keep[50_000:].mean() < 0.05
    assert abs(g.mode - 1.05) < 0.01


def test_long_clog_spanning_half_the_run_is_still_found():
    """A clog holding few events but lasting half the acquisition must not become the baseline."""
    rng = np.random.default_rng(5)
    t_ok = rng.uniform(0, 50, 70_000)
    t_clog = rng.uniform(50, 100, 5_000)  # rate ~1/7 of normal for the second half
    t = np.sort(np.concatenate([t_ok, t_clog]))
    res = time_qc(t, None)
    assert res.segments and min(s for s, _ in res.segments) <= 52
    assert res.keep[t < 49].mean() > 0.99 and res.keep[t > 52].mean() < 0.05

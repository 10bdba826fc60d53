"""Rectangle bounds tested on untransformed values (mrdflow.gating._rawbounds) give exactly the
memberships of the transformed-space evaluation, including events placed on the bounds' rounding."""

from __future__ import annotations

import numpy as np
import pytest

from mrdflow.gating import GateEngine, Strategy
from mrdflow.gating._model import (
    AsinhTransform,
    BooleanGate,
    Dimension,
    LinearTransform,
    LogicleTransform,
    PolygonGate,
    RectangleGate,
)
from mrdflow.gating._rawbounds import _RawPolygonTest, _RawRangeTest, raw_bound
from mrdflow.gating._transforms import apply_transform, transform_inverse

PNN = ["FSC-A", "SSC-A", "FL1-A", "FL2-A", "FL3-A", "Time"]
SPILL = (["FL1-A", "FL2-A", "FL3-A"], np.array([[1.0, 0.12, 0.02], [0.05, 1.0, 0.2], [0.0, 0.08, 1.0]]))
XFORMS = {
    "logicle": LogicleTransform(262144.0, 0.5, 4.5, 0.0),
    "asinh": AsinhTransform(262144.0, 4.0, 0.5),
    "scatter": LinearTransform(262144.0, 0.0),
}


def _strategy() -> Strategy:
    s = Strategy()
    for name, xform in XFORMS.items():
        s.add_transform(name, xform)

    def fl(ch, lo=None, hi=None, xform="logicle"):
        return Dimension(ch, "FCS", xform, lo, hi)

    s.add_gate(RectangleGate("Time", (Dimension("Time", "uncompensated", None, 5.0, 95.0),)), ("root",))
    s.add_gate(PolygonGate("Cells", (Dimension("FSC-A", "uncompensated", "scatter"),
                                     Dimension("SSC-A", "uncompensated", "scatter")),
                           ((0.1, 0.05), (0.9, 0.1), (0.85, 0.8), (0.3, 0.9), (0.15, 0.5))), ("root", "Time"))
    s.add_gate(RectangleGate("Pos1", (fl("FL1-A", 0.55),)), ("root", "Time", "Cells"))
    s.add_gate(RectangleGate("Box", (fl("FL1-A", 0.3, 0.7), fl("FL2-A", None, 0.62, "asinh"))),
               ("root", "Time", "Cells"))
    s.add_gate(RectangleGate("NotBox", (fl("FL3-A", 0.25, 0.8),), use_complement=True), ("root", "Time", "Cells"))
    s.add_gate(PolygonGate("Poly", (fl("FL2-A"), fl("FL3-A")),
                           ((0.2, 0.2), (0.7, 0.25), (0.6, 0.75), (0.25, 0.6))), ("root", "Time", "Cells"))
    # a square: its edges lie on its bounding box, so the box's margin decides edge events
    s.add_gate(PolygonGate("Square", (fl("FL1-A"), fl("FL3-A")),
                           ((0.3, 0.2), (0.7, 0.2), (0.7, 0.75), (0.3, 0.75))), ("root", "Time", "Cells"))
    s.add_gate(BooleanGate("Both", "and", ({"ref": "Pos1", "path": ("root", "Time", "Cells")},
                                           {"ref": "Poly", "path": ("root", "Time", "Cells"), "complement": True})),
               ("root", "Time", "Cells"))
    return s


def _events(n: int, seed: int, dtype=np.float32, compensated: bool = True) -> np.ndarray:
    """Random events plus, for every mapped bound, compensated values at the bound's inverse and
    a few ``dtype`` steps either side (solved back to raw, so compensation puts them there)."""
    rng = np.random.default_rng(seed)
    ev = np.column_stack([rng.uniform(0, 262144, n), rng.uniform(0, 262144, n),
                          10 ** rng.uniform(-1, 5.3, (n, 3)) * rng.choice([-1, 1], (n, 3), p=[0.1, 0.9]),
                          rng.uniform(0, 100, n)]).astype(dtype)
    edges = []
    for xform, bounds, col in (("logicle", (0.55, 0.3, 0.7, 0.25, 0.8, 0.2, 0.7), 2), ("asinh", (0.62,), 3),
                               ("logicle", (0.25, 0.8, 0.2, 0.75), 4), ("logicle", (0.2, 0.7, 0.25, 0.6), 3)):
        x = transform_inverse(XFORMS[xform], np.array(bounds))
        for v in x:
            edges.append((col, v))
    # Each edge value on 40 events: the other detectors random, this one's raw value solved so
    # that the (exact) compensated value lands on the edge, then stepped through its own dtype
    # neighbours, so compensated values straddle the bound at the dtype's resolution.
    inverse = np.linalg.inv(SPILL[1]) if compensated else np.eye(3)
    rows = []
    for col, v in edges:
        j = col - 2
        block = ev[rng.integers(0, n, 40)].copy()
        others = block[:, 2:5].astype(np.float64) @ inverse[:, j] - block[:, col].astype(np.float64) * inverse[j, j]
        target = ((float(v) - others) / inverse[j, j]).astype(dtype)
        block[:, col] = target + rng.integers(-3, 4, 40) * np.spacing(target)
        rows.append(block)
    specials = ev[:6].copy()
    specials[0, 2], specials[1, 3], specials[2, 4] = np.nan, np.inf, -np.inf
    specials[3, 0], specials[4, 1] = np.nan, np.inf
    # Cells, Time and FL1 inside Box, then one non-finite channel each: the vectorised logicle
    # maps NaN and infinities to its minimum, asinh keeps them, so only the transform can say.
    fl1 = float(transform_inverse(XFORMS["logicle"], np.array([0.6]))[0])
    cell = np.array([0.5 * 262144, 0.4 * 262144, fl1, 300.0, 300.0, 50.0])
    odd = np.tile(cell, (6, 1))
    odd[0, 2], odd[1, 2], odd[2, 3], odd[3, 3], odd[4, 4], odd[5, 4] = np.inf, np.nan, np.nan, np.inf, np.nan, np.inf
    return np.vstack([ev, *rows, specials, odd.astype(dtype)])


@pytest.mark.parametrize(("seed", "dtype", "compensated"),
                         [(0, np.float32, True), (1, np.float32, False), (2, np.float64, True), (3, np.float64, False)])
def test_raw_space_memberships_are_the_transformed_ones(seed, dtype, compensated):
    events = _events(60_000, seed, dtype, compensated)
    spill = SPILL if compensated else None
    strategy = _strategy()
    fast = GateEngine(strategy, chunk_size=17_000, workers=1)
    slow = GateEngine(strategy, chunk_size=17_000, workers=1, raw_bounds=False)
    kinds = {type(p.test) for p in fast._populations}
    assert _RawRangeTest in kinds and _RawPolygonTest in kinds  # the fast path is the one tested
    a = fast.evaluate(events, PNN, sample_comp=spill)
    b = slow.evaluate(events, PNN, sample_comp=spill)
    for path in b.paths:
        assert np.array_equal(a.membership(path), b.membership(path)), path
    assert 0 < a.count("Box") < a.count("Cells") and 0 < a.count("Both")
    if dtype is np.float64 and not compensated:  # values one float64 step from a bound: in its band
        rb = raw_bound(XFORMS["logicle"], 0.55)
        x = events[:, 2]
        assert np.count_nonzero((x >= rb.below) & (x < rb.above)) >= 5


def test_events_on_the_rounding_band_are_decided_by_the_transform():
    """Values strictly between a bound's mapped ``below`` and ``above`` are transformed; every
    value outside the band lands on the side its transform does."""
    xform = XFORMS["logicle"]
    rb = raw_bound(xform, 0.55)
    assert rb is not None and rb.below < rb.above
    x = np.linspace(rb.below - 5 * (rb.above - rb.below), rb.above + 5 * (rb.above - rb.below), 2001)
    t = apply_transform(xform, x.reshape(-1, 1)).reshape(-1)
    over, unsure = rb.decide(x, lower=True)
    assert np.array_equal(over[~unsure], t[~unsure] >= 0.55)
    under, band = rb.decide(x, lower=False)
    assert np.array_equal(band, unsure) and np.array_equal(under[~band], t[~band] < 0.55)
    assert unsure.any() and not unsure[x < rb.below].any()


def test_a_transform_not_known_to_be_increasing_is_not_mapped():
    class Odd:
        def apply(self, x):
            return -np.asarray(x)

        def inverse(self, x):
            return -np.asarray(x)

    assert raw_bound(Odd(), 0.5) is None
    assert raw_bound(XFORMS["scatter"], float("nan")) is None


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_approximate_compensation_stays_within_its_bound(dtype):
    """The fast compensation (a product with the inverse spillover in the events' dtype) differs
    from the exact solve by no more than the bound it reports, detector by detector, also with a
    saturated event in the chunk and an ill-conditioned matrix."""
    from mrdflow.gating._binding import _approx_compensation, _Compensation

    rng = np.random.default_rng(3)
    for spill in (SPILL[1], np.array([[1.0, 0.9, 0.5], [0.6, 1.0, 0.9], [0.3, 0.7, 1.0]])):
        block = np.column_stack([rng.uniform(0, 262144, 20_000), rng.uniform(0, 262144, 20_000),
                                 10 ** rng.uniform(-1, 5.4, (20_000, 3)) * rng.choice([-1, 1], (20_000, 3)),
                                 rng.uniform(0, 100, 20_000)]).astype(dtype)
        block[7, 3] = 4.2e6  # one saturated event widens the bound, never breaks it
        comp = _Compensation(spill, (2, 3, 4), {2: 0, 3: 1, 4: 2})
        approx, errors = _approx_compensation(block, comp)
        exact = comp.apply(block)
        assert approx.shape == (3, block.shape[0])
        assert np.all(np.abs(approx.T.astype(np.float64) - exact) <= errors)
        assert np.all(errors < 1e-3 * np.abs(block[:, 2:5]).max())  # a bound, not a shrug


def test_the_band_widens_by_the_compensation_error():
    """An approximate value within ``error`` of the band is sent to the exact path, on both sides."""
    rb = raw_bound(XFORMS["logicle"], 0.55)
    err = 10 * (rb.above - rb.below)
    x = np.array([rb.below - 0.5 * err, rb.above + 0.5 * err, rb.below - 2 * err, rb.above + 2 * err])
    over, band = rb.decide(x, err)
    assert band.tolist() == [True, True, False, False]
    assert over.tolist()[2:] == [False, True]
    _, narrow = rb.decide(x, 0.0)
    assert narrow.tolist() == [False, False, False, False]


def test_any_approximation_within_its_bound_gives_the_same_memberships(monkeypatch):
    """Adversarial: the fast compensation pushed anywhere within its reported bound (here 90% of
    it, up or down at random per value) still decides every event as the transformed-space
    evaluation does; the band's margin is what makes that so."""
    import mrdflow.gating._binding as binding

    real = binding._approx_compensation
    rng = np.random.default_rng(11)

    def pushed(block, comp):
        values, errors = real(block, comp)
        push = rng.choice([-0.9, 0.9], values.shape) * errors[:, None]
        return (values + push).astype(values.dtype), errors

    monkeypatch.setattr(binding, "_approx_compensation", pushed)
    events = _events(60_000, 5, np.float32, True)
    strategy = _strategy()
    a = GateEngine(strategy, chunk_size=17_000, workers=1).evaluate(events, PNN, sample_comp=SPILL)
    b = GateEngine(strategy, chunk_size=17_000, workers=1, raw_bounds=False).evaluate(events, PNN, sample_comp=SPILL)
    for path in b.paths:
        assert np.array_equal(a.membership(path), b.membership(path)), path

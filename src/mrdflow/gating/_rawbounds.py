"""Rectangle and polygon tests evaluated on untransformed (compensated, scaled) values.

A gate's bound ``b`` on a transformed feature T(x) (logicle, asinh, linear: strictly increasing)
is a bound on x itself: T(x) >= b exactly when x >= T^-1(b), up to rounding. So an event can be
gated by comparing its compensated value with the bound mapped back once per gate, with no
transform of the event at all. Rounding is handled exactly, not approximately: each bound is
mapped to a pair ``below`` < ``above`` with T(below) < b < T(above) checked on the very function
the engine evaluates; an event under ``below`` transforms under b, one at or over ``above``
transforms over b, and only the events between (a band a few 1e-9 gate units wide, nearly always
empty), non-finite ones and NaN are transformed and compared as before. The memberships are
therefore identical to the transformed-space evaluation, event for event (tests/gating/
test_rawbounds.py).

The untransformed values a bound is compared with need not be exact either: the engine gives a
compensation computed as a product with the inverse spillover in the events' dtype (a few ms per
10^6 events, against ~0.2 s for the exact float64 solve) with a bound on its error; the band
widens by that bound, and only the events inside it are solved exactly (on those rows alone:
LAPACK may round a row's solve differently in the last bit depending on how many rows it solves at
once, as it already may between the engine's chunks and FlowKit's whole matrix).

A polygon is tested as before, but only on the events inside its bounding box mapped back the same
way (every event outside the box is outside the polygon in FlowUtils' semantics), so only those
are transformed.

Why written here: FlowKit and FlowUtils always transform every event before testing; mapping the
bounds instead is what makes counting a 10^7-event tube cost comparisons rather than logicles.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mrdflow.gating._binding import nonfinite_of
from mrdflow.gating._compile import Feature, _PolygonTest, _Population, _RangeTest, points_in_polygon
from mrdflow.gating._transforms import apply_transform, transform_inverse

__all__ = ["RawBound", "raw_bound", "raw_space_populations"]

#: Half-width of the band around a mapped bound, in gate units (relative above 1): far above the
#: transforms' float64 rounding (~1e-15), far below any event spacing that matters.
BAND = 1e-9

#: Transforms known to be strictly increasing (ours and FlowKit's, by class name).
MONOTONE = frozenset({"LogicleTransform", "AsinhTransform", "LinearTransform", "LogTransform",
                      "HyperlogTransform"})


@dataclass(frozen=True)
class RawBound:
    """A transformed-space bound mapped to the untransformed value: T(x) < bound for every x below
    ``below``, T(x) > bound for every x at or above ``above``; between, T is evaluated."""

    bound: float
    below: float
    above: float

    def decide(self, x: np.ndarray, error: float = 0.0, *, lower: bool = True,
               nonfinite: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(passes, needs the transform) per untransformed value ``x`` (known to within ``error``,
        an approximate compensation): passes ``T(x) >= bound`` (``lower``) or ``T(x) < bound``.
        The band widens by ``error``, and its ends are rounded outwards to ``x``'s dtype so the
        comparisons stay exact. ``nonfinite``: the rows of ``x`` that are NaN or infinite (None:
        none), which always need the transform (the vectorised logicle maps them to its minimum)."""
        at_least = x >= _rounded(self.below - error, x.dtype, up=False)
        over = x >= _rounded(self.above + error, x.dtype, up=True)
        band = at_least ^ over  # below - error <= x < above + error
        if nonfinite is not None:
            band |= nonfinite
        return (over if lower else ~at_least), band


def _rounded(value: float, dtype, *, up: bool):
    """``value`` in ``dtype`` (a float dtype), rounded up (or down) so the comparison with it
    is exact: the nearest representable value on the safe side."""
    dtype = np.dtype(dtype) if np.dtype(dtype).kind == "f" else np.dtype(np.float64)
    v = dtype.type(value)
    if up and float(v) < value:
        v = np.nextafter(v, dtype.type(np.inf))
    elif not up and float(v) > value:
        v = np.nextafter(v, dtype.type(-np.inf))
    return v


def _untransformed(values_of, base: Feature) -> tuple[np.ndarray, float, np.ndarray | None]:
    """(values, error bound, non-finite rows or None) of ``base`` on the rows tested: the engine's
    fast approximation when it has one, else the exact values."""
    approx = getattr(values_of, "approx", None)
    found = approx(base) if approx is not None else None
    if found is not None:
        return found
    x = values_of(base)
    return x, 0.0, nonfinite_of(x)


def raw_bound(transform, bound: float) -> RawBound | None:
    """``bound`` (gate units) mapped through ``transform``'s inverse, or None when the transform is
    not known to be increasing or the mapping does not check out."""
    if type(transform).__name__ not in MONOTONE or not np.isfinite(bound):
        return None
    delta = BAND * max(1.0, abs(float(bound)))
    try:
        below, above = (float(v) for v in transform_inverse(transform, np.array([bound - delta, bound + delta])))
        t_below, t_above = (float(v) for v in apply_transform(transform, np.array([[below], [above]])).reshape(-1))
    except Exception:  # noqa: BLE001 -- a transform that cannot invert is evaluated as before
        return None
    if not (np.isfinite(below) and np.isfinite(above) and below < above and t_below < bound < t_above):
        return None
    return RawBound(float(bound), below, above)


@dataclass(frozen=True)
class _RawRangeTest:
    """A :class:`_RangeTest` whose transformed dimensions compare untransformed values with mapped
    bounds. ``raw[i]``: None (dimension tested as before) or (untransformed feature, lower
    RawBound or None, upper RawBound or None)."""

    features: tuple[Feature, ...]
    bounds: tuple[tuple[float | None, float | None], ...]
    raw: tuple[tuple[Feature, RawBound | None, RawBound | None] | None, ...]
    complement: bool = False
    whole_chunk = True  # the engine tests every row of a chunk, then ANDs the parent

    def __call__(self, values_of, n: int, refs) -> np.ndarray:
        inside = np.ones(n, dtype=bool)
        for feature, (lo, hi), raw in zip(self.features, self.bounds, self.raw):
            if raw is None:
                values = values_of(feature)
                if lo is not None:
                    inside &= values >= lo
                if hi is not None:
                    inside &= values < hi
                continue
            base, rlo, rhi = raw
            x, error, bad = _untransformed(values_of, base)
            for rb, is_lower in ((rlo, True), (rhi, False)):
                if rb is None:
                    continue
                passed, band = rb.decide(x, error, lower=is_lower, nonfinite=bad)
                if band.any():
                    rows = np.flatnonzero(band & inside)
                    if rows.size:
                        t = values_of(feature, rows)
                        passed[rows] = (t >= rb.bound) if is_lower else (t < rb.bound)
                inside &= passed
        if self.complement:
            np.logical_not(inside, out=inside)
        return inside


@dataclass(frozen=True)
class _RawPolygonTest:
    """A :class:`_PolygonTest` evaluated only on the events inside its bounding box, found on the
    untransformed values (box[i]: the (lower, upper) RawBound of feature i's vertex range)."""

    features: tuple[Feature, Feature]
    vertices: tuple[tuple[float, float], ...]
    box: tuple[tuple[Feature, RawBound, RawBound], tuple[Feature, RawBound, RawBound]]
    complement: bool = False

    def __call__(self, values_of, n: int, refs) -> np.ndarray:
        maybe = np.ones(n, dtype=bool)
        for base, lo, hi in self.box:
            x, error, bad = _untransformed(values_of, base)
            # a superset of the box: at or over `lo.below` and under `hi.above` (NaN and
            # infinities kept: the transform decides where they go)
            near = (x >= _rounded(lo.below - error, x.dtype, up=False)) & (x < _rounded(hi.above + error, x.dtype,
                                                                                          up=True))
            maybe &= near if bad is None else (near | bad)
        rows = np.flatnonzero(maybe)
        inside = np.zeros(n, dtype=bool)
        if rows.size:
            inside[rows] = points_in_polygon(values_of(self.features[0], rows), values_of(self.features[1], rows),
                                             self.vertices)
        if self.complement:
            np.logical_not(inside, out=inside)
        return inside


def _mapped(feature: Feature, strategy, bounds: tuple[float | None, ...]) -> tuple[RawBound | None, ...] | None:
    """Each of ``bounds`` mapped for ``feature`` (None entries stay None), or None when the feature
    is not a plain transformed channel or a bound does not map."""
    if feature.ratio or feature.xform_ref is None:
        return None
    transform = strategy.transformations.get(feature.xform_ref)
    out = []
    for b in bounds:
        if b is None:
            out.append(None)
            continue
        rb = raw_bound(transform, float(b))
        if rb is None:
            return None
        out.append(rb)
    return tuple(out)


def _raw_test(test, strategy):
    if type(test) is _RangeTest:
        raw = []
        for feature, (lo, hi) in zip(test.features, test.bounds):
            mapped = _mapped(feature, strategy, (lo, hi))
            raw.append(None if mapped is None else (feature.untransformed(), *mapped))
        if all(r is None for r in raw):
            return test
        return _RawRangeTest(test.features, test.bounds, tuple(raw), test.complement)
    if type(test) is _PolygonTest:
        box = []
        for i, feature in enumerate(test.features):
            coords = [v[i] for v in test.vertices]
            mapped = _mapped(feature, strategy, (min(coords), max(coords)))
            if mapped is None:
                return test
            box.append((feature.untransformed(), *mapped))
        return _RawPolygonTest(test.features, test.vertices, (box[0], box[1]), test.complement)
    return test


def raw_space_populations(populations: list[_Population], strategy) -> list[_Population]:
    """``populations`` with each rectangle and polygon test that can be evaluated on untransformed
    values replaced by its raw-space form (same memberships, far fewer transforms)."""
    out = []
    for pop in populations:
        test = _raw_test(pop.test, strategy)
        out.append(pop if test is pop.test else _Population(pop.path, pop.parent, pop.gate_type, test,
                                                             pop.quadrant_gate))
    return out

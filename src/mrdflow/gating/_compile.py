"""Compiling a FlowKit gating strategy for :class:`~mrdflow.gating.GateEngine`: the features each
gate dimension tests, the gate tests themselves (rectangle, polygon, ellipsoid, boolean; FlowKit
semantics, see :mod:`mrdflow.gating._engine`) and the populations in evaluation order.
"""

from __future__ import annotations

import graphlib
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from mrdflow.errors import MrdflowError

__all__ = [
    "Feature",
    "GateEngineError",
    "GateKey",
    "GatePath",
    "SpillMatrix",
    "combine_boolean",
    "points_in_polygon",
]

#: A population's key: ("root", ancestor gate ids..., gate id), as the nodes of FlowKit's gate tree.
#: A quadrant's path runs through its QuadrantGate: ("root", "Quad1", "FL2P-FL4P").
GatePath = tuple[str, ...]
#: A gate given by id (must be unique in the strategy) or by path (with or without "root").
GateKey = str | GatePath
#: A spillover matrix as (detector $PnN labels, n x n array); row i = fluorochrome i's spill.
SpillMatrix = tuple[Sequence[str], np.ndarray]

UNCOMPENSATED = "uncompensated"
FCS_COMPENSATION = "FCS"
ROOT = "root"


class GateEngineError(MrdflowError):
    """A gating strategy the engine cannot evaluate, or events that do not fit it."""


# ------------------------------------------------------------------------------------------------
# Features: the per-event float64 quantities gates test
# ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Feature:
    """One per-event quantity a gate dimension tests, in the gate's coordinate units.

    ``source``: the dimension's channel name (a $PnN, $PnS or matrix fluorochrome), or, when
    ``ratio`` is true, the id of a ``RatioTransform`` in the strategy.  ``comp_ref``: None for
    uncompensated, ``"FCS"`` for the sample's own spillover, else a matrix id of the strategy.
    ``xform_ref``: id of a strategy transform applied after compensation, or None (scaled units).
    """

    source: str
    comp_ref: str | None = None
    xform_ref: str | None = None
    ratio: bool = False

    def untransformed(self) -> Feature:
        return Feature(self.source, self.comp_ref, None, self.ratio)


def _gate_features(gate, dimensions) -> tuple[Feature, ...]:
    """The features of ``gate``'s dimensions, with FlowKit's gate-level compensation rule."""
    comp_refs = {d.compensation_ref for d in dimensions if d.compensation_ref not in (None, UNCOMPENSATED)}
    if len(comp_refs) > 1:
        raise GateEngineError(
            f"gate {gate.gate_name!r} mixes compensation matrices {sorted(comp_refs)}; "
            "FlowKit does not support this either"
        )
    comp = next(iter(comp_refs), None)
    features = []
    for dim in dimensions:
        kind = type(dim).__name__  # FlowKit's dimension classes, or ours (a plain Dimension)
        if kind == "RatioDimension":
            features.append(Feature(dim.ratio_ref, None, dim.transformation_ref, ratio=True))
        elif kind == "QuadrantDivider":
            features.append(Feature(dim.dimension_ref, comp, dim.transformation_ref))
        else:
            features.append(Feature(dim.id, comp, dim.transformation_ref))
    return tuple(features)


# ------------------------------------------------------------------------------------------------
# Gate tests: geometry evaluated on a chunk's features
# ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _RangeTest:
    """Hyper-rectangle (rectangle, range, quadrant): ``lo <= x < hi`` per dimension."""

    features: tuple[Feature, ...]
    bounds: tuple[tuple[float | None, float | None], ...]
    complement: bool = False

    def __call__(self, values_of, n: int, refs) -> np.ndarray:
        inside = np.ones(n, dtype=bool)
        for feature, (lo, hi) in zip(self.features, self.bounds):
            values = values_of(feature)
            if lo is not None:
                inside &= values >= lo
            if hi is not None:
                inside &= values < hi
        if self.complement:
            np.logical_not(inside, out=inside)
        return inside


@dataclass(frozen=True)
class _PolygonTest:
    """2-D polygon with FlowUtils' point-in-polygon semantics (see :mod:`mrdflow.gating._engine`)."""

    features: tuple[Feature, Feature]
    vertices: tuple[tuple[float, float], ...]
    complement: bool = False

    def __call__(self, values_of, n: int, refs) -> np.ndarray:
        inside = points_in_polygon(values_of(self.features[0]), values_of(self.features[1]), self.vertices)
        if self.complement:
            np.logical_not(inside, out=inside)
        return inside


@dataclass(frozen=True, eq=False)
class _EllipsoidTest:
    """N-D ellipsoid: squared Mahalanobis distance to ``mean`` under ``inv_cov`` <= ``dist2``."""

    features: tuple[Feature, ...]
    mean: np.ndarray
    inv_cov: np.ndarray
    dist2: float

    def __call__(self, values_of, n: int, refs) -> np.ndarray:
        points = np.column_stack([values_of(f) for f in self.features])
        centred = points - self.mean
        terms = np.dot(centred, self.inv_cov) * centred
        # for 2 columns, a + b is bit-identical to FlowUtils' .sum(axis=1), and much faster
        distance = terms[:, 0] + terms[:, 1] if terms.shape[1] == 2 else terms.sum(axis=1)
        return distance <= self.dist2


@dataclass(frozen=True)
class _BooleanTest:
    """and / or / not over other populations' memberships (each optionally complemented)."""

    op: str
    operands: tuple[tuple[GatePath, bool], ...]

    def __call__(self, values_of, n: int, refs) -> np.ndarray:
        return combine_boolean(self.op, [(refs(path), complement) for path, complement in self.operands])


def points_in_polygon(x: np.ndarray, y: np.ndarray, vertices: Sequence[tuple[float, float]]) -> np.ndarray:
    """Membership of points (x[i], y[i]) in a polygon, exactly as ``flowutils.gating.points_in_polygon``.

    Crossing parity of a rightward ray (even-odd rule) with half-open edges; points outside the
    vertices' bounding box, and NaN, are out.  x, y: float64 1-D arrays in the gate's units.
    Work is O(events in the bounding box x vertices).
    """
    verts = [(float(a), float(b)) for a, b in vertices]
    xs = [v[0] for v in verts]
    ys = [v[1] for v in verts]
    in_box = (x >= min(xs)) & (x <= max(xs)) & (y >= min(ys)) & (y <= max(ys))
    candidates = np.flatnonzero(in_box)
    px = x[candidates]
    py = y[candidates]
    odd = np.zeros(candidates.size, dtype=bool)
    for i, (ax, ay) in enumerate(verts):
        bx, by = verts[(i + 1) % len(verts)]
        if ay < by:  # upward edge: counts when ay <= y < by and the point is strictly left
            crossing = np.flatnonzero((py >= ay) & (py < by))
        elif ay > by:  # downward edge: counts when by <= y < ay and the point is strictly right
            crossing = np.flatnonzero((py >= by) & (py < ay))
        else:  # horizontal edges never count
            continue
        if crossing.size == 0:
            continue
        # the same expression, in the same order, as FlowUtils' is_left (double precision)
        is_left = (bx - ax) * (py[crossing] - ay) - (px[crossing] - ax) * (by - ay)
        counted = crossing[is_left > 0] if ay < by else crossing[is_left < 0]
        odd[counted] ^= True  # +1 / -1 winding contributions: only their parity matters
    out = np.zeros(x.shape[0], dtype=bool)
    out[candidates] = odd
    return out



def combine_boolean(op: str, operands: Iterable[tuple[np.ndarray, bool]]) -> np.ndarray:
    """A Gating-ML boolean gate's membership from its operands' memberships.

    ``operands``: (bool membership array, use-as-complement) per referenced gate; a complemented
    operand is negated first. ``op``: ``and`` / ``or`` over the operands, or ``not`` (negates its
    single operand). The parent is not applied here.
    """
    parts = [~members if complement else members for members, complement in operands]
    if op == "and":
        return np.logical_and.reduce(parts)
    if op == "or":
        return np.logical_or.reduce(parts)
    return ~parts[0]  # "not": Gating-ML allows exactly one operand


#: What a population evaluates: called as test(values_of, n_rows, refs) -> bool array of n_rows,
#: where values_of(feature[, rows]) gives the feature on the rows evaluated (or on those of them at
#: positions ``rows``) and refs(path) a population's
#: membership on the whole chunk (used by boolean gates, which always see the whole chunk).
_GateTest = _RangeTest | _PolygonTest | _EllipsoidTest | _BooleanTest

# ------------------------------------------------------------------------------------------------
# Populations: the compiled gate tree
# ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Population:
    """One gated population: its test, and the population whose events bound it."""

    path: GatePath
    parent: GatePath | None  # None: all events
    gate_type: str
    test: _GateTest
    quadrant_gate: str | None = None

    @property
    def gate_id(self) -> str:
        return self.path[-1]

    @property
    def depends_on(self) -> tuple[GatePath, ...]:
        deps = () if self.parent is None else (self.parent,)
        if isinstance(self.test, _BooleanTest):
            deps += tuple(path for path, _ in self.test.operands)
        return deps


class _NoQuadrants(Exception):
    """Never raised: stands for FlowKit's QuadrantReferenceError when FlowKit is not loaded."""


def _quadrant_reference_error() -> type[Exception]:
    """FlowKit's QuadrantReferenceError (only a FlowKit strategy has quadrants, and then FlowKit is
    loaded); a class never raised otherwise, so a sample job need not import FlowKit."""
    fk_exceptions = sys.modules.get("flowkit.exceptions")
    return fk_exceptions.QuadrantReferenceError if fk_exceptions is not None else _NoQuadrants


def _population_parent(strategy, ancestors: GatePath, sample_id) -> GatePath | None:
    """The population bounding a gate whose tree ancestors are ``ancestors``."""
    if ancestors == (ROOT,):
        return None
    try:
        parent_gate = strategy.get_gate(ancestors[-1], ancestors[:-1], sample_id=sample_id)
    except _quadrant_reference_error():
        return ancestors
    if getattr(parent_gate, "gate_type", None) == "QuadrantGate":  # a Quadrant's own ancestors
        return _population_parent(strategy, ancestors[:-1], sample_id)
    return ancestors


def _compile(strategy, sample_id) -> list[_Population]:
    populations = []
    for gate_id, ancestors in strategy.get_gate_ids():
        ancestors = tuple(ancestors)
        path = ancestors + (gate_id,)
        try:
            gate = strategy.get_gate(gate_id, ancestors, sample_id=sample_id)
        except _quadrant_reference_error():
            qgate = strategy.get_gate(ancestors[-1], ancestors[:-1], sample_id=sample_id)
            populations.append(_quadrant_population(qgate, gate_id, path, strategy, sample_id))
            continue
        if getattr(gate, "gate_type", None) == "QuadrantGate":
            continue  # only its quadrants are populations
        parent = _population_parent(strategy, ancestors, sample_id)
        populations.append(_Population(path, parent, gate.gate_type, _gate_test(gate)))
    return _evaluation_order(populations)


def _quadrant_population(qgate, quad_id, path, strategy, sample_id) -> _Population:
    quadrant = qgate.quadrants[quad_id]
    dividers = {d.id: d for d in qgate.dimensions}
    used = [dividers[ref] for ref in quadrant.divider_refs]
    features = _gate_features(qgate, qgate.dimensions)
    by_divider = dict(zip((d.id for d in qgate.dimensions), features))
    bounds = []
    for d in used:
        lo, hi = quadrant.get_divider_range(d.id)
        bounds.append((None if lo is None else float(lo), None if hi is None else float(hi)))
    test = _RangeTest(tuple(by_divider[d.id] for d in used), tuple(bounds))
    parent = _population_parent(strategy, path[:-1], sample_id)
    return _Population(path, parent, qgate.gate_type, test, quadrant_gate=qgate.gate_name)


def _gate_test(gate) -> _GateTest:
    """The test of one gate: FlowKit's gate classes or ours (:mod:`mrdflow.gating._model`), told
    apart by ``gate_type`` as both name them."""
    kind = gate.gate_type
    if kind == "BooleanGate":
        operands = tuple(
            (tuple(ref["path"]) + (ref["ref"],), bool(ref.get("complement", False))) for ref in gate.gate_refs
        )
        if not operands:
            raise GateEngineError(f"BooleanGate {gate.gate_name!r} references no gates")
        return _BooleanTest(gate.type, operands)
    features = _gate_features(gate, gate.dimensions)
    if kind == "RectangleGate":
        bounds = tuple((getattr(d, "min", None), getattr(d, "max", None)) for d in gate.dimensions)
        return _RangeTest(features, bounds, bool(gate.use_complement))
    if kind == "PolygonGate":
        if len(features) != 2:
            raise GateEngineError(f"PolygonGate {gate.gate_name!r} has {len(features)} dimensions, not 2")
        vertices = tuple((float(v[0]), float(v[1])) for v in gate.vertices)
        return _PolygonTest(features, vertices, bool(gate.use_complement))
    if kind == "EllipsoidGate":
        mean = np.asarray(gate.coordinates, dtype=np.float64)
        inv_cov = np.linalg.inv(np.asarray(gate.covariance_matrix, dtype=np.float64))
        return _EllipsoidTest(features, mean, inv_cov, float(gate.distance_square))
    raise GateEngineError(f"unsupported gate type {type(gate).__name__} ({gate.gate_name!r})")


def _evaluation_order(populations: list[_Population]) -> list[_Population]:
    by_path = {p.path: p for p in populations}
    sorter = graphlib.TopologicalSorter()
    for p in populations:
        missing = [d for d in p.depends_on if d not in by_path]
        if missing:
            raise GateEngineError(f"gate {p.path} depends on unknown populations {missing}")
        sorter.add(p.path, *p.depends_on)
    try:
        return [by_path[path] for path in sorter.static_order()]
    except graphlib.CycleError as exc:
        raise GateEngineError(f"cyclic gate dependencies: {exc.args[1]}") from exc


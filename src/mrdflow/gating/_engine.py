"""Gate evaluation: FlowKit gating strategies applied to float32 event matrices, chunk by chunk.

Why this module is hand-written
-------------------------------
FlowKit is the reference for gating semantics (Gating-ML 2.0), and we keep it for everything it
does well: parsing and writing Gating-ML (``flowkit.parse_gating_xml``, ``flowkit.export_gatingml``),
FlowJo workspaces, and the gate / transform / compensation objects themselves.  Its *evaluator*
(``flowkit.Sample`` + ``GatingStrategy.gate_sample``) does not scale to our tubes: a Sample keeps
float64 copies of the raw, compensated and transformed events, every gate re-compensates and
re-transforms the whole matrix, and building a Sample from an array goes through a Python list of
every value.  For 10^7 events x 12 channels that is gigabytes and tens of seconds.

:class:`GateEngine` takes the same ``flowkit.GatingStrategy`` and gives the same per-event
answers, but

* reads the caller's (float32) events in row chunks (default 10^6 events), so extra memory is
  O(chunk x columns the gates need) plus one boolean per event per population;
* per chunk, compensates once per compensation reference and transforms once per
  (compensation, transform, channel), shared by all gates (a small per-chunk cache);
* upcasts only the needed columns to float64 and applies FlowKit's own transform objects
  (``transform.apply``) and FlowKit's compensation arithmetic (``solve(spill.T, x.T).T``), so
  the numbers a gate tests are bit-for-bit the ones FlowKit tests;
* evaluates the gate geometry itself, vectorised, reproducing FlowKit/FlowUtils exactly.

FlowKit semantics reproduced (FlowKit 1.3.2 / FlowUtils 1.x), pinned by tests/test_gates.py
--------------------------------------------------------------------------------------------
* Rectangle / range / quadrant bounds are half-open: ``min <= x < max``; a missing bound is
  unbounded.  ``use_complement`` inverts the gate *before* the parent is applied.
* Polygon: FlowUtils' winding-number loop (Sunday's algorithm) followed by ``wind % 2 != 0``,
  i.e. the even-odd (crossing-parity) rule, so the overlap of a self-intersecting polygon with
  itself is *outside*.  Edges are half-open: an edge counts when ``y_a <= y < y_b`` (upward,
  point strictly left) or ``y_b <= y < y_a`` (downward, point strictly right), and points outside
  the vertices' bounding box are out.  Consequently points on the left/bottom edges of a simple
  polygon are usually in and points on the right/top edges out (the FlowUtils docstring's
  "edges inclusive" is not what the code does).  NaN is out.
* Ellipsoid: ``(x - mu) . inv(C) . (x - mu) <= d^2`` (boundary inclusive), computed in the
  same order as FlowUtils (``(t @ inv(C)) * t`` summed per row).  No complement.
* Boolean: and / or over references (each optionally complemented via ``use-as-complement``);
  ``not`` negates its single (possibly complemented) reference.  Then AND the parent.
* A child's membership is its own test AND its parent's membership; a quadrant's parent is its
  QuadrantGate's parent.
* Compensation is per *gate*: if any dimension of a gate names a matrix, every dimension of that
  gate reads the compensated events (only the matrix's detector columns change), even one marked
  "uncompensated".  Two different matrices in one gate are refused (FlowKit raises too).
  "FCS" uses ``sample_comp``; without one it means uncompensated (Gating-ML 2.0, as FlowKit).
  Dimension names resolve as $PnN, then $PnS, then FlowJo's "/"->"_" PnN, then a fluorochrome
  of the referenced matrix (its detector).
* A RatioDimension is computed by FlowKit's ``RatioTransform.apply`` from *uncompensated*
  ("raw") columns, whatever the dimension's compensation-ref says; its transformation-ref, if
  any, is then applied to the 1-D ratio.

Precision: FlowKit builds a Sample from an array via float32, so float32 events give exactly
FlowKit's answer.  Float64 events are also accepted (no rounding is done), which matches FlowKit
reading a file whose scaled values are float64 (e.g. log-amplified integer channels).
"""

from __future__ import annotations

import contextlib
import graphlib
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Union

import flowkit as fk
import numpy as np
import pandas as pd
from flowkit import gates as fk_gates
from flowkit.exceptions import QuadrantReferenceError

from mrdflow.errors import MrdflowError
from mrdflow.gating._transforms import apply_transform

__all__ = [
    "DEFAULT_CHUNK_SIZE",
    "Feature",
    "GateEngine",
    "GateEngineError",
    "GatePath",
    "GateResult",
    "flowkit_membership",
    "points_in_polygon",
]

#: A population's key: ("root", ancestor gate ids..., gate id), as the nodes of FlowKit's gate tree.
#: A quadrant's path runs through its QuadrantGate: ("root", "Quad1", "FL2P-FL4P").
GatePath = tuple[str, ...]
#: A gate given by id (must be unique in the strategy) or by path (with or without "root").
GateKey = Union[str, GatePath]
#: A spillover matrix as (detector $PnN labels, n x n array); row i = fluorochrome i's spill.
SpillMatrix = tuple[Sequence[str], np.ndarray]

DEFAULT_CHUNK_SIZE = 1_000_000
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
        if isinstance(dim, fk.RatioDimension):
            features.append(Feature(dim.ratio_ref, None, dim.transformation_ref, ratio=True))
        elif isinstance(dim, fk.QuadrantDivider):
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
    """2-D polygon with FlowUtils' point-in-polygon semantics (see module docstring)."""

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
        arrays = [~refs(path) if complement else refs(path) for path, complement in self.operands]
        if self.op == "and":
            return np.logical_and.reduce(arrays)
        if self.op == "or":
            return np.logical_or.reduce(arrays)
        return np.logical_not(arrays[0])  # "not": Gating-ML allows exactly one operand


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


#: What a population evaluates: called as test(values_of, n_rows, refs) -> bool array of n_rows,
#: where values_of(feature) gives the feature on the rows evaluated and refs(path) a population's
#: membership on the whole chunk (used by boolean gates, which always see the whole chunk).
_GateTest = Union[_RangeTest, _PolygonTest, _EllipsoidTest, _BooleanTest]

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


def _population_parent(strategy, ancestors: GatePath, sample_id) -> GatePath | None:
    """The population bounding a gate whose tree ancestors are ``ancestors``."""
    if ancestors == (ROOT,):
        return None
    try:
        parent_gate = strategy.get_gate(ancestors[-1], ancestors[:-1], sample_id=sample_id)
    except QuadrantReferenceError:
        return ancestors
    if isinstance(parent_gate, fk_gates.QuadrantGate):  # a Quadrant's own ancestors
        return _population_parent(strategy, ancestors[:-1], sample_id)
    return ancestors


def _compile(strategy, sample_id) -> list[_Population]:
    populations = []
    for gate_id, ancestors in strategy.get_gate_ids():
        ancestors = tuple(ancestors)
        path = ancestors + (gate_id,)
        try:
            gate = strategy.get_gate(gate_id, ancestors, sample_id=sample_id)
        except QuadrantReferenceError:
            qgate = strategy.get_gate(ancestors[-1], ancestors[:-1], sample_id=sample_id)
            populations.append(_quadrant_population(qgate, gate_id, path, strategy, sample_id))
            continue
        if isinstance(gate, fk_gates.QuadrantGate):
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
    if isinstance(gate, fk_gates.BooleanGate):
        operands = tuple(
            (tuple(ref["path"]) + (ref["ref"],), bool(ref.get("complement", False))) for ref in gate.gate_refs
        )
        if not operands:
            raise GateEngineError(f"BooleanGate {gate.gate_name!r} references no gates")
        return _BooleanTest(gate.type, operands)
    features = _gate_features(gate, gate.dimensions)
    if isinstance(gate, fk_gates.RectangleGate):
        bounds = tuple((getattr(d, "min", None), getattr(d, "max", None)) for d in gate.dimensions)
        return _RangeTest(features, bounds, bool(gate.use_complement))
    if isinstance(gate, fk_gates.PolygonGate):
        if len(features) != 2:
            raise GateEngineError(f"PolygonGate {gate.gate_name!r} has {len(features)} dimensions, not 2")
        vertices = tuple((float(v[0]), float(v[1])) for v in gate.vertices)
        return _PolygonTest(features, vertices, bool(gate.use_complement))
    if isinstance(gate, fk_gates.EllipsoidGate):
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


# ------------------------------------------------------------------------------------------------
# Binding a compiled plan to one events matrix (channel names, spillover)
# ------------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class _Compensation:
    """How to compensate a chunk: ``columns`` (event columns, matrix order) -> ``outputs``.

    ``spectral``: ordinary least squares on an M x N matrix (the first M detectors are replaced),
    else ``solve(matrix.T, x.T).T`` as ``flowutils.compensate.compensate``.
    """

    matrix: np.ndarray
    columns: tuple[int, ...]
    outputs: Mapping[int, int]  # event column -> column of the compensated block
    spectral: bool = False

    def apply(self, block: np.ndarray) -> np.ndarray:
        detectors = block[:, list(self.columns)].astype(np.float64)
        if self.spectral:
            return np.linalg.lstsq(self.matrix.T, detectors.T, rcond=-1)[0].T
        return np.linalg.solve(self.matrix.T, detectors.T).T


class _Binding:
    """A plan's features resolved against one events matrix's channels and spillover."""

    def __init__(self, strategy, features, pnn, pns, sample_comp: SpillMatrix | None):
        self.strategy = strategy
        self.pnn = list(pnn)
        lookups = [self.pnn, list(pns) if pns is not None else [], [p.replace("/", "_") for p in self.pnn]]
        self._lookups = [{label: i for i, label in reversed(list(enumerate(labels)))} for labels in lookups]
        self.compensations: dict[str, _Compensation | None] = {}
        self.columns: dict[Feature, int | tuple[int, int]] = {}
        self.sample_comp = sample_comp
        for feature in features:
            self._bind(feature)

    def _index(self, label: str) -> int | None:
        for lookup in self._lookups:
            if label in lookup:
                return lookup[label]
        return None

    def compensation(self, comp_ref: str | None) -> _Compensation | None:
        """The compensation for ``comp_ref`` (None: uncompensated), built once."""
        if comp_ref is None:
            return None
        if comp_ref not in self.compensations:
            self.compensations[comp_ref] = self._make_compensation(comp_ref)
        return self.compensations[comp_ref]

    def _make_compensation(self, comp_ref: str) -> _Compensation | None:
        if comp_ref == FCS_COMPENSATION:
            if self.sample_comp is None:
                return None  # Gating-ML 2.0: "FCS" without a spillover means uncompensated
            detectors, matrix = self.sample_comp
            matrix, spectral, outputs = np.asarray(matrix, dtype=np.float64), False, list(detectors)
        else:
            try:
                obj = self.strategy.comp_matrices[comp_ref]
            except KeyError:
                raise GateEngineError(f"compensation-ref {comp_ref!r} is not a matrix of the strategy") from None
            detectors = list(obj.detectors)
            matrix = np.asarray(obj.matrix, dtype=np.float64)
            spectral = isinstance(obj, fk.SpectralMatrix)
            outputs = list(obj.true_detectors) if spectral else detectors
        columns = []
        for det in detectors:
            if det not in self._lookups[0]:
                raise GateEngineError(f"compensation {comp_ref!r}: detector {det!r} is not a channel ({self.pnn})")
            columns.append(self._lookups[0][det])
        if len(set(columns)) != len(columns):
            raise GateEngineError(f"compensation {comp_ref!r} names a detector twice")
        if not spectral and matrix.shape != (len(columns), len(columns)):
            raise GateEngineError(f"compensation {comp_ref!r}: matrix {matrix.shape} for {len(columns)} detectors")
        out_map = {columns[detectors.index(d)]: i for i, d in enumerate(outputs)}
        return _Compensation(matrix, tuple(columns), out_map, spectral)

    def _bind(self, feature: Feature) -> None:
        if feature.xform_ref is not None and feature.xform_ref not in self.strategy.transformations:
            raise GateEngineError(f"transformation-ref {feature.xform_ref!r} is not a transform of the strategy")
        if feature.ratio:
            ratio = self.strategy.transformations.get(feature.source)
            if not isinstance(ratio, fk.transforms.RatioTransform):
                raise GateEngineError(f"ratio dimension {feature.source!r} is not a RatioTransform of the strategy")
            cols = []
            for label in ratio.dimensions:  # FlowKit resolves ratio channels by $PnN only
                if label not in self._lookups[0]:
                    raise GateEngineError(f"ratio {feature.source!r}: channel {label!r} not in {self.pnn}")
                cols.append(self._lookups[0][label])
            self.columns[feature] = (cols[0], cols[1])
            return
        self.compensation(feature.comp_ref)  # validates the matrix against the channels
        index = self._index(feature.source)
        if index is None and feature.comp_ref not in (None, FCS_COMPENSATION):
            matrix = self.strategy.comp_matrices[feature.comp_ref]
            fluorochromes = list(getattr(matrix, "fluorochromes", []) or [])
            if feature.source in fluorochromes:
                index = self._index(matrix.detectors[fluorochromes.index(feature.source)])
        if index is None:
            raise GateEngineError(f"dimension {feature.source!r} is not a channel of the events ({self.pnn})")
        self.columns[feature] = index


class _RawColumns:
    """The two raw float64 columns a ``RatioTransform.apply`` reads, posing as a flowkit.Sample."""

    def __init__(self, labels: Sequence[str], events: np.ndarray):
        self.pnn_labels = list(labels)
        self._events = events

    def get_events(self, source="raw"):
        return self._events


class _ChunkData:
    """Feature values of one row chunk, computed on first use and shared by all gates.

    A gate under a parent is evaluated only on the parent's events, so a feature is computed
    (compensated, transformed) only for the rows some gate asked for; rows computed once are
    reused.  Memory: the compensated detector block per compensation reference plus one float64
    column (and a row mask) per distinct feature and its untransformed base, of chunk length.
    """

    def __init__(self, block: np.ndarray, binding: _Binding):
        self.block = block
        self.binding = binding
        self.n = block.shape[0]
        self._compensated: dict[str, np.ndarray] = {}
        self._columns: dict[Feature, _FeatureColumn] = {}

    def values(self, feature: Feature, rows: np.ndarray | None = None) -> np.ndarray:
        """float64 values of ``feature`` (gate units) at chunk ``rows`` (sorted indices; None: all)."""
        column = self._columns.get(feature)
        if column is None:
            column = self._columns[feature] = _FeatureColumn(self.n)
        missing = column.missing(rows)
        if missing is not None:
            column.fill(missing, self._compute(feature, None if missing is _ALL_ROWS else missing))
        return column.values if rows is None else column.values[rows]

    def _compute(self, feature: Feature, rows: np.ndarray | None) -> np.ndarray:
        strategy = self.binding.strategy
        if feature.ratio:
            cols = list(self.binding.columns[feature])
            raw = (self.block[:, cols] if rows is None else self.block[np.ix_(rows, cols)]).astype(np.float64)
            ratio = strategy.transformations[feature.source]
            values = ratio.apply(_RawColumns(ratio.dimensions, raw))
            if feature.xform_ref is not None:
                values = strategy.transformations[feature.xform_ref].apply(values)
            return np.asarray(values, dtype=np.float64).reshape(-1)
        if feature.xform_ref is not None:
            base = self.values(feature.untransformed(), rows)
            # FlowKit hands transforms an (n, 1) float64 column
            column = np.ascontiguousarray(base).reshape(-1, 1)
            return apply_transform(strategy.transformations[feature.xform_ref], column).reshape(-1)
        index = self.binding.columns[feature]
        comp = self.binding.compensation(feature.comp_ref)
        if comp is not None and index in comp.outputs:
            if feature.comp_ref not in self._compensated:  # whole chunk: one solve per matrix
                self._compensated[feature.comp_ref] = comp.apply(self.block)
            compensated = self._compensated[feature.comp_ref][:, comp.outputs[index]]
            return compensated if rows is None else compensated[rows]
        return (self.block[:, index] if rows is None else self.block[rows, index]).astype(np.float64)


_ALL_ROWS = slice(None)


class _FeatureColumn:
    """A chunk-length float64 column and which of its rows are computed."""

    def __init__(self, n: int):
        self.n = n
        self.values: np.ndarray | None = None
        self._done: np.ndarray | None = None  # row mask while partly computed
        self._n_done = 0

    def missing(self, rows: np.ndarray | None) -> np.ndarray | slice | None:
        """Rows among ``rows`` (None: all) not computed yet: indices, ``_ALL_ROWS``, or None."""
        if self._n_done == self.n:
            return None
        if self._done is None:
            return _ALL_ROWS if rows is None or rows.size == self.n else rows
        todo = np.flatnonzero(~self._done) if rows is None else rows[~self._done[rows]]
        return todo if todo.size else None

    def fill(self, rows: np.ndarray | slice, values: np.ndarray) -> None:
        if rows is _ALL_ROWS:
            self.values = np.ascontiguousarray(values, dtype=np.float64)
            self._done, self._n_done = None, self.n
            return
        if self.values is None:
            self.values = np.empty(self.n, dtype=np.float64)
            self._done = np.zeros(self.n, dtype=bool)
        self.values[rows] = values
        self._done[rows] = True
        self._n_done += rows.size
        if self._n_done == self.n:
            self._done = None


# ------------------------------------------------------------------------------------------------
# Public API
# ------------------------------------------------------------------------------------------------


class GateResult:
    """Per-event membership of every population of a gating strategy for one events matrix.

    Keys are gate paths (:data:`GatePath`); :meth:`membership` also takes a bare gate id when it
    is unique.  Arrays are read-only booleans of length ``n_events`` (True = in the population,
    parents included).
    """

    def __init__(self, populations: Sequence[_Population], members: dict[GatePath, np.ndarray], n_events: int):
        self._populations = {p.path: p for p in populations}
        self._members = members
        self.n_events = n_events
        self._by_id: dict[str, list[GatePath]] = {}
        for p in populations:
            self._by_id.setdefault(p.gate_id, []).append(p.path)
        self._counts: dict[GatePath, int] = {}

    @property
    def paths(self) -> list[GatePath]:
        """Population paths in evaluation order (parents and referenced gates first)."""
        return list(self._populations)

    def resolve(self, gate: GateKey) -> GatePath:
        """The path of ``gate`` (an id unique in the strategy, or a path with or without "root")."""
        if isinstance(gate, str):
            paths = self._by_id.get(gate, [])
            if len(paths) == 1:
                return paths[0]
            if not paths:
                raise KeyError(f"no gate {gate!r}")
            raise KeyError(f"gate id {gate!r} is ambiguous, give one of the paths {paths}")
        path = tuple(gate)
        for candidate in (path, (ROOT,) + path):
            if candidate in self._populations:
                return candidate
        raise KeyError(f"no gate with path {path}")

    def membership(self, gate: GateKey) -> np.ndarray:
        """Boolean (n_events,) array: event i is in the population (read-only)."""
        return self._members[self.resolve(gate)]

    def count(self, gate: GateKey) -> int:
        """Number of events in the population."""
        path = self.resolve(gate)
        if path not in self._counts:
            self._counts[path] = int(np.count_nonzero(self._members[path]))
        return self._counts[path]

    def as_dict(self) -> dict[GatePath, np.ndarray]:
        """{gate path: membership}, the shape :func:`flowkit_membership` returns."""
        return dict(self._members)

    def report(self) -> pd.DataFrame:
        """One row per population, as FlowKit's ``GatingResults.report``.

        Columns: gate_path (tuple of tree ancestors, "root" first), gate_id, gate_type,
        quadrant_parent (the QuadrantGate id for quadrants, else None), parent (id of the
        population the percentage is relative to; "root" = all events), count,
        relative_percent (100 x count / parent count; 0 when the parent is empty),
        absolute_percent (100 x count / n_events).  Sorted by depth, then gate id.
        """
        rows = []
        for path, pop in self._populations.items():
            count = self.count(path)
            parent_count = self.n_events if pop.parent is None else self.count(pop.parent)
            rows.append(
                {
                    "gate_path": path[:-1],
                    "gate_id": pop.gate_id,
                    "gate_type": pop.gate_type,
                    "quadrant_parent": pop.quadrant_gate,
                    "parent": ROOT if pop.parent is None else pop.parent[-1],
                    "count": count,
                    "relative_percent": 100.0 * count / parent_count if parent_count else 0.0,
                    "absolute_percent": 100.0 * count / self.n_events if self.n_events else 0.0,
                }
            )
        frame = pd.DataFrame(rows, columns=[
            "gate_path", "gate_id", "gate_type", "quadrant_parent", "parent",
            "count", "relative_percent", "absolute_percent",
        ])
        frame["level"] = frame["gate_path"].map(len)
        return frame.sort_values(["level", "gate_id"], kind="stable").reset_index(drop=True)

    def __repr__(self) -> str:
        return f"GateResult({len(self._populations)} populations, {self.n_events} events)"


class GateEngine:
    """Evaluates a ``flowkit.GatingStrategy`` on event matrices, chunk by chunk.

    Build once per strategy (``GateEngine(strategy)`` or :meth:`from_gatingml`), then call
    :meth:`evaluate` per events matrix.  ``sample_id`` selects FlowKit custom sample gates.
    ``chunk_size`` (events per chunk) bounds the extra memory: roughly
    chunk_size x 8 bytes x (distinct features + compensated detectors) per chunk in flight.
    ``workers``: chunks evaluated at once, as tasks of dask's threaded scheduler (the work is
    numpy, which releases the GIL); chunks write disjoint rows, so results do not depend on it.
    """

    def __init__(self, strategy: fk.GatingStrategy, *, sample_id: str | None = None,
                 chunk_size: int = DEFAULT_CHUNK_SIZE, workers: int | None = None):
        if not isinstance(strategy, fk.GatingStrategy):
            raise TypeError(f"expected a flowkit.GatingStrategy, got {type(strategy).__name__}")
        if chunk_size < 1:
            raise ValueError("chunk_size must be >= 1")
        self.strategy = strategy
        self.chunk_size = int(chunk_size)
        self.workers = int(workers or available_cpus(4))
        self._populations = _compile(strategy, sample_id)
        features = set()
        for pop in self._populations:
            for feature in getattr(pop.test, "features", ()):
                features.add(feature)
                if feature.xform_ref is not None and not feature.ratio:
                    features.add(feature.untransformed())
        self.features: frozenset[Feature] = frozenset(features)

    @classmethod
    def from_gatingml(cls, path: str | os.PathLike, **kwargs) -> GateEngine:
        """An engine for the Gating-ML 2.0 document at ``path`` (parsed by FlowKit)."""
        return cls(fk.parse_gating_xml(os.fspath(path)), **kwargs)

    @property
    def paths(self) -> list[GatePath]:
        """Population paths in evaluation order."""
        return [p.path for p in self._populations]

    def evaluate(self, events: np.ndarray, pnn: Sequence[str], *, sample_comp: SpillMatrix | None = None,
                 pns: Sequence[str] | None = None, chunk_size: int | None = None) -> GateResult:
        """Gate ``events`` and return every population's membership.

        ``events``: (n_events, n_channels) array, float32 (or float64), of scaled values (FlowKit's
        "raw": $PnE/$PnG applied, not compensated, not transformed); not modified or copied whole.
        ``pnn``: the column names ($PnN); ``pns``: optional $PnS names for dimensions that use
        them.  ``sample_comp``: (detectors, spillover matrix) used where a dimension's
        compensation-ref is "FCS".  ``chunk_size`` overrides the engine's.
        """
        events = np.asarray(events)
        if events.ndim != 2 or events.shape[1] != len(pnn):
            raise GateEngineError(f"events of shape {events.shape} do not match {len(pnn)} channel names")
        if events.dtype.kind not in "fiu":
            raise GateEngineError(f"events must be numeric, not {events.dtype}")
        binding = _Binding(self.strategy, self.features, pnn, pns, sample_comp)
        n = events.shape[0]
        step = int(chunk_size or self.chunk_size)
        if step < 1:
            raise ValueError("chunk_size must be >= 1")
        members = {p.path: np.empty(n, dtype=bool) for p in self._populations}
        with _single_threaded_blas():
            self._run_chunks(events, binding, members, step)
        for arr in members.values():
            arr.flags.writeable = False
        return GateResult(self._populations, members, n)

    def _run_chunks(self, events, binding, members, step) -> None:
        n = events.shape[0]

        def run(start: int, stop: int) -> None:
            chunk = _ChunkData(events[start:stop], binding)

            def refs(path):
                return members[path][start:stop]

            for pop in self._populations:
                members[pop.path][start:stop] = _evaluate_population(pop, chunk, members, start, stop, refs)

        bounds = [(s, min(s + step, n)) for s in range(0, n, step)]
        if self.workers <= 1 or len(bounds) <= 1:
            for b in bounds:
                run(*b)
            return
        import dask

        dask.compute(*[dask.delayed(run, pure=False)(*b) for b in bounds], scheduler="threads",
                     num_workers=self.workers)

    def __repr__(self) -> str:
        return f"GateEngine({len(self._populations)} populations, {len(self.features)} features)"


def available_cpus(cap: int | None = None) -> int:
    """CPUs this process may use (its affinity mask: a SLURM or cgroup allocation, not the whole
    node), at most ``cap``; ``$MRDFLOW_THREADS`` overrides."""
    env = os.environ.get("MRDFLOW_THREADS", "").strip()
    if env.isdigit() and int(env) > 0:
        n = int(env)
    else:
        try:
            n = len(os.sched_getaffinity(0))
        except AttributeError:  # not Linux
            n = os.cpu_count() or 1
    return max(1, min(n, cap) if cap else n)


def _single_threaded_blas():
    """Limit BLAS to one thread while gating (when threadpoolctl, a scikit-learn dependency, is there).

    The engine's BLAS work is tall-skinny: (chunk x k) . (k x k) products for ellipsoids and
    k x k solves with chunk right-hand sides for compensation.  Threads do not help these, and on
    small machines OpenBLAS threading made them ~50x slower.  Each row's arithmetic is the same
    whatever the thread count, so results do not change.
    """
    global _BLAS_CONTROLLER
    if _BLAS_CONTROLLER is None:
        try:
            from threadpoolctl import ThreadpoolController
        except ImportError:  # pragma: no cover
            return contextlib.nullcontext()
        # Finding the loaded BLAS libraries takes ~3 ms; a streamed tube asks for the limit per
        # chunk and per column pass, so the libraries are looked up once (numpy's BLAS, the one
        # these products use, is loaded by then).
        _BLAS_CONTROLLER = ThreadpoolController()
    return _BLAS_CONTROLLER.limit(limits=1, user_api="blas")


_BLAS_CONTROLLER = None


def _evaluate_population(pop: _Population, chunk: _ChunkData, members, start: int, stop: int, refs) -> np.ndarray:
    """Membership of ``pop`` in rows start:stop; its test runs only on the parent's events."""
    n = stop - start
    parent = None if pop.parent is None else members[pop.parent][start:stop]
    if parent is None or isinstance(pop.test, _BooleanTest):
        inside = pop.test(chunk.values, n, refs)
        return inside if parent is None else inside & parent
    rows = np.flatnonzero(parent)
    if rows.size == n:
        return pop.test(chunk.values, n, refs)
    inside = np.zeros(n, dtype=bool)
    if rows.size:
        inside[rows] = pop.test(lambda feature: chunk.values(feature, rows), rows.size, refs)
    return inside


def flowkit_membership(strategy: fk.GatingStrategy, events: np.ndarray, pnn: Sequence[str],
                       sample_id: str = "s", *, sample_comp: SpillMatrix | None = None
                       ) -> dict[GatePath, np.ndarray]:
    """Reference answer: FlowKit's own ``Sample`` + ``gate_sample`` membership per gate path.

    Slow and memory-hungry by design (it is what :class:`GateEngine` replaces); for tests.
    ``sample_comp`` is stored as the Sample's $SPILLOVER (it must cover every fluorescence
    channel, as FlowKit requires for "FCS" compensation).
    """
    sample = fk.Sample(np.asarray(events), sample_id=sample_id, channel_labels=list(pnn))
    if sample_comp is not None:
        detectors, matrix = sample_comp
        matrix = np.asarray(matrix, dtype=np.float64)
        values = ",".join(repr(float(v)) for v in matrix.ravel())
        sample.metadata["spillover"] = f"{len(detectors)},{','.join(detectors)},{values}"
    results = strategy.gate_sample(sample)
    out = {}
    for gate_id, ancestors in strategy.get_gate_ids():
        ancestors = tuple(ancestors)
        try:
            gate = strategy.get_gate(gate_id, ancestors, sample_id=sample_id)
        except QuadrantReferenceError:
            out[ancestors + (gate_id,)] = np.asarray(results.get_gate_membership(gate_id, ancestors[:-1]))
            continue
        if isinstance(gate, fk_gates.QuadrantGate):
            continue
        out[ancestors + (gate_id,)] = np.asarray(results.get_gate_membership(gate_id, ancestors))
    return out

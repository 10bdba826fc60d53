"""Binding a compiled gating strategy to one events matrix (channel names, spillover) and computing
its features chunk by chunk: compensation once per matrix, each feature once per row, shared by
every gate of the chunk.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from mrdflow.gating._compile import FCS_COMPENSATION, Feature, GateEngineError, SpillMatrix
from mrdflow.gating._transforms import apply_transform


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
            spectral = type(obj).__name__ == "SpectralMatrix"  # a FlowKit strategy's (ours have none)
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
            if type(ratio).__name__ != "RatioTransform":  # FlowKit's (a parsed Gating-ML or FlowJo strategy)
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
        self._approx: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        self._approx_features: dict[Feature, tuple[np.ndarray, float, np.ndarray | None] | None] = {}

    def approx(self, feature: Feature) -> tuple[np.ndarray, float, np.ndarray | None] | None:
        """(values on every chunk row, error bound, NaN-or-infinite rows or None) of an
        untransformed channel feature, in the events' own dtype, contiguous, computed once per
        chunk: the channel itself (bound 0), or for a compensated one the detectors times the
        spillover's inverse in that dtype, every value within the bound of :meth:`values`' exact
        solve. None for features with no such shortcut (ratios, spectral unmixing, a chunk whose
        detectors hold a non-finite value)."""
        if feature in self._approx_features:
            return self._approx_features[feature]
        found = self._approx_feature(feature)
        if found is not None:
            found = (found[0], found[1], nonfinite_of(found[0]))
        self._approx_features[feature] = found
        return found

    def _approx_feature(self, feature: Feature) -> tuple[np.ndarray, float] | None:
        if feature.ratio or feature.xform_ref is not None:
            return None
        index = self.binding.columns[feature]
        comp = self.binding.compensation(feature.comp_ref)
        if comp is None or index not in comp.outputs:
            column = self.block[:, index]
            if column.dtype not in (np.float32, np.float64):
                column = column.astype(np.float64)
            return np.ascontiguousarray(column), 0.0
        if comp.spectral:
            return None
        if feature.comp_ref not in self._approx:
            self._approx[feature.comp_ref] = _approx_compensation(self.block, comp)
        values, errors = self._approx[feature.comp_ref]
        j = comp.outputs[index]
        if not np.isfinite(errors[j]):  # a non-finite detector value in the chunk: no usable bound
            return None
        return values[j], float(errors[j])

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
            if rows is not None and feature.comp_ref not in self._compensated and rows.size * 8 <= self.n:
                # a few rows (a rounding band, a polygon's box): solve just those
                return comp.apply(self.block[rows])[:, comp.outputs[index]]
            if feature.comp_ref not in self._compensated:  # whole chunk: one solve per matrix
                self._compensated[feature.comp_ref] = comp.apply(self.block)
            compensated = self._compensated[feature.comp_ref][:, comp.outputs[index]]
            return compensated if rows is None else compensated[rows]
        return (self.block[:, index] if rows is None else self.block[rows, index]).astype(np.float64)


_ALL_ROWS = slice(None)


def nonfinite_of(x: np.ndarray) -> np.ndarray | None:
    """The NaN or infinite rows of 1-D ``x``, or None when there are none (screened by its maximum
    and minimum, which NaN and infinities reach)."""
    if x.size == 0:
        return None
    with np.errstate(invalid="ignore"):
        if np.isfinite(x.max()) and np.isfinite(x.min()):
            return None
    return ~np.isfinite(x)

#: Error bound of :func:`_approx_compensation`, in units of the dtype's epsilon times the sum of
#: |detector value x inverse coefficient|: the inverse's rounding (1), an 8-to-32-term dot product
#: in any order, with or without FMA (<= n); x 4 margin.
_APPROX_ULPS = 4 * 34
#: The exact solve's own distance from the true value, in float64 epsilons times the matrix's
#: condition number (LU with partial pivoting on a small matrix; generous).
_SOLVE_ULPS = 64
_EPS64 = float(np.finfo(np.float64).eps)


def _approx_compensation(block: np.ndarray, comp: _Compensation) -> tuple[np.ndarray, np.ndarray]:
    """(compensated detectors of ``block`` (detectors x events) as a matrix product with the
    inverse spillover in the block's dtype, per-detector bound on its difference from
    ``comp.apply``).

    Why: ``comp.apply`` (LAPACK's solve, FlowKit's arithmetic) in float64 is ~0.2 s per 10^6
    events; the product in float32 is a few ms. It is used only to decide which events are
    clearly inside or outside a mapped bound; events within the bound's error are solved exactly.
    The bound is global per chunk (largest |value| per detector), so one saturated event widens
    the band for the chunk; with a non-finite value the bound is not finite and the chunk's
    features are computed exactly instead (:meth:`_ChunkData.approx` gives None).
    """
    dtype = block.dtype if block.dtype in (np.float32, np.float64) else np.dtype(np.float64)
    if block.dtype != dtype:
        block = block.astype(dtype)
    inverse = np.linalg.inv(comp.matrix)
    condition = max(1.0, float(np.linalg.cond(comp.matrix)))  # the exact solve's error grows with it
    # The product over the whole block (other channels' rows of the weights zero) spares a copy
    # of the detector columns; the zeros add nothing to any sum.
    weights = np.zeros((block.shape[1], inverse.shape[1]), dtype)
    weights[list(comp.columns)] = inverse
    with np.errstate(invalid="ignore", over="ignore"):  # non-finite rows go to the exact path
        values = weights.T @ block.T  # detectors x events: each compensated channel contiguous
    cols = list(comp.columns)
    # per detector column (a strided 1-D reduction each: ~5x faster than block.max(axis=0)); a NaN
    # or infinity makes the bound NaN or infinite (see _ChunkData.approx)
    largest = np.array([max(float(block[:, j].max()), -float(block[:, j].min())) if block.shape[0] else 0.0
                        for j in cols])
    terms = max(block.shape[1], 8)
    per_unit = (_APPROX_ULPS * terms / 8) * float(np.finfo(dtype).eps) + condition * _SOLVE_ULPS * _EPS64
    errors = per_unit * (largest @ np.abs(inverse))
    return values, errors


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


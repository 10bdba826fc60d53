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
* tests a rectangle's bounds on a monotonic transform against the untransformed values, each
  bound mapped back through the transform's inverse once, with an exact band at the rounding
  (:mod:`mrdflow.gating._rawbounds`), so a 10^7-event tube costs comparisons, not logicles;
* upcasts only the needed columns to float64 and applies FlowKit's own transform objects
  (``transform.apply``) and FlowKit's compensation arithmetic (``solve(spill.T, x.T).T``), so
  the numbers a gate tests are bit-for-bit the ones FlowKit tests;
* evaluates the gate geometry itself, vectorised, reproducing FlowKit/FlowUtils exactly.

The strategy is compiled into gate tests and populations in :mod:`mrdflow.gating._compile`, bound
to one events matrix's channels and spillover (and its features computed per chunk) in
:mod:`mrdflow.gating._binding`; this module runs them and holds the results.

FlowKit semantics reproduced (FlowKit 1.3.2 / FlowUtils 1.x), pinned by tests/gating/test_gates.py
----------------------------------------------------------------------------------------------------
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
import os
from collections.abc import Sequence

import numpy as np

from mrdflow.gating._binding import _Binding, _ChunkData
from mrdflow.gating._compile import (
    ROOT,
    Feature,
    GateEngineError,
    GateKey,
    GatePath,
    SpillMatrix,
    _BooleanTest,
    _compile,
    _Population,
)
from mrdflow.gating._rawbounds import raw_space_populations

__all__ = [
    "DEFAULT_CHUNK_SIZE",
    "GateEngine",
    "GateResult",
    "available_cpus",
    "run_threaded",
]

DEFAULT_CHUNK_SIZE = 1_000_000


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
        """{gate path: membership}, the shape of FlowKit's own answer (``flowkit_membership`` in the tests)."""
        return dict(self._members)

    def report(self):
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
        import pandas as pd  # only for this table, like FlowKit's report

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
    ``raw_bounds``: test rectangle bounds (and polygon bounding boxes) of logicle, asinh and
    linear dimensions on the untransformed values, bounds mapped back once
    (:mod:`mrdflow.gating._rawbounds`): identical memberships, events transformed only where a
    polygon or a bound's rounding band needs them. False: every dimension transformed, as FlowKit.
    """

    def __init__(self, strategy, *, sample_id: str | None = None,
                 chunk_size: int = DEFAULT_CHUNK_SIZE, workers: int | None = None, raw_bounds: bool = True):
        if not (hasattr(strategy, "get_gate_ids") and hasattr(strategy, "get_gate")):
            raise TypeError(f"expected a flowkit.GatingStrategy or a mrdflow Strategy, got {type(strategy).__name__}")
        if chunk_size < 1:
            raise ValueError("chunk_size must be >= 1")
        self.strategy = strategy
        self.chunk_size = int(chunk_size)
        self.workers = int(workers or available_cpus(4))
        self._populations = _compile(strategy, sample_id)
        if raw_bounds:
            self._populations = raw_space_populations(self._populations, strategy)
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
        import flowkit as fk

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
        run_threaded(run, bounds, self.workers)

    def __repr__(self) -> str:
        return f"GateEngine({len(self._populations)} populations, {len(self.features)} features)"


def run_threaded(fn, calls: Sequence[tuple], workers: int) -> None:
    """``fn(*args)`` for each of ``calls``, ``workers`` at a time, as tasks of dask's threaded
    scheduler (numpy work, which releases the GIL). Its ``get`` is called directly:
    ``dask.compute`` first looks for a dask.distributed client, and importing dask.distributed to
    look costs ~0.3 s (measured)."""
    from dask.threaded import get

    graph = {("mrdflow-task", i): (fn, *args) for i, args in enumerate(calls)}
    get(graph, list(graph), num_workers=int(workers))


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


class _RowValues:
    """What a gate test reads: feature values on the rows of a chunk it is evaluated on (None:
    all), called as ``values(feature)`` or ``values(feature, positions)`` (among those rows), and
    :meth:`approx` for the raw-space tests (:mod:`mrdflow.gating._rawbounds`)."""

    __slots__ = ("chunk", "rows")

    def __init__(self, chunk: _ChunkData, rows: np.ndarray | None):
        self.chunk = chunk
        self.rows = rows

    def __call__(self, feature, sub: np.ndarray | None = None) -> np.ndarray:
        rows = self.rows if sub is None else (sub if self.rows is None else self.rows[sub])
        return self.chunk.values(feature, rows)

    def approx(self, feature):
        """(values, error bound, non-finite rows or None) of an untransformed feature on these
        rows, or None (:meth:`_ChunkData.approx`)."""
        found = self.chunk.approx(feature)
        if found is None or self.rows is None:
            return found
        values, error, bad = found
        return values[self.rows], error, (None if bad is None else bad[self.rows])


def _evaluate_population(pop: _Population, chunk: _ChunkData, members, start: int, stop: int, refs) -> np.ndarray:
    """Membership of ``pop`` in rows start:stop; its test runs only on the parent's events."""
    n = stop - start
    parent = None if pop.parent is None else members[pop.parent][start:stop]
    if parent is None or isinstance(pop.test, _BooleanTest):
        inside = pop.test(_RowValues(chunk, None), n, refs)
        return inside if parent is None else inside & parent
    if getattr(pop.test, "whole_chunk", False):  # comparisons: cheaper on every row than gathering the parent's
        return pop.test(_RowValues(chunk, None), n, refs) & parent
    rows = np.flatnonzero(parent)
    if rows.size == n:
        return pop.test(_RowValues(chunk, None), n, refs)
    inside = np.zeros(n, dtype=bool)
    if rows.size:
        inside[rows] = pop.test(_RowValues(chunk, rows), rows.size, refs)
    return inside

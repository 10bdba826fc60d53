"""Data-driven gating of one tube: a Gating-ML template placed on the sample's own data.

A panel's gating template is a FlowKit ``GatingStrategy`` kept as Gating-ML 2.0 in
``resources/gating/<panel>.xml`` (it opens in FlowKit and Gating-ML tools). Its dimensions name
panel *markers* (``CD38``, ``FSC-A``) rather than detectors; its transforms are ``logicle`` (for
fluorescence, compensated with the file's spillover: compensation-ref ``FCS``) and ``scatter``
(linear). Its coordinates are the defaults.

Beside it, ``resources/gating/<panel>.yaml`` says how each gate is placed per sample (openCyto
style): a threshold at the density valley inside a search window, a tail above the negative
population, an FMO-derived threshold, the time/flow-rate QC, the FSC-A/FSC-H singlet wedge; or
``fixed`` (template coordinates). Windows bound every data-driven threshold, so a sample lacking a
population gets a gate at a plausible place that stays (nearly) empty instead of a gate pulled onto
noise.

:func:`gate_tube` returns the per-sample ``GatingStrategy`` (dimensions renamed to the file's
``$PnN``, config transforms) and the exact memberships from :class:`mrdflow.gating.GateEngine`, so
re-applying the exported ``gates.xml`` with FlowKit gives the same counts.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import flowkit as fk
import numpy as np
import yaml

from mrdflow.errors import MrdflowError
from mrdflow.gating._density import density, threshold_valley
from mrdflow.gating._engine import GateEngine, GateResult, available_cpus, points_in_polygon
from mrdflow.gating._engine import _single_threaded_blas as single_threaded_blas
from mrdflow.gating._qc import QCSettings, singlet_gate, time_qc
from mrdflow.gating._transforms import Compensation, apply_transform, make_transform
from mrdflow.io import FCSData
from mrdflow.panels import ResolvedPanel

__all__ = [
    "GatingError",
    "GatingTemplate",
    "GateStep",
    "TubeGating",
    "TubeView",
    "KeptEvents",
    "StreamedGating",
    "gate_tube",
    "gate_tube_streamed",
    "load_template",
    "template_from_workspace",
]

FL_XFORM = "logicle"
SCATTER_XFORM = "scatter"
ROOT = "root"


class GatingError(MrdflowError):
    """A gating template or rule is invalid, or a tube cannot be gated (names file/gate/cause)."""


# ---------------------------------------------------------------------------------------------
# Template
# ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class BoundRule:
    """How one bound (``<dimension>.min`` or ``.max``) of a rectangle gate is placed.

    method: ``valley`` (deepest density minimum inside ``window``), ``tail`` (mode of the
    population below + ``k`` robust SDs of its lower half, clipped to ``window``), ``gmm`` (two
    touching populations: equal posterior of a 2-component Gaussian mixture), ``fmo`` (the
    ``quantile`` of the FMO tube's events in the same gate, clipped to ``window``; falls back to
    ``fallback`` when the sample has no FMO), ``fixed`` (template value). ``given``: restrict the
    events used for the density to ranges on other dimensions, e.g. ``{CD138: [0.35, null]}``.
    ``population``: use that gate's events instead of the parent's. ``floor`` (valley and tail
    only): a bound rule placed first, typically a ``tail`` on an internal negative population
    (``{method: tail, population: Tcells}``); the search window's lower end is raised to its value
    (kept below the window's upper end), so the threshold never lands inside that negative.
    """

    method: str
    window: tuple[float, float] | None = None
    k: float = 4.0
    quantile: float = 0.995
    given: Mapping[str, tuple[float | None, float | None]] = field(default_factory=dict)
    population: str | None = None
    fallback: BoundRule | None = None
    floor: BoundRule | None = None


@dataclass(frozen=True)
class GateRule:
    """Placement of one template gate: ``method`` is ``bounds`` (rectangle, per-bound rules),
    ``time_qc``, ``singlets`` or ``fixed``."""

    gate_id: str
    method: str
    bounds: Mapping[str, BoundRule] = field(default_factory=dict)


@dataclass(frozen=True)
class GatingTemplate:
    """A panel's template: the FlowKit strategy (marker-named dimensions) and placement rules.

    ``static``: the strategy is applied as drawn (a FlowJo workspace: dimensions name the file's
    channels and carry FlowJo's own transforms), nothing is placed from the data.
    """

    panel: str
    strategy: fk.GatingStrategy
    rules: Mapping[str, GateRule]
    source: str
    static: bool = False

    def gate_order(self) -> list[tuple[str, tuple[str, ...]]]:
        """(gate id, parent path) in an order where parents and boolean references come first."""
        ids = self.strategy.get_gate_ids()
        done: set[str] = set()
        out: list[tuple[str, tuple[str, ...]]] = []
        pending = list(ids)
        while pending:
            progressed = False
            for gid, path in list(pending):
                gate = self.strategy.get_gate(gid, gate_path=path)
                deps = set(path[1:])
                if isinstance(gate, fk.gates.BooleanGate):
                    deps |= {r["ref"] for r in gate.gate_refs}
                if gid in self.rules:  # gates whose events a bound rule uses (population:)
                    deps |= _rule_populations(self.rules[gid])
                if deps <= done:
                    out.append((gid, path))
                    done.add(gid)
                    pending.remove((gid, path))
                    progressed = True
            if not progressed:
                raise GatingError(f"{self.source}: gate references form a cycle or name unknown gates: {pending}")
        return out


def _rule_populations(rule: GateRule) -> set[str]:
    """Gate ids named by ``population`` in a gate's bound rules (and their fallback/floor)."""
    out: set[str] = set()
    todo = list(rule.bounds.values())
    while todo:
        br = todo.pop()
        if br.population:
            out.add(br.population)
        todo += [b for b in (br.fallback, br.floor) if b is not None]
    return out


def _bound_rule(spec: Mapping, where: str) -> BoundRule:
    known = {"method", "window", "k", "quantile", "given", "population", "fallback", "floor"}
    unknown = set(spec) - known
    if unknown:
        raise GatingError(f"{where}: unknown field(s) {sorted(unknown)}")
    method = spec.get("method")
    if method not in ("valley", "tail", "gmm", "fmo", "fixed"):
        raise GatingError(f"{where}: method must be valley, tail, gmm, fmo or fixed (got {method!r})")
    window = spec.get("window")
    if window is not None:
        if not (isinstance(window, list) and len(window) == 2 and window[0] < window[1]):
            raise GatingError(f"{where}: window must be [low, high] with low < high")
        window = (float(window[0]), float(window[1]))
    elif method in ("valley", "tail", "gmm", "fmo"):
        raise GatingError(f"{where}: method {method!r} needs a window")
    given = {}
    for dim, rng in (spec.get("given") or {}).items():
        if not (isinstance(rng, list) and len(rng) == 2):
            raise GatingError(f"{where}: given.{dim} must be [low, high] (null for open)")
        given[str(dim)] = (None if rng[0] is None else float(rng[0]), None if rng[1] is None else float(rng[1]))
    fb = spec.get("fallback")
    fl = spec.get("floor")
    if fl and method not in ("valley", "tail"):
        raise GatingError(f"{where}: floor applies to valley and tail bounds only (method {method!r})")
    return BoundRule(
        method=method,
        window=window,
        k=float(spec.get("k", 4.0)),
        quantile=float(spec.get("quantile", 0.995)),
        given=given,
        population=spec.get("population"),
        fallback=_bound_rule(fb, f"{where}.fallback") if fb else None,
        floor=_bound_rule(fl, f"{where}.floor") if fl else None,
    )


def load_template(gating_dir: str | Path, panel: str) -> GatingTemplate:
    """Load ``<gating_dir>/<panel>.xml`` (Gating-ML) and ``<panel>.yaml`` (placement rules)."""
    xml = Path(gating_dir) / f"{panel}.xml"
    rules_path = Path(gating_dir) / f"{panel}.yaml"
    if not xml.is_file():
        raise GatingError(f"{xml}: gating template not found for panel {panel!r}")
    try:
        strategy = fk.parse_gating_xml(str(xml))
    except Exception as e:  # FlowKit raises several types for malformed XML
        raise GatingError(f"{xml}: not a valid Gating-ML 2.0 document ({type(e).__name__}: {e})") from None
    rules = _load_rules(rules_path, strategy) if rules_path.is_file() else {}
    return GatingTemplate(panel, strategy, rules, str(xml))


def _load_rules(path: Path, strategy: fk.GatingStrategy) -> dict[str, GateRule]:
    try:
        doc = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise GatingError(f"{path}: not valid YAML ({e})") from None
    gates = doc.get("gates") or {}
    ids = {gid for gid, _ in strategy.get_gate_ids()}
    rules: dict[str, GateRule] = {}
    for gid, spec in gates.items():
        where = f"{path}: gates.{gid}"
        if gid not in ids:
            raise GatingError(f"{where}: no gate {gid!r} in the template (gates: {sorted(ids)})")
        spec = dict(spec or {})
        method = spec.pop("method", "bounds")
        if method in ("time_qc", "singlets", "fixed"):
            if spec:
                raise GatingError(f"{where}: method {method!r} takes no other fields (got {sorted(spec)})")
            rules[gid] = GateRule(gid, method)
            continue
        if method != "bounds":
            raise GatingError(f"{where}: method must be bounds, time_qc, singlets or fixed (got {method!r})")
        bounds = {}
        for key, b in spec.items():
            if not (key.endswith(".min") or key.endswith(".max")):
                raise GatingError(f"{where}: {key!r} is not '<dimension>.min' or '<dimension>.max'")
            bounds[key] = _bound_rule(b or {}, f"{where}.{key}")
        rules[gid] = GateRule(gid, "bounds", bounds)
    return rules


def template_from_workspace(wsp_path: str | Path, group: str, panel: str, fcs_path: str | Path,
                            sample_id: str | None = None) -> GatingTemplate:
    """A static template from a FlowJo 10 workspace's sample group, imported by FlowKit.

    FlowKit binds a workspace's gates to a loaded sample, so ``fcs_path`` names the (template)
    FCS file the group's gates were drawn on; ``sample_id`` picks one sample of the group (default:
    the first). Gates keep FlowJo's channel names, transforms and compensation and are applied as
    drawn (``static``).
    """
    import warnings

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            sample = fk.Sample(str(fcs_path), ignore_offset_error=True)
            ws = fk.Workspace(str(wsp_path), fcs_samples=[sample])
    except Exception as e:  # FlowKit raises several types for unreadable workspaces
        raise GatingError(f"{wsp_path}: cannot read FlowJo workspace ({type(e).__name__}: {e})") from None
    groups = ws.get_sample_groups()
    if group not in groups:
        raise GatingError(f"{wsp_path}: no sample group {group!r} (groups: {groups})")
    ids = ws.get_sample_ids(group)
    if not ids:
        raise GatingError(f"{wsp_path}: sample group {group!r} has no sample loaded from {fcs_path}")
    sid = sample_id or ids[0]
    if sid not in ids:
        raise GatingError(f"{wsp_path}: sample {sid!r} is not in group {group!r} ({ids})")
    strategy = ws.get_gating_strategy(sid)
    return GatingTemplate(panel, strategy, {}, f"{wsp_path}#{group}", static=True)


# ---------------------------------------------------------------------------------------------
# The tube's data in gate coordinates
# ---------------------------------------------------------------------------------------------

class _Released:
    """What remains of a released tube's FCSData: its header, not its events."""

    def __init__(self, fcs: FCSData):
        self.header = fcs.header

    def __getattr__(self, name):
        if name in ("events", "channel_values"):
            raise GatingError(f"{self.header.path}: events were released after gating")
        return getattr(self.header, name)


class TubeView:
    """One tube's events for gating: scaled float32 events plus per-dimension gate coordinates.

    ``raw``: events × channels, float32, $PnE/$PnG applied (FlowKit's "raw"). ``values(dim)``
    returns a dimension in its template coordinates: fluorescence markers compensated then
    logicle-transformed, scatter linear-scaled, Time as stored × $TIMESTEP. Columns are computed
    once and cached (float32, one column each).
    """

    CHUNK = 1 << 18  # events per chunk when computing columns

    def __init__(self, fcs: FCSData, resolved: ResolvedPanel, compensation: Compensation | None,
                 transforms: Mapping[str, Mapping], *, name: str = "", workers: int | None = None):
        self.fcs = fcs
        self.name = name or str(fcs.path)
        self.raw = fcs.events
        self.resolved = resolved
        self.compensation = compensation
        self.transform_specs = dict(transforms)
        self._fl = make_transform(transforms["fluorescence"])
        self._sc = make_transform(transforms["scatter"])
        self._cache: dict[str, np.ndarray] = {}
        fl = [m.name for m in resolved.panel.markers]
        self.fluorescence = fl
        self.workers = int(workers or available_cpus(4))

    @property
    def n(self) -> int:
        return int(self.raw.shape[0])

    def pnn(self, dim: str) -> str:
        if dim not in self.resolved.index:
            raise GatingError(f"{self.name}: template dimension {dim!r} is not a marker of panel {self.resolved.panel.name!r}")
        return self.resolved.pnn[dim]

    def kind(self, dim: str) -> str:
        if dim == "Time":
            return "time"
        return "fluorescence" if dim in self.fluorescence else "scatter"

    def _column_index(self, dim: str) -> int:
        if dim not in self.resolved.index:
            raise GatingError(f"{self.name}: template dimension {dim!r} is not a marker of panel {self.resolved.panel.name!r}")
        return self.resolved.index[dim]

    def prefetch(self, dims: Sequence[str], workers: int | None = None) -> None:
        """Compute the gate-unit columns of ``dims`` now, in one pass over the events.

        Row chunks of :attr:`CHUNK` events are compensated (detectors × inverse spillover, in
        float64) and transformed, and written into the float32 columns: no compensated copy of
        the whole matrix is kept. Chunks run as tasks of dask's threaded scheduler (``workers`` at
        once; the work is numpy, which releases the GIL), BLAS on one thread (these tall-skinny
        products only slow down with threads on small nodes). Later ``values(dim)`` calls hit
        the cache.
        """
        todo = [d for d in dict.fromkeys(dims) if d not in self._cache]
        index = {d: self._column_index(d) for d in todo}
        for d in [d for d in todo if self.kind(d) == "time"]:
            self._cache[d] = self.raw[:, index[d]]  # Time is used as scaled (a view, no copy)
            todo.remove(d)
        if not todo:
            return
        comp = self.compensation
        pnn = self.fcs.pnn
        det_cols = [pnn.index(x) for x in comp.detectors] if comp is not None else []
        inv = np.asarray(comp.inverse, np.float64) if comp is not None else None
        compensated = {d: comp.detectors.index(pnn[index[d]]) for d in todo
                       if comp is not None and self.kind(d) == "fluorescence" and pnn[index[d]] in comp.detectors}
        out = {d: np.empty(self.n, np.float32) for d in todo}

        def run(start: int, stop: int) -> None:
            block = self.raw[start:stop]
            # float64 product: a row's result must not depend on which rows share its block
            # (float32 GEMM kernels round differently at block edges; streamed tubes compute
            # their kept events on row subsets)
            comp_block = block[:, det_cols].astype(np.float64) @ inv if compensated else None
            for d in todo:
                src = comp_block[:, compensated[d]] if d in compensated else block[:, index[d]]
                tf = self._fl if self.kind(d) == "fluorescence" else self._sc
                out[d][start:stop] = apply_transform(tf, src, out_dtype=np.float32)

        bounds = [(s, min(s + self.CHUNK, self.n)) for s in range(0, self.n, self.CHUNK)]
        workers = int(workers or self.workers)
        with single_threaded_blas():
            if workers <= 1 or len(bounds) <= 1:
                for b in bounds:
                    run(*b)
            else:
                import dask

                dask.compute(*[dask.delayed(run, pure=False)(*b) for b in bounds], scheduler="threads",
                             num_workers=workers)
        self._cache.update(out)

    def values(self, dim: str) -> np.ndarray:
        """``dim`` in gate units (float32, cached): fluorescence compensated then transformed,
        scatter scaled, Time as stored × $TIMESTEP."""
        if dim not in self._cache:
            self.prefetch([dim])
        return self._cache[dim]

    def drop_cache(self) -> None:
        self._cache.clear()

    def release(self) -> None:
        """Free the events and every derived column (the gating result keeps its masks); the
        view cannot give values afterwards."""
        self.drop_cache()
        self.raw = None
        self.fcs = _Released(self.fcs)


# ---------------------------------------------------------------------------------------------
# Placement
# ---------------------------------------------------------------------------------------------

@dataclass
class GateStep:
    """One placed gate, for plots and the gating table.

    dims: template dimension names (1 or 2). kind: rect | polygon | boolean. bounds: for rect,
    {dim: (min, max)} in gate coordinates (None = open); vertices: for polygon. how: what placed
    each bound ("valley 0.62 in [0.55, 0.80]"). parent: parent gate id (None at the root).
    """

    gate_id: str
    parent: str | None
    kind: str
    dims: tuple[str, ...]
    bounds: dict[str, tuple[float | None, float | None]] = field(default_factory=dict)
    vertices: list[tuple[float, float]] = field(default_factory=list)
    how: dict[str, str] = field(default_factory=dict)
    count: int = 0
    parent_count: int = 0
    plot_dims: tuple[str, ...] = ()
    static: bool = False  # applied as drawn (FlowJo workspace): coordinates are not ours to plot


@dataclass
class KeptEvents:
    """Every event of one population: ``values`` (events × markers, float32, gate units) and
    ``flags`` (gate id -> bool per event: the event is in that gate too)."""

    gate_id: str
    markers: list[str]
    values: np.ndarray
    flags: dict[str, np.ndarray]


def nonfinite_rows(events: np.ndarray) -> int:
    """Rows with a NaN or infinite value in any column, counted a column at a time."""
    bad = np.zeros(events.shape[0], bool)
    for j in range(events.shape[1]):
        bad |= ~np.isfinite(events[:, j])
    return int(bad.sum())


@dataclass
class TubeGating:
    """The result of gating one tube."""

    strategy: fk.GatingStrategy
    result: GateResult
    steps: list[GateStep]
    view: TubeView
    qc: dict[str, Any]

    def mask(self, gate_id: str) -> np.ndarray:
        return self.result.membership(gate_id)

    def count(self, gate_id: str) -> int:
        return int(self.result.count(gate_id))

    @property
    def n_events(self) -> int:
        """Events of the tube (every one was gated)."""
        return int(self.result.n_events)

    def nonfinite_events(self) -> int:
        """Events with a NaN or infinite value in any channel (every gate leaves them out)."""
        if self.view.raw is None:
            raise GatingError(f"{self.view.name}: events were released after gating")
        return nonfinite_rows(self.view.raw)

    def events_in(self, gate_id: str, flags: Sequence[str] = ()) -> KeptEvents:
        """The gate's events: every panel marker in gate units (float32) and, per flag gate,
        which of them it holds."""
        m = self.mask(gate_id)
        markers = [mk.name for mk in self.view.resolved.panel.markers]
        values = (np.column_stack([self.view.values(mk)[m] for mk in markers]).astype(np.float32, copy=False)
                  if m.any() else np.zeros((0, len(markers)), np.float32))
        return KeptEvents(gate_id, markers, values, {f: np.asarray(self.mask(f))[m] for f in flags})

    def table(self) -> list[dict]:
        """Rows of gating.tsv: population, parent, count, pct_parent, pct_of_total."""
        rows = []
        n = self.n_events
        for step in self.steps:
            c = self.count(step.gate_id)
            p = self.count(step.parent) if step.parent else n
            rows.append({
                "population": step.gate_id,
                "parent": step.parent or "all events",
                "count": c,
                "pct_parent": 100.0 * c / p if p else float("nan"),
                "pct_of_total": 100.0 * c / n if n else float("nan"),
            })
        return rows

    def gatingml(self) -> bytes:
        buf = io.BytesIO()
        fk.export_gatingml(self.strategy, buf)
        return buf.getvalue()


def _robust_tail(values: np.ndarray, window: tuple[float, float], k: float) -> tuple[float, str]:
    """Mode of the main population + k robust SDs of its lower half, clipped to the window."""
    v = values[np.isfinite(values)]
    if v.size < 20:
        return window[0] + 0.5 * (window[1] - window[0]), "tail: too few events, window centre"
    lo, hi = np.percentile(v, [0.1, 99.9])
    d = density(v, float(lo), float(hi) + 1e-6)
    mode = float(d.x[np.argmax(d.y)])
    left = v[v <= mode]
    sd = float(np.sqrt(np.mean((left - mode) ** 2))) if left.size > 10 else float(np.std(v))
    t = mode + k * sd
    clipped = min(max(t, window[0]), window[1])
    note = f"tail: mode {mode:.3f} + {k:g}×SD {sd:.3f} = {t:.3f}"
    if clipped != t:
        note += f", clipped to window [{window[0]:.2f}, {window[1]:.2f}]"
    return clipped, note


def _gmm_threshold(values: np.ndarray, window: tuple[float, float], *, seed: int = 0,
                   max_events: int = 200_000) -> tuple[float, str]:
    """Where two touching populations meet: a 2-component Gaussian mixture (scikit-learn) on the
    events, threshold where the posterior of the two components is equal, inside the window.

    Used where a valley is too shallow to find (populations overlap). Falls back to the window's
    density minimum when the mixture does not put one component on each side of the window.
    """
    from sklearn.mixture import GaussianMixture

    v = values[np.isfinite(values)].astype(np.float64)
    if v.size < 50:
        t, kind = threshold_valley(v, window[0] - 0.05, window[1] + 0.05, search=window)
        return t, f"gmm: too few events ({v.size}); {kind} {t:.3f}"
    if v.size > max_events:  # a seeded subsample: the fit needs the shapes, not every event
        v = np.random.default_rng(seed).choice(v, max_events, replace=False)
    gm = GaussianMixture(n_components=2, random_state=seed, n_init=2).fit(v[:, None])
    means = gm.means_.ravel()
    lo_c, hi_c = int(np.argmin(means)), int(np.argmax(means))
    grid = np.linspace(window[0], window[1], 401)
    post = gm.predict_proba(grid[:, None])
    diff = post[:, hi_c] - post[:, lo_c]
    cross = np.flatnonzero(np.diff(np.sign(diff)) > 0)
    if means[lo_c] >= window[1] or means[hi_c] <= window[0] or cross.size == 0:
        t, kind = threshold_valley(v, float(v.min()) - 0.05, float(v.max()) + 0.05, search=window)
        return t, f"gmm: components {means[lo_c]:.2f}/{means[hi_c]:.2f} not either side of the window; {kind} {t:.3f}"
    i = int(cross[0])
    t = float(grid[i] + (grid[i + 1] - grid[i]) * (-diff[i]) / (diff[i + 1] - diff[i]))
    return t, (f"gmm: equal posterior {t:.3f} between components at {means[lo_c]:.2f} "
               f"({gm.weights_[lo_c]:.0%}) and {means[hi_c]:.2f} ({gm.weights_[hi_c]:.0%})")


class _Placer:
    """Walks a template and builds the per-sample strategy; masks here are for placement only."""

    def __init__(self, template: GatingTemplate, view: TubeView, qc_settings: QCSettings,
                 fmo: TubeGating | None = None, events: _AllEvents | None = None):
        self.t = template
        self.view = view
        # What placement needs from every event of the tube (Time neighbours of the QC edges, the
        # top of the singlet wedge): the view itself, or a streamed pass when the view is a
        # placement subsample.
        self.events = events if events is not None else _ViewEvents(view)
        self.qc_settings = qc_settings
        self.fmo = fmo
        self.masks: dict[str, np.ndarray] = {}
        self.steps: list[GateStep] = []
        self.qc: dict[str, Any] = {}
        self.strategy = fk.GatingStrategy()
        self.strategy.add_transform(FL_XFORM, make_transform(view.transform_specs["fluorescence"]))
        self.strategy.add_transform(SCATTER_XFORM, make_transform(view.transform_specs["scatter"]))
        self.paths: dict[str, tuple[str, ...]] = {}

    # -- dimensions ------------------------------------------------------------------------
    def _dimension(self, dim: str, rmin=None, rmax=None) -> fk.Dimension:
        kind = self.view.kind(dim)
        if kind == "fluorescence":
            comp = "FCS" if self.view.compensation is not None else "uncompensated"
            return fk.Dimension(self.view.pnn(dim), compensation_ref=comp, transformation_ref=FL_XFORM,
                                range_min=rmin, range_max=rmax)
        if kind == "scatter":
            return fk.Dimension(self.view.pnn(dim), compensation_ref="uncompensated",
                                transformation_ref=SCATTER_XFORM, range_min=rmin, range_max=rmax)
        return fk.Dimension(self.view.pnn(dim), compensation_ref="uncompensated", range_min=rmin, range_max=rmax)

    def _parent_mask(self, parent: str | None) -> np.ndarray:
        return self.masks[parent] if parent else np.ones(self.view.n, bool)

    def _add(self, gate, parent_path: tuple[str, ...], step: GateStep, mask: np.ndarray) -> None:
        self.strategy.add_gate(gate, gate_path=parent_path)
        self.paths[step.gate_id] = parent_path + (step.gate_id,)
        self.masks[step.gate_id] = mask
        step.count = int(mask.sum())
        step.parent_count = int(self._parent_mask(step.parent).sum())
        self.steps.append(step)

    # -- gate kinds ------------------------------------------------------------------------
    def place(self) -> None:
        for gid, tpath in self.t.gate_order():
            tgate = self.t.strategy.get_gate(gid, gate_path=tpath)
            parent = tpath[-1] if len(tpath) > 1 else None
            parent_path = self.paths[parent] if parent else (ROOT,)
            rule = self.t.rules.get(gid, GateRule(gid, "fixed"))
            if rule.method == "time_qc":
                self._time_qc(gid, tgate, parent, parent_path)
            elif rule.method == "singlets":
                self._singlets(gid, tgate, parent, parent_path)
            elif isinstance(tgate, fk.gates.RectangleGate):
                self._rect(gid, tgate, parent, parent_path, rule)
            elif isinstance(tgate, fk.gates.PolygonGate):
                self._polygon(gid, tgate, parent, parent_path)
            elif isinstance(tgate, fk.gates.BooleanGate):
                self._boolean(gid, tgate, parent, parent_path)
            else:
                raise GatingError(f"{self.t.source}: gate {gid!r}: {type(tgate).__name__} is not supported in templates")

    def _dims_of(self, tgate) -> list[str]:
        return [d.id for d in tgate.dimensions]

    def _rect(self, gid, tgate, parent, parent_path, rule: GateRule) -> None:
        pmask = self._parent_mask(parent)
        bounds: dict[str, tuple[float | None, float | None]] = {}
        how: dict[str, str] = {}
        dims = self._dims_of(tgate)
        for d in tgate.dimensions:
            bounds[d.id] = (d.min, d.max)
        for key, br in rule.bounds.items():
            dim, side = key.rsplit(".", 1)
            if dim not in bounds:
                raise GatingError(f"{self.t.source}: gate {gid!r} has no dimension {dim!r} (has {dims})")
            value, note = self._bound(gid, dim, side, br, pmask, bounds)
            lo, hi = bounds[dim]
            bounds[dim] = (value, hi) if side == "min" else (lo, value)
            how[key] = note
        mask = pmask.copy()
        for dim, (lo, hi) in bounds.items():
            v = self.view.values(dim)
            if lo is not None:
                mask &= v >= lo
            if hi is not None:
                mask &= v < hi
        gate = fk.gates.RectangleGate(gid, [self._dimension(dim, lo, hi) for dim, (lo, hi) in bounds.items()])
        plot_dims = tuple(dims) if len(dims) == 2 else tuple(dims)
        self._add(gate, parent_path, GateStep(gid, parent, "rect", tuple(dims), bounds=bounds, how=how, plot_dims=plot_dims), mask)

    def _events_for(self, br: BoundRule, pmask: np.ndarray, bounds) -> np.ndarray:
        base = self.masks[br.population] if br.population else pmask
        sel = base.copy()
        for gdim, (lo, hi) in br.given.items():
            v = self.view.values(gdim)
            if lo is not None:
                sel &= v >= lo
            if hi is not None:
                sel &= v < hi
        return sel

    def _bound(self, gid, dim, side, br: BoundRule, pmask, bounds) -> tuple[float, str]:
        if br.method == "fixed":
            lo, hi = bounds[dim]
            value = lo if side == "min" else hi
            if value is None:
                raise GatingError(f"{self.t.source}: gate {gid!r}: {dim}.{side} is fixed but the template has no value")
            return float(value), "fixed (template)"
        sel = self._events_for(br, pmask, bounds)
        v = self.view.values(dim)[sel]
        window = br.window
        floor_note = ""
        if br.floor is not None:
            f, fnote = self._bound(gid, dim, side, br.floor, pmask, bounds)
            lo_w = min(max(window[0], f), window[1] - 1e-3 * (window[1] - window[0]))
            floor_note = f"; floor {f:.3f} ({br.floor.population or 'parent'} {fnote})"
            window = (lo_w, window[1])
        if br.method == "valley":
            lo_r, hi_r = float(np.min(v)) if v.size else window[0], float(np.max(v)) if v.size else window[1]
            lo_r, hi_r = min(lo_r, window[0]) - 0.05, max(hi_r, window[1]) + 0.05
            t, kind = threshold_valley(v, lo_r, hi_r, search=window, fallback=None)
            return t, f"{kind} {t:.3f} in [{window[0]:.2f}, {window[1]:.2f}] ({v.size} events){floor_note}"
        if br.method == "tail":
            t, note = _robust_tail(v, window, br.k)
            return t, note + floor_note
        if br.method == "gmm":
            t, note = _gmm_threshold(v, window, seed=0)
            return t, note + floor_note
        if br.method == "fmo":
            if self.fmo is None:
                if br.fallback is None:
                    raise GatingError(f"{self.t.source}: gate {gid!r}: {dim}.{side} needs an FMO tube and has no fallback")
                t, note = self._bound(gid, dim, side, br.fallback, pmask, bounds)
                return t, f"no FMO tube; {note}"
            ref_gate = br.population or self._parent_of(gid)
            fmask = self.fmo.mask(ref_gate) if ref_gate else np.ones(self.fmo.view.n, bool)
            fv = self.fmo.view.values(dim)[fmask]
            if fv.size < 50:
                if br.fallback is None:
                    raise GatingError(f"{self.t.source}: gate {gid!r}: FMO tube has only {fv.size} events in {ref_gate!r}")
                t, note = self._bound(gid, dim, side, br.fallback, pmask, bounds)
                return t, f"FMO has {fv.size} events in {ref_gate}; {note}"
            q = float(np.quantile(fv, br.quantile if side == "min" else 1 - br.quantile))
            t = min(max(q, window[0]), window[1])
            note = f"FMO {100 * br.quantile:g}th percentile {q:.3f} of {fv.size} {ref_gate} events"
            if t != q:
                note += f", clipped to [{window[0]:.2f}, {window[1]:.2f}]"
            return t, note
        raise GatingError(f"gate {gid!r}: unknown method {br.method!r}")

    def _parent_of(self, gid: str) -> str | None:
        for g, path in self.t.gate_order():
            if g == gid:
                return path[-1] if len(path) > 1 else None
        return None

    def _polygon(self, gid, tgate, parent, parent_path) -> None:
        dims = self._dims_of(tgate)
        verts = [tuple(map(float, v)) for v in tgate.vertices]
        pmask = self._parent_mask(parent)
        x = self.view.values(dims[0]).astype(np.float64)
        y = self.view.values(dims[1]).astype(np.float64)
        mask = pmask & points_in_polygon(x, y, verts)
        gate = fk.gates.PolygonGate(gid, [self._dimension(d) for d in dims], verts)
        self._add(gate, parent_path, GateStep(gid, parent, "polygon", tuple(dims), vertices=verts, how={"": "fixed (template)"}, plot_dims=tuple(dims)), mask)

    def _boolean(self, gid, tgate, parent, parent_path) -> None:
        refs = []
        parts = []
        for r in tgate.gate_refs:
            refs.append({"ref": r["ref"], "path": self.paths[r["ref"]][:-1], "complement": r.get("complement", False)})
            m = self.masks[r["ref"]]
            parts.append(~m if r.get("complement", False) else m)
        kind = tgate.type
        if kind == "and":
            m = np.logical_and.reduce(parts)
        elif kind == "or":
            m = np.logical_or.reduce(parts)
        else:
            m = ~parts[0]
        mask = self._parent_mask(parent) & m
        gate = fk.gates.BooleanGate(gid, kind, refs)
        self._add(gate, parent_path, GateStep(gid, parent, "boolean", (), how={"": f"{kind} of {[r['ref'] for r in refs]}"}), mask)

    def _time_qc(self, gid, tgate, parent, parent_path) -> None:
        view = self.view
        t = view.values("Time")
        sig_dims = [d for d in ("FSC-A", "SSC-A") if d in view.resolved.index] + list(view.fluorescence)
        view.prefetch(sig_dims)
        signals = [view.values(d) for d in sig_dims]
        res = time_qc(t, signals, self.qc_settings, signal_names=sig_dims, span=self.events.time_span())
        pmask = self._parent_mask(parent)
        self.qc["time"] = {
            "segments": [list(s) for s in res.segments],
            "reasons": res.reasons,
            "removed_fraction": res.removed_fraction,
            "failed": res.removed_fraction > self.qc_settings.max_removed_fraction,
        }
        # Edges go midway between distinct event times: FlowKit reading the file scales Time in
        # float64, we in float32, so an edge must not sit within rounding distance of an event.
        if not res.segments:
            t0 = self.events.time_min()
            lo = t0 - max(1.0, abs(t0)) if t0 is not None else -1.0
            gate = fk.gates.RectangleGate(gid, [self._dimension("Time", lo, None)])
            mask = pmask & (t >= lo)
            self._add(gate, parent_path, GateStep(gid, parent, "rect", ("Time",), bounds={"Time": (lo, None)},
                                                  how={"Time": "no anomalous time segment"}, plot_dims=("Time", "FSC-A")), mask)
            return
        edges = self.events.between([e for seg in res.segments for e in seg])
        bad_ids = []
        for i in range(1, len(res.segments) + 1):
            s0, s1 = edges[2 * i - 2], edges[2 * i - 1]
            bid = f"{gid}_bad{i}"
            g = fk.gates.RectangleGate(bid, [self._dimension("Time", s0, s1)])
            m = pmask & (t >= s0) & (t < s1)
            self._add(g, parent_path, GateStep(bid, parent, "rect", ("Time",), bounds={"Time": (s0, s1)},
                                               how={"Time": f"flagged: {res.reasons[i - 1]}"}, plot_dims=("Time", "FSC-A")), m)
            bad_ids.append(bid)
        if len(bad_ids) == 1:
            gate = fk.gates.BooleanGate(gid, "not", [{"ref": bad_ids[0], "path": parent_path, "complement": False}])
        else:
            gate = fk.gates.BooleanGate(gid, "and", [{"ref": b, "path": parent_path, "complement": True} for b in bad_ids])
        bad = np.logical_or.reduce([self.masks[b] for b in bad_ids])
        mask = pmask & ~bad
        note = "; ".join(f"[{s0:.0f}, {s1:.0f}) {r}" for (s0, s1), r in zip(res.segments, res.reasons))
        self._add(gate, parent_path, GateStep(gid, parent, "boolean", ("Time",), how={"Time": f"excluded {note}"},
                                              plot_dims=("Time", "FSC-A")), mask)

    def _singlets(self, gid, tgate, parent, parent_path) -> None:
        dims = self._dims_of(tgate)
        if len(dims) != 2:
            raise GatingError(f"{self.t.source}: singlet gate {gid!r} needs dimensions (FSC-A, FSC-H)")
        a_dim, h_dim = dims
        pmask = self._parent_mask(parent)
        a = self.view.values(a_dim)
        h = self.view.values(h_dim)
        g = singlet_gate(a[pmask], h[pmask], self.qc_settings)
        top = self.events.max_value(h_dim)  # over every event: the wedge holds all of them
        h_max = top * 1.05 + 1e-6 if top is not None else 1.0
        h_min = 0.0
        verts = g.polygon(h_min, h_max) if g.ratio_hi > 0 else [(0, 0), (1e-9, 0), (1e-9, 1e-9)]
        verts = [(float(x), float(y)) for x, y in verts]
        mask = pmask & _in_polygon(a, h, verts)
        gate = fk.gates.PolygonGate(gid, [self._dimension(a_dim), self._dimension(h_dim)], verts)
        how = {"": f"FSC-A/FSC-H ratio in [{g.ratio_lo:.3f}, {g.ratio_hi:.3f}] (mode {g.mode:.3f}, SD {g.sd:.3f})"}
        self.qc["singlets"] = {"ratio_lo": g.ratio_lo, "ratio_hi": g.ratio_hi, "mode": g.mode}
        self._add(gate, parent_path, GateStep(gid, parent, "polygon", (a_dim, h_dim), vertices=verts, how=how,
                                              plot_dims=(h_dim, a_dim)), mask)


def _in_polygon(x: np.ndarray, y: np.ndarray, verts, chunk: int = 1 << 20) -> np.ndarray:
    """``points_in_polygon`` on float64 values of float32 columns, a chunk at a time (no float64
    copies of whole columns)."""
    out = np.empty(x.shape[0], bool)
    for s in range(0, x.shape[0], chunk):
        e = s + chunk
        out[s:e] = points_in_polygon(x[s:e].astype(np.float64), y[s:e].astype(np.float64), verts)
    return out


def _gate_static(template: GatingTemplate, view: TubeView, chunk_size: int) -> TubeGating:
    """Apply a template as drawn (FlowJo workspace): no placement, exact FlowKit semantics."""
    engine = GateEngine(template.strategy, chunk_size=chunk_size)
    comp = view.compensation
    sample_comp = (list(comp.detectors), comp.spill) if comp is not None else None
    result = engine.evaluate(view.raw, view.fcs.pnn, sample_comp=sample_comp, pns=view.fcs.pns)
    steps = []
    for gid, path in template.gate_order():
        gate = template.strategy.get_gate(gid, gate_path=path)
        kind = {"RectangleGate": "rect", "PolygonGate": "polygon", "BooleanGate": "boolean"}.get(type(gate).__name__, "other")
        dims = tuple(d.id for d in getattr(gate, "dimensions", []) or [])
        parent = path[-1] if len(path) > 1 else None
        steps.append(GateStep(gid, parent, kind, dims, how={"": f"as drawn in {template.source}"},
                              count=int(result.count(gid)),
                              parent_count=int(result.count(parent)) if parent else result.n_events,
                              static=True))
    return TubeGating(template.strategy, result, steps, view, {})


def _edge_between(below: float | None, above: float | None, edge: float) -> float:
    """An edge moved midway between the nearest event values below it and at or above it (one
    side missing: a unit or the value's size beyond the other; none: the edge itself)."""
    if below is None and above is None:
        return float(edge)
    if below is None:
        return float(above) - max(1.0, abs(float(above)))
    if above is None:
        return float(below) + max(1.0, abs(float(below)))
    return 0.5 * (float(below) + float(above))


class _AllEvents:
    """Facts about every event of a tube that placement needs beyond its view."""

    def time_min(self) -> float | None:
        """The smallest finite Time (s), None without one."""
        raise NotImplementedError

    def time_span(self) -> tuple[float, float] | None:
        """(first, last) finite Time (s) of the tube; None to let the time QC use its events'."""
        raise NotImplementedError

    def between(self, edges: Sequence[float]) -> list[float]:
        """Each Time edge moved midway between the event times around it (:func:`_edge_between`)."""
        raise NotImplementedError

    def max_value(self, dim: str) -> float | None:
        """The largest finite value of ``dim`` in gate units, None without one."""
        raise NotImplementedError


class _ViewEvents(_AllEvents):
    """The view holds every event."""

    def __init__(self, view: TubeView):
        self.view = view
        self._distinct: np.ndarray | None = None

    def _times(self) -> np.ndarray:
        if self._distinct is None:
            t = self.view.values("Time")
            self._distinct = np.unique(t[np.isfinite(t)])
        return self._distinct

    def time_min(self) -> float | None:
        d = self._times()
        return float(d[0]) if d.size else None

    def time_span(self) -> tuple[float, float] | None:
        return None  # the view holds every event: the time QC's own range is the tube's

    def between(self, edges: Sequence[float]) -> list[float]:
        d = self._times()
        out = []
        for e in edges:
            i = int(np.searchsorted(d, e))
            out.append(_edge_between(float(d[i - 1]) if i > 0 else None, float(d[i]) if i < d.size else None, e))
        return out

    def max_value(self, dim: str) -> float | None:
        return _finite_max(self.view.values(dim))


def _either(f, a: float | None, b: float | None) -> float | None:
    """``f(a, b)`` where either may be None (not seen yet): the other one then."""
    return b if a is None else a if b is None else f(a, b)


def _finite_max(v: np.ndarray, chunk: int = 1 << 20) -> float | None:
    """The largest finite value of ``v`` (None without one), a chunk at a time."""
    best = None
    for s in range(0, v.shape[0], chunk):
        part = v[s:s + chunk]
        part = part[np.isfinite(part)]
        if part.size:
            best = _either(max, best, float(part.max()))
    return best


def gate_tube(template: GatingTemplate, view: TubeView, *, qc_settings: QCSettings = QCSettings(),
              fmo: TubeGating | None = None, chunk_size: int = 1 << 18,
              events: _AllEvents | None = None) -> TubeGating:
    """Place the template's gates on ``view`` and evaluate them exactly (FlowKit semantics).

    ``fmo``: the gated FMO control tube of the same sample, used by ``fmo`` bound rules.
    ``events``: facts about every event of the tube when ``view`` holds a subsample of it.
    """
    if template.static:
        return _gate_static(template, view, chunk_size)
    placer = _Placer(template, view, qc_settings, fmo, events)
    placer.place()
    placer.masks.clear()  # placement masks are done with: the engine's memberships replace them
    engine = GateEngine(placer.strategy, chunk_size=chunk_size)
    comp = view.compensation
    sample_comp = (list(comp.detectors), comp.spill) if comp is not None else None
    result = engine.evaluate(view.raw, view.fcs.pnn, sample_comp=sample_comp)
    for step in placer.steps:
        step.count = int(result.count(step.gate_id))
        step.parent_count = int(result.count(step.parent)) if step.parent else result.n_events
    return TubeGating(placer.strategy, result, placer.steps, view, placer.qc)


# ---------------------------------------------------------------------------------------------
# Streaming: tubes larger than memory
# ---------------------------------------------------------------------------------------------

class _Source:
    """A streamed tube: its file, header and panel, read as scaled chunks of ``chunk_events``."""

    def __init__(self, path: str | Path, header, resolved: ResolvedPanel, compensation: Compensation | None,
                 transforms: Mapping[str, Mapping], name: str, chunk_events: int, workers: int):
        self.path = str(path)
        self.header = header
        self.resolved = resolved
        self.compensation = compensation
        self.transforms = dict(transforms)
        self.name = name
        self.chunk_events = int(chunk_events)
        self.workers = int(workers)

    def chunks(self):
        """(first event, FCSData of scaled events) for each chunk, in file order."""
        from mrdflow.io import iter_events

        for start, chunk in iter_events(self.path, self.chunk_events):
            chunk.scale_in_place()
            yield start, chunk

    def view(self, fcs: FCSData, workers: int | None = None) -> TubeView:
        return TubeView(fcs, self.resolved, self.compensation, self.transforms, name=self.name,
                        workers=workers or self.workers)


class _StreamEvents(_AllEvents):
    """Facts about every event of a streamed tube: minima/maxima gathered while the placement
    sample was drawn, Time neighbours of QC edges in one more pass over the Time column."""

    def __init__(self, source: _Source, time_span: tuple[float, float] | None, maxima: Mapping[str, float | None]):
        self.source = source
        self._time_span = time_span
        self._maxima = dict(maxima)

    def time_min(self) -> float | None:
        return self._time_span[0] if self._time_span else None

    def time_span(self) -> tuple[float, float] | None:
        return self._time_span

    def max_value(self, dim: str) -> float | None:
        if dim not in self._maxima:
            best = None
            for _, chunk in self.source.chunks():
                best = _either(max, best, _finite_max(self.source.view(chunk, 1).values(dim)))
            self._maxima[dim] = best
        return self._maxima[dim]

    def between(self, edges: Sequence[float]) -> list[float]:
        e = np.asarray(edges, np.float64)
        below: list[float | None] = [None] * e.size
        above: list[float | None] = [None] * e.size
        for _, chunk in self.source.chunks():
            t = self.source.view(chunk, 1).values("Time")
            t = np.sort(t[np.isfinite(t)])
            if not t.size:
                continue
            idx = np.searchsorted(t, e)  # t[idx - 1] < edge <= t[idx]
            for j, i in enumerate(idx):
                if i > 0:
                    below[j] = _either(max, below[j], float(t[i - 1]))
                if i < t.size:
                    above[j] = _either(min, above[j], float(t[i]))
        return [_edge_between(below[j], above[j], float(e[j])) for j in range(e.size)]


def _placement_sample(source: _Source, n_keep: int, seed: int) -> tuple[FCSData, _StreamEvents]:
    """One pass over the file: a uniform random sample of exactly ``min(n_keep, n)`` events (in
    file order, so Time stays ordered) and the all-event minima/maxima placement needs.

    Each chunk contributes a hypergeometric share of the remaining sample (sequential sampling
    without replacement), so the sample is uniform over the tube and memory is the sample plus
    one chunk.
    """
    header = source.header
    n = header.n_events
    k_left, n_left = min(int(n_keep), n), n
    rng = np.random.default_rng(seed)
    out = np.empty((k_left, header.n_parameters), np.float32)
    filled = 0
    tmin: float | None = None
    tmax: float | None = None
    scatter = [d for d in source.resolved.index if d != "Time" and d not in {m.name for m in source.resolved.panel.markers}]
    maxima: dict[str, float | None] = {d: None for d in scatter}
    has_time = "Time" in source.resolved.index
    for _, chunk in source.chunks():
        m = chunk.n_events
        take = int(rng.hypergeometric(m, n_left - m, k_left)) if n_left > m else k_left
        rows = np.sort(rng.choice(m, take, replace=False)) if take < m else slice(None)
        out[filled:filled + take] = chunk.events[rows]
        filled += take
        k_left -= take
        n_left -= m
        cv = source.view(chunk, 1)
        if has_time:
            t = cv.values("Time")
            t = t[np.isfinite(t)]
            if t.size:
                tmin, tmax = _either(min, tmin, float(t.min())), _either(max, tmax, float(t.max()))
        for d in scatter:
            maxima[d] = _either(max, maxima[d], _finite_max(cv.values(d)))
    if filled != out.shape[0]:  # the file changed under us
        raise GatingError(f"{source.name}: read {filled} placement events, expected {out.shape[0]}")
    span = (tmin, tmax) if tmin is not None else None
    return FCSData.from_events(header, out), _StreamEvents(source, span, maxima)


def _drain(parts: list[np.ndarray], empty_shape: tuple[int, ...], dtype) -> np.ndarray:
    """Concatenate ``parts`` into one array, freeing each part once copied: the peak is the
    result plus one part, not twice the result (kept PC events of a high-burden marrow can be
    most of a tube)."""
    if not parts:
        return np.zeros(empty_shape, dtype)
    out = np.empty((sum(p.shape[0] for p in parts),) + parts[0].shape[1:], parts[0].dtype)
    row = 0
    parts.reverse()
    while parts:
        p = parts.pop()
        out[row:row + p.shape[0]] = p
        row += p.shape[0]
        del p
    return out


@dataclass
class StreamedGating:
    """A tube gated in a stream: gates placed on a uniform random sample of its events
    (``sample``, a :class:`TubeGating` of ``sample.n_events`` events), then counted over every
    event a chunk at a time.

    ``count``, ``table``, ``steps`` and ``n_events`` are over all events; ``mask`` and ``view``
    are the placement sample's (for plots and distribution read-outs such as an MFI or an FMO
    quantile); the events of the populations named in ``keep`` are held whole (``events_in``).
    """

    strategy: fk.GatingStrategy
    steps: list[GateStep]
    qc: dict[str, Any]
    sample: TubeGating
    n_events: int
    nonfinite: int
    kept: dict[str, KeptEvents]
    counts: dict[tuple[str, ...], int]

    @property
    def view(self) -> TubeView:
        return self.sample.view

    def mask(self, gate_id: str) -> np.ndarray:
        """Membership over the placement sample (not over every event)."""
        return self.sample.mask(gate_id)

    def count(self, gate_id: str) -> int:
        return int(self.counts[self.sample.result.resolve(gate_id)])

    def nonfinite_events(self) -> int:
        return self.nonfinite

    def events_in(self, gate_id: str, flags: Sequence[str] = ()) -> KeptEvents:
        if gate_id not in self.kept:
            raise GatingError(f"{self.view.name}: events of {gate_id!r} were not kept while streaming "
                              f"(kept: {sorted(self.kept)})")
        k = self.kept[gate_id]
        missing = [f for f in flags if f not in k.flags]
        if missing:
            raise GatingError(f"{self.view.name}: flags {missing} of {gate_id!r} were not kept while streaming")
        return k

    table = TubeGating.table
    gatingml = TubeGating.gatingml


def gate_tube_streamed(template: GatingTemplate, path: str | Path, resolved: ResolvedPanel,
                       compensation: Compensation | None, transforms: Mapping[str, Mapping], *,
                       qc_settings: QCSettings = QCSettings(), fmo: TubeGating | StreamedGating | None = None,
                       placement_events: int = 5_000_000, chunk_events: int = 1 << 20,
                       keep: Mapping[str, Sequence[str]] | None = None, seed: int = 0, name: str = "",
                       workers: int | None = None, chunk_size: int = 1 << 18) -> StreamedGating:
    """Gate a tube too large to hold: place on a sample, count every event in a stream.

    Two sequential reads of the file (a third, of Time only, when the time QC flags segments):
    (1) a uniform random sample of ``placement_events`` events (seeded by ``seed``) and the
    all-event range of Time and maxima of the scatter dimensions; then the template placed on the
    sample exactly as :func:`gate_tube` places it on a whole tube, with time-QC bins over the whole
    run, its edges put between the event times of the whole tube and the singlet wedge tall enough
    for all of its events; (2) the placed gates evaluated by :class:`~mrdflow.gating.GateEngine` on
    each chunk of ``chunk_events`` events: counts per population (the time QC's removed fraction
    among them), non-finite events, and the events (markers in gate units, flag gates) of each
    population in ``keep`` ({gate id: flag gate ids}).

    Memory is the placement sample (as a tube of that size), one chunk and its working columns,
    and the kept events: it does not grow with the tube. With ``placement_events`` at least the
    tube's events the gates, counts and kept events equal :func:`gate_tube`'s.
    """
    from mrdflow.io import read_header

    header = read_header(path)
    workers = int(workers or available_cpus(4))
    source = _Source(path, header, resolved, compensation, transforms, name or str(path), chunk_events, workers)
    sample_fcs, all_events = _placement_sample(source, placement_events, seed)
    sample_view = source.view(sample_fcs)
    sample = gate_tube(template, sample_view, qc_settings=qc_settings, fmo=getattr(fmo, "sample", fmo),
                       chunk_size=chunk_size, events=all_events)
    engine = GateEngine(sample.strategy, chunk_size=chunk_size, workers=workers)
    sample_comp = (list(compensation.detectors), compensation.spill) if compensation is not None else None
    counts = {p: 0 for p in engine.paths}
    nonfinite = 0
    step_ids = {s.gate_id for s in sample.steps}
    keep = {g: list(f) for g, f in (keep or {}).items() if g in step_ids}
    markers = [m.name for m in resolved.panel.markers]
    parts: dict[str, list[np.ndarray]] = {g: [] for g in keep}
    flag_parts: dict[str, dict[str, list[np.ndarray]]] = {g: {f: [] for f in fl if f in step_ids} for g, fl in keep.items()}
    n = 0
    for _, chunk in source.chunks():
        ev = chunk.events
        res = engine.evaluate(ev, header.pnn, sample_comp=sample_comp, pns=header.pns)
        for p in counts:
            counts[p] += res.count(p)
        nonfinite += nonfinite_rows(ev)
        n += ev.shape[0]
        for g in keep:
            m = res.membership(g)
            if not m.any():
                continue
            rows = source.view(FCSData.from_events(header, ev[m]), 1)
            rows.prefetch(markers)
            parts[g].append(np.column_stack([rows.values(mk) for mk in markers]).astype(np.float32, copy=False))
            for f in flag_parts[g]:
                flag_parts[g][f].append(np.asarray(res.membership(f))[m])
    if n != header.n_events:
        raise GatingError(f"{source.name}: streamed {n} events, the header says {header.n_events}")
    kept = {}
    for g in keep:
        values = _drain(parts[g], (0, len(markers)), np.float32)
        flags = {f: _drain(v, (0,), bool) for f, v in flag_parts[g].items()}
        kept[g] = KeptEvents(g, markers, values, flags)
    resolve = sample.result.resolve
    steps = []
    for st in sample.steps:
        c = counts[resolve(st.gate_id)]
        pc = counts[resolve(st.parent)] if st.parent else n
        steps.append(replace(st, count=int(c), parent_count=int(pc)))
    qc = dict(sample.qc)
    # The time QC's removed fraction (and so the flow-rate failure that makes MRD not evaluable)
    # from every event, not the sample's estimate.
    by_id = {st.gate_id: st for st in steps}
    for gid, rule in template.rules.items():
        if rule.method == "time_qc" and "time" in qc and gid in by_id and by_id[gid].parent_count:
            removed = 1.0 - by_id[gid].count / by_id[gid].parent_count
            qc["time"] = {**qc["time"], "removed_fraction": removed,
                          "failed": removed > qc_settings.max_removed_fraction}
    qc["placement"] = {"events": int(sample.n_events), "of": int(n), "seed": int(seed)}
    return StreamedGating(sample.strategy, steps, qc, sample, n, nonfinite, kept, counts)

"""From a template's expected positions and the positions found in a lab's files to the lab's
windows: the map of one dimension's gate units, and the rules and Gating-ML coordinates mapped.

A template's ``expected:`` section (``resources/gating/<panel>.yaml``) says where the populations
sat on the instrument its windows were written for. For a fluorescence marker whose negative and
positive populations are both found, the map is the affine one taking (expected negative,
expected positive) to (found negative, found positive); with only the negative found, the shift by
its difference; for a scatter dimension, the scale by the main population's ratio. Every bound
window of that dimension is mapped: the rule's ``window``, its ``fallback`` and ``floor`` windows,
and ``given`` ranges on it in any rule, clipped to [0, 1] and kept in order.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from mrdflow.calibration._modes import MarkerModes

__all__ = ["ExpectedMarker", "ExpectedPositions", "WindowMap", "map_for", "map_rules", "map_strategy",
           "read_expected", "rule_windows"]

#: A map that stretches or shrinks the axis by more than 2x is not an instrument's shift: the
#: populations found are then not the ones the template's positions describe, and the map is
#: not used (the slope of an affine map, or a scatter ratio, must lie within these).
MIN_SLOPE, MAX_SLOPE = 0.5, 2.0
#: The narrowest window a map may leave after clipping to [0, 1] (gate units).
MIN_WIDTH = 0.01


@dataclass(frozen=True)
class ExpectedMarker:
    """Where a dimension's populations sat on the template's instrument (gate units): ``negative``
    and ``positive`` for a fluorescence marker (``positive`` may be None), or ``main`` for scatter.
    ``population``: the gate whose events the positions describe (None: every event)."""

    marker: str
    negative: float | None = None
    positive: float | None = None
    main: float | None = None
    population: str | None = None

    @property
    def scatter(self) -> bool:
        return self.main is not None


@dataclass(frozen=True)
class ExpectedPositions:
    """A template's ``expected:`` section: the default population and the markers' positions."""

    population: str | None
    markers: Mapping[str, ExpectedMarker]


def read_expected(doc: Mapping | None) -> ExpectedPositions:
    """The ``expected:`` section of a rules document (already checked by
    :func:`mrdflow.gating.load_template`); an absent section gives no markers."""
    doc = doc or {}
    default = doc.get("population")
    markers = {}
    for name, spec in (doc.get("markers") or {}).items():
        f = {k: (None if spec.get(k) is None else float(spec[k])) for k in ("negative", "positive", "main")}
        markers[str(name)] = ExpectedMarker(str(name), population=spec.get("population", default), **f)
    return ExpectedPositions(default, markers)


@dataclass(frozen=True)
class WindowMap:
    """``x -> a * x + b`` on one dimension's gate units. ``kind``: ``affine`` (both populations
    found), ``shift`` (the negative only), ``scale`` (scatter: the main population's ratio) or
    ``template`` (the identity: left as in the template)."""

    kind: str = "template"
    a: float = 1.0
    b: float = 0.0

    @property
    def identity(self) -> bool:
        return self.kind == "template"

    def __call__(self, x: float) -> float:
        return self.a * float(x) + self.b

    def describe(self) -> str:
        if self.kind == "affine":
            return f"x*{self.a:.3f}{self.b:+.3f}"
        if self.kind == "shift":
            return f"x{self.b:+.3f}"
        if self.kind == "scale":
            return f"x*{self.a:.3f}"
        return "as template"

    def bound(self, x: float | None) -> float | None:
        """One bound mapped and clipped to [0, 1] (None stays open)."""
        return None if x is None else round(min(max(self(x), 0.0), 1.0), 3)

    def range(self, rng: Sequence[float | None]) -> list[float | None]:
        """A [low, high] window or range mapped and clipped to [0, 1], in order, at least
        :data:`MIN_WIDTH` wide when both ends are set."""
        lo, hi = self.bound(rng[0]), self.bound(rng[1])
        if lo is not None and hi is not None and hi - lo < MIN_WIDTH:
            lo, hi = (lo, round(lo + MIN_WIDTH, 3)) if lo + MIN_WIDTH <= 1.0 else (round(hi - MIN_WIDTH, 3), hi)
        return [lo, hi]


def map_for(expected: ExpectedMarker, modes: MarkerModes) -> tuple[WindowMap, str]:
    """The map of one dimension from its expected and found positions, and a note saying why
    (for a map left as the template: why it was left)."""
    if expected.scatter:
        if modes.main is None:
            return WindowMap(), f"scatter left as in the template: {modes.negative_reason or 'no main population'}"
        ratio = modes.main.position / expected.main if expected.main else 0.0
        if not MIN_SLOPE <= ratio <= MAX_SLOPE:
            return WindowMap(), (f"scatter left as in the template: main population at {modes.main.position:.3f}, "
                                 f"{ratio:.2f}x the expected {expected.main:.3f} (outside {MIN_SLOPE}-{MAX_SLOPE}x)")
        return WindowMap("scale", ratio, 0.0), f"main population {expected.main:.3f} -> {modes.main.position:.3f}"
    if modes.negative is None:
        return WindowMap(), f"left as in the template: negative not found ({modes.negative_reason})"
    en, fn = float(expected.negative), modes.negative.position
    shift = WindowMap("shift", 1.0, fn - en)
    if expected.positive is None:
        return shift, "no positive position in the template: shifted by the negative population"
    if modes.positive is None:
        return shift, f"positive not found ({modes.positive_reason}): shifted by the negative population"
    fp = modes.positive.position
    a = (fp - fn) / (float(expected.positive) - en)
    if not MIN_SLOPE <= a <= MAX_SLOPE:
        return shift, (f"affine slope {a:.2f} outside {MIN_SLOPE}-{MAX_SLOPE} (positive found at {fp:.3f}): "
                       "shifted by the negative population")
    return WindowMap("affine", a, fn - a * en), "negative and positive populations found"


def _map_bound(spec: Mapping, dim: str, maps: Mapping[str, WindowMap]) -> dict:
    """One bound rule (and its fallback/floor, which place the same bound) with its window and
    ``given`` ranges mapped; other fields are kept as they are."""
    out = dict(spec)
    m = maps.get(dim)
    if m is not None and isinstance(spec.get("window"), list):
        out["window"] = m.range(spec["window"])
    if isinstance(spec.get("given"), Mapping):
        out["given"] = {g: (maps[g].range(r) if g in maps and isinstance(r, list) else copy.deepcopy(r))
                        for g, r in spec["given"].items()}
    for key in ("fallback", "floor"):
        if isinstance(spec.get(key), Mapping):
            out[key] = _map_bound(spec[key], dim, maps)
    return out


def map_rules(gates: Mapping, maps: Mapping[str, WindowMap]) -> dict:
    """The ``gates:`` section of a rules document with every bound window of each mapped
    dimension mapped (a new document; YAML aliases become copies; gate-level rules unchanged)."""
    out: dict = {}
    for gid, spec in gates.items():
        if not isinstance(spec, Mapping):
            out[gid] = copy.deepcopy(spec)
            continue
        new = {}
        for key, value in spec.items():
            if isinstance(value, Mapping) and (key.endswith(".min") or key.endswith(".max")):
                new[key] = _map_bound(value, key.rsplit(".", 1)[0], maps)
            else:
                new[key] = copy.deepcopy(value)
        out[gid] = new
    return out


def rule_windows(gates: Mapping, dim: str) -> list[tuple[str, list[float | None]]]:
    """Every window and ``given`` range on ``dim`` in a ``gates:`` section: (label, [low, high])."""
    out: list[tuple[str, list[float | None]]] = []

    def walk(spec: Mapping, bound_dim: str, label: str) -> None:
        if bound_dim == dim and isinstance(spec.get("window"), list):
            out.append((label, list(spec["window"])))
        for g, r in (spec.get("given") or {}).items():
            if g == dim and isinstance(r, list):
                out.append((f"{label} given", list(r)))
        for key in ("fallback", "floor"):
            if isinstance(spec.get(key), Mapping):
                walk(spec[key], bound_dim, f"{label} {key}")

    for gid, spec in gates.items():
        for key, value in (spec.items() if isinstance(spec, Mapping) else ()):
            if isinstance(value, Mapping) and (key.endswith(".min") or key.endswith(".max")):
                walk(value, key.rsplit(".", 1)[0], f"{gid} {key}")
    return out


def map_strategy(strategy, maps: Mapping[str, WindowMap]):
    """A copy of a FlowKit gating strategy with the rectangle coordinates of each mapped
    dimension mapped (the template's fixed coordinates; a placed bound replaces its own).
    Polygon gates (the singlet wedge, placed from the data) are kept as drawn."""
    import flowkit as fk

    # a template's gates (mrdflow's Strategy) as FlowKit's: its writer puts the lab's template out
    out = strategy.to_flowkit() if hasattr(strategy, "to_flowkit") else copy.deepcopy(strategy)
    for gid, path in out.get_gate_ids():
        gate = out.get_gate(gid, gate_path=path)
        if not isinstance(gate, fk.gates.RectangleGate):
            continue
        for d in gate.dimensions:
            m = maps.get(d.id)
            if m is None or m.identity:
                continue
            d.min, d.max = m.range([d.min, d.max])
    return out

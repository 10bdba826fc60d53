"""The gates a sample job places and evaluates, as small types that load without FlowKit.

Why by hand: FlowKit's gate and strategy classes are the reference model, but importing FlowKit
pulls in bokeh, pandas, networkx and scipy.stats (~1.5 s of every job, measured), while a
per-sample job needs only rectangles, polygons and booleans over a tree. These types mirror the
FlowKit attributes the rest of the package reads (``gate_name``, ``gate_type``, ``dimensions``
with ``id``/``compensation_ref``/``transformation_ref``/``min``/``max``, ``vertices``,
``gate_refs``, ``type``, ``use_complement``; ``GatingStrategy.get_gate``/``get_gate_ids``/
``transformations``/``comp_matrices``), so the gate engine and the plots read either.

Gates are mutable, as FlowKit's are (a copy may be renamed or moved by a writer or a test).
FlowKit stays the reference at the boundaries: templates are parsed by FlowKit once per run and
kept as JSON (:meth:`Strategy.as_json`), :meth:`Strategy.to_flowkit` hands a placed strategy to
FlowKit's FlowJo writer, and the tests check that FlowKit reading our Gating-ML
(:mod:`mrdflow.gating._gatingml`) gives the same gates and counts.

Transforms are the Gating-ML scales a panel's config names (logicle, asinh, linear) with FlowKit's
parameter names; their ``apply`` is FlowUtils' (FlowKit's own arithmetic, a fast import) or, for
logicle, the vectorised solver of :mod:`mrdflow.gating._transforms`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = [
    "AsinhTransform",
    "BooleanGate",
    "Dimension",
    "LinearTransform",
    "LogicleTransform",
    "PolygonGate",
    "RectangleGate",
    "Strategy",
    "transform_from_json",
]

ROOT = "root"


# ---------------------------------------------------------------------------------------------
# Transforms
# ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class LogicleTransform:
    """Gating-ML logicle (T, W, M, A as FlowKit's ``param_*``)."""

    param_t: float
    param_w: float
    param_m: float
    param_a: float = 0.0
    kind = "logicle"

    def apply(self, events: np.ndarray) -> np.ndarray:
        from mrdflow.gating._transforms import fast_logicle

        return fast_logicle(self.param_t, self.param_w, self.param_m, self.param_a).scale(
            np.asarray(events, dtype=np.float64))

    def inverse(self, events: np.ndarray) -> np.ndarray:
        import flowutils.transforms

        return flowutils.transforms.logicle_inverse(np.asarray(events, dtype=np.float64), None, t=self.param_t,
                                                    m=self.param_m, w=self.param_w, a=self.param_a)

    def params(self) -> dict[str, float]:
        return {"t": self.param_t, "w": self.param_w, "m": self.param_m, "a": self.param_a}


@dataclass(frozen=True)
class AsinhTransform:
    """Gating-ML parametrised inverse hyperbolic sine (T, M, A)."""

    param_t: float
    param_m: float
    param_a: float = 0.0
    kind = "asinh"

    def apply(self, events: np.ndarray) -> np.ndarray:
        import flowutils.transforms

        return flowutils.transforms.asinh(np.asarray(events, dtype=np.float64), None, t=self.param_t,
                                          m=self.param_m, a=self.param_a)

    def inverse(self, events: np.ndarray) -> np.ndarray:
        import flowutils.transforms

        return flowutils.transforms.asinh_inverse(np.asarray(events, dtype=np.float64), None, t=self.param_t,
                                                  m=self.param_m, a=self.param_a)

    def params(self) -> dict[str, float]:
        return {"t": self.param_t, "m": self.param_m, "a": self.param_a}


@dataclass(frozen=True)
class LinearTransform:
    """Gating-ML linear scale: (x + A) / (T + A)."""

    param_t: float
    param_a: float = 0.0
    kind = "linear"

    def apply(self, events: np.ndarray) -> np.ndarray:
        return (np.asarray(events, dtype=np.float64) + self.param_a) / (self.param_t + self.param_a)

    def inverse(self, events: np.ndarray) -> np.ndarray:
        return np.asarray(events, dtype=np.float64) * (self.param_t + self.param_a) - self.param_a

    def params(self) -> dict[str, float]:
        return {"t": self.param_t, "a": self.param_a}


_TRANSFORMS = {"logicle": LogicleTransform, "asinh": AsinhTransform, "linear": LinearTransform}


def transform_from_json(spec: Mapping) -> LogicleTransform | AsinhTransform | LinearTransform:
    """A transform from ``{"type": ..., "t": ..., ...}`` (the JSON of :meth:`Strategy.as_json`)."""
    cls = _TRANSFORMS.get(spec.get("type"))
    if cls is None:
        raise ValueError(f"unknown transform type {spec.get('type')!r}")
    return cls(**{f"param_{k}": float(v) for k, v in spec.items() if k != "type"})


def _transform_json(t) -> dict:
    return {"type": t.kind, **{k: float(v) for k, v in t.params().items()}}


# ---------------------------------------------------------------------------------------------
# Gates
# ---------------------------------------------------------------------------------------------

@dataclass
class Dimension:
    """A gate dimension: channel ``id``, ``compensation_ref`` (``FCS``, ``uncompensated`` or a
    matrix id), ``transformation_ref`` (a strategy transform id, or None), range ``min``/``max``
    (gate units; None = open)."""

    id: str
    compensation_ref: str = "uncompensated"
    transformation_ref: str | None = None
    min: float | None = None
    max: float | None = None

    def __post_init__(self):  # numpy scalars in, plain floats kept (JSON, Gating-ML)
        self.min = None if self.min is None else float(self.min)
        self.max = None if self.max is None else float(self.max)

    def as_json(self) -> dict:
        return {"id": self.id, "comp": self.compensation_ref, "xform": self.transformation_ref,
                "min": self.min, "max": self.max}

    @classmethod
    def from_json(cls, d: Mapping) -> Dimension:
        return cls(d["id"], d.get("comp", "uncompensated"), d.get("xform"), d.get("min"), d.get("max"))


@dataclass
class RectangleGate:
    """Hyper-rectangle: ``min <= x < max`` on every dimension (open sides: None)."""

    gate_name: str
    dimensions: tuple[Dimension, ...]
    use_complement: bool = False
    gate_type = "RectangleGate"


@dataclass
class PolygonGate:
    """2-D polygon (vertices in gate units, FlowUtils' even-odd semantics)."""

    gate_name: str
    dimensions: tuple[Dimension, ...]
    vertices: tuple[tuple[float, float], ...]
    use_complement: bool = False
    gate_type = "PolygonGate"


@dataclass
class BooleanGate:
    """``and``/``or``/``not`` over other gates: ``gate_refs`` are ``{"ref": gate id, "path":
    its parent path, "complement": bool}``, as FlowKit gives them."""

    gate_name: str
    type: str
    gate_refs: tuple[Mapping[str, Any], ...]
    gate_type = "BooleanGate"


Gate = RectangleGate | PolygonGate | BooleanGate


def _gate_json(gate: Gate) -> dict:
    if gate.gate_type == "BooleanGate":
        return {"kind": "boolean", "id": gate.gate_name, "op": gate.type,
                "refs": [{"ref": r["ref"], "path": list(r.get("path") or ()), "complement": bool(r.get("complement"))}
                         for r in gate.gate_refs]}
    out = {"kind": "rectangle" if gate.gate_type == "RectangleGate" else "polygon", "id": gate.gate_name,
           "dims": [d.as_json() for d in gate.dimensions], "complement": bool(gate.use_complement)}
    if gate.gate_type == "PolygonGate":
        out["vertices"] = [[float(x), float(y)] for x, y in gate.vertices]
    return out


def _gate_from_json(d: Mapping) -> Gate:
    kind = d["kind"]
    if kind == "boolean":
        refs = tuple({"ref": r["ref"], "path": tuple(r["path"]), "complement": bool(r["complement"])}
                     for r in d["refs"])
        return BooleanGate(d["id"], d["op"], refs)
    dims = tuple(Dimension.from_json(x) for x in d["dims"])
    if kind == "rectangle":
        return RectangleGate(d["id"], dims, bool(d.get("complement", False)))
    if kind == "polygon":
        return PolygonGate(d["id"], dims, tuple((float(x), float(y)) for x, y in d["vertices"]),
                           bool(d.get("complement", False)))
    raise ValueError(f"unknown gate kind {kind!r}")


# ---------------------------------------------------------------------------------------------
# Strategy
# ---------------------------------------------------------------------------------------------

@dataclass
class Strategy:
    """A gate tree: gates by (id, parent path), in the order added (parents first), and the
    transforms their dimensions name. ``comp_matrices`` stays empty: placed gates use the file's
    own spillover (``FCS``) or none."""

    transformations: dict[str, Any] = field(default_factory=dict)
    comp_matrices: dict[str, Any] = field(default_factory=dict)
    _gates: dict[tuple[str, tuple[str, ...]], Gate] = field(default_factory=dict)

    def add_transform(self, transform_id: str, transform) -> None:
        self.transformations[transform_id] = transform

    def get_transform(self, transform_id: str):
        return self.transformations[transform_id]

    def add_gate(self, gate: Gate, gate_path: Sequence[str]) -> None:
        """Add ``gate`` under ``gate_path`` (its parent's full path, starting with ``root``)."""
        path = tuple(gate_path)
        if not path or path[0] != ROOT:
            raise ValueError(f"gate path must start with {ROOT!r}: {path}")
        if len(path) > 1 and (path[-1], path[:-1]) not in self._gates:
            raise ValueError(f"parent gate {path[-1]!r} of {gate.gate_name!r} is not in the strategy")
        key = (gate.gate_name, path)
        if key in self._gates:
            raise ValueError(f"gate {gate.gate_name!r} already exists under {path}")
        self._gates[key] = gate

    def get_gate_ids(self) -> list[tuple[str, tuple[str, ...]]]:
        """(gate id, parent path) of every gate, parents first."""
        return list(self._gates)

    def get_gate(self, gate_id: str, gate_path: Sequence[str] | None = None, sample_id: str | None = None) -> Gate:
        """The gate ``gate_id`` (under ``gate_path`` when the id is used more than once)."""
        if gate_path is not None:
            path = tuple(gate_path)
            if path[:1] != (ROOT,):
                path = (ROOT, *path)
            try:
                return self._gates[(gate_id, path)]
            except KeyError:
                raise KeyError(f"no gate {gate_id!r} under {path}") from None
        found = [g for (gid, _), g in self._gates.items() if gid == gate_id]
        if len(found) != 1:
            raise KeyError(f"no gate {gate_id!r}" if not found else f"gate id {gate_id!r} is ambiguous")
        return found[0]

    # -- conversions ---------------------------------------------------------------------------
    def as_json(self) -> dict:
        """A JSON-serialisable form (:meth:`from_json` reads it back)."""
        return {"transforms": {k: _transform_json(t) for k, t in self.transformations.items()},
                "gates": [{"path": list(path), **_gate_json(g)} for (_, path), g in self._gates.items()]}

    @classmethod
    def from_json(cls, doc: Mapping) -> Strategy:
        s = cls()
        for tid, spec in (doc.get("transforms") or {}).items():
            s.add_transform(tid, transform_from_json(spec))
        for g in doc.get("gates") or []:
            s.add_gate(_gate_from_json(g), tuple(g["path"]))
        return s

    @classmethod
    def from_flowkit(cls, strategy, *, where: str = "") -> Strategy:
        """The rectangles, polygons and booleans of a FlowKit strategy (a template); transforms
        of the kinds above. Any other gate or transform is refused, naming it."""
        import flowkit as fk

        s = cls()
        for tid, t in strategy.transformations.items():
            if isinstance(t, fk.transforms.LogicleTransform):
                s.add_transform(tid, LogicleTransform(float(t.param_t), float(t.param_w), float(t.param_m),
                                                      float(t.param_a)))
            elif isinstance(t, fk.transforms.AsinhTransform):
                s.add_transform(tid, AsinhTransform(float(t.param_t), float(t.param_m), float(t.param_a)))
            elif isinstance(t, fk.transforms.LinearTransform):
                s.add_transform(tid, LinearTransform(float(t.param_t), float(t.param_a)))
            else:
                raise ValueError(f"{where}transform {tid!r}: {type(t).__name__} is not supported in templates")
        # A template's own spillover matrices are not carried: placed gates use the tube's own
        # compensation (``FCS``) or none, whatever matrix a template dimension names.
        for gid, path in strategy.get_gate_ids():
            g = strategy.get_gate(gid, gate_path=path)
            s.add_gate(_from_flowkit_gate(g, f"{where}gate {gid!r}: "), tuple(path))
        return s

    def to_flowkit(self):
        """The same gates as a ``flowkit.GatingStrategy`` (for FlowKit's writers)."""
        import flowkit as fk

        out = fk.GatingStrategy()
        for tid, t in self.transformations.items():
            out.add_transform(tid, _flowkit_transform(t))
        for (_, path), g in self._gates.items():
            out.add_gate(_flowkit_gate(g), gate_path=path)
        return out


def _from_flowkit_dims(dims: Iterable) -> tuple[Dimension, ...]:
    return tuple(Dimension(d.id, d.compensation_ref, d.transformation_ref, d.min, d.max) for d in dims)


def _from_flowkit_gate(g, where: str) -> Gate:
    import flowkit as fk

    if isinstance(g, fk.gates.BooleanGate):
        return BooleanGate(g.gate_name, g.type, tuple(
            {"ref": r["ref"], "path": tuple(r.get("path") or ()), "complement": bool(r.get("complement", False))}
            for r in g.gate_refs))
    if any(not isinstance(d, fk.Dimension) for d in getattr(g, "dimensions", [])):
        raise ValueError(f"{where}ratio or quadrant dimensions are not supported in templates")
    if isinstance(g, fk.gates.RectangleGate):
        return RectangleGate(g.gate_name, _from_flowkit_dims(g.dimensions), bool(g.use_complement))
    if isinstance(g, fk.gates.PolygonGate):
        return PolygonGate(g.gate_name, _from_flowkit_dims(g.dimensions),
                           tuple((float(x), float(y)) for x, y in g.vertices), bool(g.use_complement))
    raise ValueError(f"{where}{type(g).__name__} is not supported in templates")


def _flowkit_transform(t):
    import flowkit as fk

    if t.kind == "logicle":
        return fk.transforms.LogicleTransform(param_t=t.param_t, param_w=t.param_w, param_m=t.param_m,
                                              param_a=t.param_a)
    if t.kind == "asinh":
        return fk.transforms.AsinhTransform(param_t=t.param_t, param_m=t.param_m, param_a=t.param_a)
    return fk.transforms.LinearTransform(param_t=t.param_t, param_a=t.param_a)


def _flowkit_gate(g: Gate):
    import flowkit as fk

    if g.gate_type == "BooleanGate":
        return fk.gates.BooleanGate(g.gate_name, g.type, [dict(r, path=tuple(r["path"])) for r in g.gate_refs])
    dims = [fk.Dimension(d.id, compensation_ref=d.compensation_ref, transformation_ref=d.transformation_ref,
                         range_min=d.min, range_max=d.max) for d in g.dimensions]
    if g.gate_type == "RectangleGate":
        return fk.gates.RectangleGate(g.gate_name, dims, use_complement=g.use_complement)
    return fk.gates.PolygonGate(g.gate_name, dims, [list(v) for v in g.vertices], use_complement=g.use_complement)

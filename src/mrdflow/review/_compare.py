"""A reviewer's gates against the data-driven ones: what moved, and whether the workspace can be
used at all (same gates, same compensation, same transforms).

Both sides are FlowKit gating strategies on the file's ``$PnN`` channels: the data-driven one
read from the sample's Gating-ML (``gates.xml``), the reviewed one from the workspace. Gates are
matched by full path. Coordinates are compared on the gate scale (the panel's transform, 0-1 for
the logicle and linear scales): a bound that moved by more than :data:`TOLERANCE` is a change.
FlowJo stores gates in channel values, so a gate written out and saved back unmoved returns
within about 1e-9 of where it was; 1e-4 of the scale is far below what a hand can move a gate.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from mrdflow.errors import MrdflowError

__all__ = ["GateChange", "ReviewError", "TOLERANCE", "check_compensation", "check_transforms", "compare_gates",
           "gate_coordinates"]

#: Largest difference of a bound, on the gate scale, that is not a move (see the module docstring).
TOLERANCE = 1e-4
#: Raw channel values at which two transforms must agree to be the same (compensated units).
_PROBE = np.array([-5000.0, -500.0, -50.0, 0.0, 50.0, 500.0, 5e3, 5e4, 2.5e5], dtype=float)
_COMP_PREFIX = "Comp-"


class ReviewError(MrdflowError):
    """A reviewer's workspace that cannot be used for a tube (the message names workspace, sample, gate)."""


@dataclass(frozen=True)
class GateChange:
    """One gate the reviewer changed: ``tube``, the gate's id and full ``path`` (parents joined by
    ``/``), ``change`` (``moved``: coordinates; ``redefined``: a boolean gate's operation or
    operands), both gates as :func:`gate_coordinates` describes them, and the events in each
    (filled in once the tube is gated with the reviewed gates)."""

    tube: str
    gate: str
    path: str
    change: str
    data: dict
    reviewed: dict
    count_data: int | None = None
    count_reviewed: int | None = None

    def as_dict(self) -> dict:
        return {"tube": self.tube, "gate": self.gate, "path": self.path, "change": self.change, "data": self.data,
                "reviewed": self.reviewed, "count_data": self.count_data, "count_reviewed": self.count_reviewed}


def _channel(dim_id: str) -> str:
    return dim_id[len(_COMP_PREFIX):] if dim_id.startswith(_COMP_PREFIX) else dim_id


def _num(x) -> float | None:
    return None if x is None else float(x)


def gate_coordinates(gate, labels: Mapping[str, str] | None = None) -> dict:
    """A gate as plain data on its gate scale: a rectangle ``{channel: [min, max]}`` (None: open),
    a polygon ``{"channels": [x, y], "vertices": [[x, y], ...]}``, a boolean ``{"op": ..., "refs":
    ["path/gate" or "not path/gate", ...]}``. ``labels``: channel -> panel marker; a channel with
    one is named ``"CD38 (FITC-A)"``. FlowKit's gates (a workspace) and mrdflow's (placed gates)
    alike: both name their kind ``gate_type``."""

    def name(dim_id: str) -> str:
        ch = _channel(dim_id)
        return f"{labels[ch]} ({ch})" if labels and labels.get(ch, ch) != ch else ch

    kind = getattr(gate, "gate_type", None)
    if kind == "RectangleGate":
        return {name(d.id): [_num(d.min), _num(d.max)] for d in gate.dimensions}
    if kind == "PolygonGate":
        return {"channels": [name(d.id) for d in gate.dimensions],
                "vertices": [[float(v) for v in vertex] for vertex in gate.vertices]}
    if kind == "BooleanGate":
        refs = []
        for r in gate.gate_refs:
            path = "/".join([*(p for p in r["path"] if p != "root"), r["ref"]])
            refs.append(("not " if r.get("complement") else "") + path)
        return {"op": gate.type, "refs": refs}
    raise ReviewError(f"unsupported gate type {type(gate).__name__} ({gate.gate_name!r})")


def _differs(a: dict, b: dict) -> bool:
    if a.keys() != b.keys():
        return True
    for k in a:
        x, y = a[k], b[k]
        if k in ("op", "refs", "channels"):
            if x != y:
                return True
            continue
        xs, ys = np.array(x, dtype=object).ravel(), np.array(y, dtype=object).ravel()
        if xs.shape != ys.shape:
            return True
        for u, v in zip(xs, ys, strict=True):
            if (u is None) != (v is None) or (u is not None and abs(float(u) - float(v)) > TOLERANCE):
                return True
    return False


def _path_name(gate_id: str, path: Sequence[str]) -> str:
    return "/".join([*(p for p in path if p != "root"), gate_id])


def compare_gates(data, reviewed, *, where: str, tube: str, labels: Mapping[str, str] | None = None
                  ) -> list[GateChange]:
    """The gates of ``reviewed`` that differ from ``data`` (both FlowKit ``GatingStrategy``).

    Every data-driven gate must be in the reviewed workspace under the same full path: a missing
    one (renamed or removed) is a :class:`ReviewError` naming ``where`` (workspace and sample) and
    the gate. A gate the reviewer added is ignored (no read-out counts in it), as are the helper
    populations the export writes for FlowJo booleans (``mrdflow.gating._flowjo_out.HELPER_SUFFIX``).
    A gate of another kind is ``redefined``. ``labels``: as for :func:`gate_coordinates`.
    """
    data_ids = list(data.get_gate_ids())
    have = set(reviewed.get_gate_ids())
    missing = [f"{g!r} (at {_path_name(g, p)})" for g, p in data_ids if (g, p) not in have]
    if missing:
        from mrdflow.gating._flowjo_out import HELPER_SUFFIX

        rev_names = sorted({g for g, _ in have} - {g for g, _ in data_ids} - {g for g, _ in have
                                                                              if g.endswith(HELPER_SUFFIX)})
        hint = f"; gates in the workspace that mrdflow did not write: {rev_names}" if rev_names else ""
        raise ReviewError(f"{where}: gate(s) {', '.join(missing)} not in the reviewed workspace: renamed, moved "
                          f"under another parent or removed by the reviewer{hint}. The read-outs count in these "
                          "gates by name: restore them in FlowJo (or review a fresh export) and save")
    changes = []
    for gid, path in data_ids:
        a = data.get_gate(gid, gate_path=path)
        b = reviewed.get_gate(gid, gate_path=path)
        ca, cb = gate_coordinates(a, labels), gate_coordinates(b, labels)
        if getattr(a, "gate_type", None) != getattr(b, "gate_type", None) or "op" in ca and ca != cb:
            kind = "redefined"
        elif _differs(ca, cb):
            kind = "moved"
        else:
            continue
        changes.append(GateChange(tube, gid, _path_name(gid, path), kind, ca, cb))
    return changes


def _transform_of(strategy, dim):
    ref = dim.transformation_ref
    return None if ref is None else strategy.get_transform(ref)


def _same_transform(a, b) -> bool:
    if a is None or b is None:
        return a is None and b is None
    x, y = np.asarray(a.apply(_PROBE.copy()), float), np.asarray(b.apply(_PROBE.copy()), float)
    return bool(np.allclose(x, y, rtol=0, atol=1e-6, equal_nan=True))


def check_transforms(data, reviewed, *, where: str, panel: str) -> None:
    """Every dimension of every gate must have the same transform in both (compared by value on
    a range of channel values): the coordinates are read on that scale. Otherwise a
    :class:`ReviewError` naming the gate and channel."""
    have = set(reviewed.get_gate_ids())
    for gid, path in data.get_gate_ids():
        if (gid, path) not in have:
            continue
        a, b = data.get_gate(gid, gate_path=path), reviewed.get_gate(gid, gate_path=path)
        dims_b = {_channel(d.id): d for d in getattr(b, "dimensions", ())}
        for d in getattr(a, "dimensions", ()):
            other = dims_b.get(_channel(d.id))
            if other is None:
                raise ReviewError(f"{where}: gate {_path_name(gid, path)!r} no longer reads channel {_channel(d.id)!r} "
                                  f"(the reviewed gate reads {sorted(dims_b)})")
            ta = _transform_of(data, d)
            # FlowJo keeps a transform per parameter and per compensated parameter ("Comp-"); FlowKit
            # gates with one of them, FlowJo displays the compensated one: both must be the panel's.
            xforms = getattr(reviewed, "transformations", {}) or {}
            candidates = [_transform_of(reviewed, other)] + [xforms[k] for k in (_COMP_PREFIX + _channel(d.id),)
                                                             if k in xforms and other.transformation_ref is not None]
            tb = next((t for t in candidates if not _same_transform(ta, t)), None)
            if tb is not None:
                raise ReviewError(f"{where}: gate {_path_name(gid, path)!r} channel {_channel(d.id)!r} has transform "
                                  f"{tb!r} in the workspace, not the panel's {ta!r} (config panels.{panel}.transform): "
                                  "set it back in FlowJo, or change the panel's transform and review a fresh export")


def check_compensation(reviewed, compensation: Any, *, where: str, panel: str) -> None:
    """The matrix the reviewed gates use must be the one the pipeline applied
    (``compensation``: ``OpenTube.compensation`` with ``detectors`` and ``spill``, or None when
    the tube is not compensated): same detectors, spillover equal within 1e-6. Otherwise a
    :class:`ReviewError`."""
    refs = set()
    raw_detectors = set()  # detectors a reviewed gate reads without compensation
    detectors = set(compensation.detectors) if compensation is not None else set()
    for gid, path in reviewed.get_gate_ids():
        for d in getattr(reviewed.get_gate(gid, gate_path=path), "dimensions", ()):
            if d.compensation_ref not in (None, "uncompensated"):
                refs.add(d.compensation_ref)
            elif _channel(d.id) in detectors:
                raw_detectors.add(_channel(d.id))
    if raw_detectors:
        raise ReviewError(f"{where}: the workspace reads {sorted(raw_detectors)} uncompensated, but the pipeline "
                          f"compensates them ({compensation.source}; config panels.{panel}.compensation): set the "
                          "sample's compensation back to the acquisition-defined matrix in FlowJo")
    if compensation is None:
        if refs:
            raise ReviewError(f"{where}: the workspace compensates with {sorted(refs)}, but the pipeline does not "
                              f"compensate this tube (config panels.{panel}.compensation)")
        return
    ours = {(r, c): float(compensation.spill[i][j]) for i, r in enumerate(compensation.detectors)
            for j, c in enumerate(compensation.detectors)}
    for ref in sorted(refs):
        if ref == "FCS":
            continue  # the file's own $SPILLOVER, as the pipeline applies it
        m = reviewed.get_comp_matrix(ref)
        dets = list(m.detectors)
        if set(dets) != set(compensation.detectors):
            raise ReviewError(f"{where}: the workspace's compensation {ref!r} covers detectors {dets}, the pipeline's "
                              f"{list(compensation.detectors)} ({compensation.source})")
        theirs = {(r, c): float(m.matrix[i][j]) for i, r in enumerate(dets) for j, c in enumerate(dets)}
        worst = max(theirs, key=lambda k: abs(theirs[k] - ours[k]))
        if abs(theirs[worst] - ours[worst]) > 1e-6:
            raise ReviewError(f"{where}: the workspace's compensation {ref!r} differs from the one the pipeline "
                              f"applied ({compensation.source}): spillover {worst[0]} into {worst[1]} is "
                              f"{theirs[worst]:.6g} in the workspace, {ours[worst]:.6g} in the pipeline. mrdflow "
                              f"compensates by config panels.{panel}.compensation: change that, or set the "
                              "matrix back in FlowJo")

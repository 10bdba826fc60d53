"""A rare population's gate placed on every event that could be in it, not on a sample.

A streamed tube's gates are placed on a uniform sample of its events (10^6 by default). That is
plenty for the populations that make up a tube, and too few for the one the tube is for: at an MRD
of 10^-5, 10^7 events hold ~100 plasma cells and a 10^6-event sample ~10, too few for a valley.
So the gates of the populations a sample keeps whole (:data:`~mrdflow.sample._analysis.STREAM_KEEP`:
the PC gate) are placed a second time, on the sample plus every event of the tube in their
*candidate region*: the events their bound rules read. A rule reads, among its parent's events,
those inside its ``given`` ranges, or (``within_gate``) inside the gate's other bounds; the region
is the union of those boxes, the other bounds taken at their loosest (the lowest of the sample's
placed value and the rules' window ends, less a margin). Inside the region the placement then sees
every event of the tube, as :func:`~mrdflow.gating.gate_tube` on the whole tube would; outside it,
the sample (the negative population a cut is placed above is found on the sample's events alone,
see ``Placement.uniform``).

The second placement is taken only when it provably read within the region: every ``within_gate``
box at the gate's final bounds inside its region box, and the final gate inside one of the boxes
(so every event of the gate and of its children was collected, and their counts and kept events
come from the collected events exactly). Otherwise the sample's placement stands and the tube's
QC says why. A gate whose rules read the whole parent (no ``given``, no ``within_gate``) has no
region smaller than the tube and is placed on the sample only.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from mrdflow.gating._bounds import BOUND_METHODS
from mrdflow.gating._model import RectangleGate, Strategy
from mrdflow.gating._result import GateStep
from mrdflow.gating._rules import BoundRule

__all__ = ["CandidatePlan", "candidate_plans", "region_strategy"]

Box = dict[str, tuple[float | None, float | None]]

#: How far below the loosest placed or window value a ``within_gate`` region reaches (gate units):
#: room for the second placement to move the other bound down without leaving the region.
MARGIN = 0.05


@dataclass
class CandidatePlan:
    """One kept gate to place on its candidates: its ``subtree`` (the gate and its descendants, in
    gating order), the region's ``boxes`` and, per ``within_gate`` bound, the box it may read."""

    gate_id: str
    subtree: list[str]
    boxes: list[Box]
    within: dict[str, Box] = field(default_factory=dict)

    def covers(self, steps: Mapping[str, GateStep]) -> str | None:
        """None when the placed ``steps`` read within the region; else why not."""
        gate = steps[self.gate_id]
        for key, region in self.within.items():
            dim = key.rsplit(".", 1)[0]
            read = {d: b for d, b in gate.bounds.items() if d != dim}
            if not _inside(read, region):
                return f"{self.gate_id} {key} read events outside its candidates ({_fmt(read)} not in {_fmt(region)})"
        if not any(_inside(gate.bounds, box) for box in self.boxes):
            boxes = " or ".join(map(_fmt, self.boxes))
            return f"{self.gate_id} {_fmt(gate.bounds)} is not inside its candidates {boxes}"
        return None


def _fmt(box: Box) -> str:
    return ", ".join(f"{d} [{'-' if lo is None else f'{lo:.3f}'}, {'-' if hi is None else f'{hi:.3f}'})"
                     for d, (lo, hi) in box.items())


def _inside(bounds: Box, box: Box) -> bool:
    """Whether the rectangle ``bounds`` lies inside ``box`` (dimensions ``box`` leaves out: any)."""
    for dim, (blo, bhi) in box.items():
        lo, hi = bounds.get(dim, (None, None))
        if blo is not None and (lo is None or lo < blo):
            return False
        if bhi is not None and (hi is None or hi > bhi):
            return False
    return True


def _chain(rule: BoundRule) -> list[BoundRule]:
    out, todo = [], [rule]
    while todo:
        r = todo.pop()
        out.append(r)
        todo += [x for x in (r.fallback, r.floor) if x is not None]
    return out


def _lowest(rules: Sequence[BoundRule], placed: float | None, side: str) -> float | None:
    """The loosest a bound can plausibly go: below the sample's value and every window's end."""
    if placed is None:
        return None
    ends = [placed] + [r.window[0 if side == "min" else 1] for r in rules if r.window is not None]
    return (min(ends) - MARGIN) if side == "min" else (max(ends) + MARGIN)


def _plan(template, gate_id: str, step: GateStep) -> CandidatePlan | None:
    rule = template.rules.get(gate_id)
    if rule is None or not rule.bounds or step.kind != "rect":
        return None
    order = template.gate_order()
    subtree = [g for g, path in order if g == gate_id or gate_id in path]
    for g in subtree[1:]:  # descendants read their parent's events; anything else is outside
        rules = template.rules.get(g)
        for br in rules.bounds.values() if rules else ():
            if any(r.population not in (None, *subtree) or r.exclude for r in _chain(br)):
                return None
    by_dim: dict[str, list[tuple[str, BoundRule]]] = {}
    for key, br in rule.bounds.items():
        dim, side = key.rsplit(".", 1)
        by_dim.setdefault(dim, []).extend((side, r) for r in _chain(br))
    boxes: list[Box] = []
    within: dict[str, Box] = {}
    for key, br in rule.bounds.items():
        dim = key.rsplit(".", 1)[0]
        for r in _chain(br):
            if not BOUND_METHODS[r.method].data:
                continue
            if r.population is not None or r.exclude:
                return None
            if r.within_gate:
                box: Box = {}
                for other, (lo, hi) in step.bounds.items():
                    if other == dim:
                        continue
                    rules = by_dim.get(other, [])
                    box[other] = (_lowest([x for s, x in rules if s == "min"], lo, "min"),
                                  _lowest([x for s, x in rules if s == "max"], hi, "max"))
                if not box or all(b == (None, None) for b in box.values()):
                    return None
                within[key] = box
                boxes.append(box)
            elif r.given:
                boxes.append(dict(r.given))
            else:
                return None  # reads the whole parent
    unique = [b for i, b in enumerate(boxes) if b not in boxes[:i]]
    return CandidatePlan(gate_id, subtree, unique, within) if unique else None


def candidate_plans(template, steps: Sequence[GateStep], keep: Sequence[str], view) -> list[CandidatePlan]:
    """The kept gates (``keep``) that have a candidate region, from their placement on the
    sample (``steps``); ``view`` refuses region dimensions the panel reads on shared channels."""
    by_id = {s.gate_id: s for s in steps}
    plans = []
    for gid in keep:
        if gid not in by_id:
            continue
        plan = _plan(template, gid, by_id[gid])
        if plan is None or any(view.shares(d) for box in plan.boxes for d in box):
            continue
        plans.append(plan)
    return plans


def region_strategy(plans: Sequence[CandidatePlan], dimension, transformations: Mapping) -> tuple[Strategy, list[str]]:
    """A strategy whose top-level rectangles are the plans' boxes (``dimension(dim, lo, hi)`` makes
    a placed gate's dimension, naming ``transformations``) and their ids: an event is a candidate
    when it is in any of them."""
    s = Strategy()
    for tid, t in transformations.items():
        s.add_transform(tid, t)
    ids = []
    for plan in plans:
        for i, box in enumerate(plan.boxes):
            gid = f"candidates_{plan.gate_id}_{i}"
            s.add_gate(RectangleGate(gid, tuple(dimension(d, lo, hi) for d, (lo, hi) in box.items())), ("root",))
            ids.append(gid)
    return s, ids


def boxes_as_json(plans: Sequence[CandidatePlan]) -> dict[str, list[dict]]:
    """{gate id: its region's boxes} for the tube's QC record."""
    return {p.gate_id: [{d: list(b) for d, b in box.items()} for box in p.boxes] for p in plans}


def subtree_ids(plans: Sequence[CandidatePlan]) -> set[str]:
    return {g for p in plans for g in p.subtree}

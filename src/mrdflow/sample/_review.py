"""Which read-outs rest on which gates, and the read-outs to review when gate placement is unsure.

A read-out counts events in a few gates (:func:`readouts`). It depends on those gates and on
everything they depend on in the tube's gating template (:func:`gate_dependencies`): every
ancestor, the operands of a boolean gate, and the gates whose events a bound rule reads
(``population``, also through a rule's ``fallback`` and ``floor``). When placement is unsure of a
gate (its :class:`mrdflow.gating.GateStep` carries a ``review`` reason), every read-out depending
on that gate is listed in ``review_needed`` (:func:`review_needed`). Its number is kept and marked:
never dropped, never reported as plain ``ok``.

The gating objects are read defensively (``getattr``): a step without ``evidence`` or ``review``
is a step placement was sure of.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from mrdflow.metrics import GateReview, ReviewItem
from mrdflow.sample._cart import CART_GATES
from mrdflow.sample._mrd import HEMODILUTION_GATES, PC_GATE

if TYPE_CHECKING:
    from mrdflow.gating import GatingTemplate, StreamedGating, TubeGating

__all__ = ["Readout", "readouts", "TubeReview", "gate_dependencies", "gate_evidence", "gate_reviews",
           "readout_reason", "review_needed"]

PC_PCT = "PC %"
ABERRANT_PC = "aberrant PCs"
MRD_CALL = "MRD call"
KAPPA_LAMBDA = "κ/λ"
NKG2A_PCT = "NKG2A %"
CART_COUNT = "CAR-T cells/µL"


@dataclass(frozen=True)
class Readout:
    """A read-out and the gates it counts in.

    name: as written in ``review_needed``; feeds: the panel read-out (``Panel.readout``: ``pc_mrd``,
    ``nk``, ``cart``) whose tubes give it; gates: groups of gate ids it counts in, a group only in a
    tube whose template has all of its gates, as the read-out's code uses them (κ/λ: NGF tube 2;
    the hemodilution check: mast cells, B-cell precursors and nucleated red cells of tube 1, not
    tube 2's nucleated red cells).
    """

    name: str
    feeds: str
    gates: tuple[tuple[str, ...], ...]


def readouts() -> tuple[Readout, ...]:
    """Every read-out and its own gates, in the order ``review_needed`` lists them; the gates
    these depend on come from the template. (A function: the NK module loads FlowKit, which the
    MRD stage, importing this module for the read-out names, must not.)"""
    from mrdflow.sample._nk import NK_GATES

    return (
        Readout(PC_PCT, "pc_mrd", ((PC_GATE,),)),  # PCs / nucleated cells (Nucleated: the PC gate's ancestor)
        Readout(ABERRANT_PC, "pc_mrd", ((PC_GATE,),)),  # aberrant PCs are PC-gate events
        Readout(MRD_CALL, "pc_mrd", ((PC_GATE,), HEMODILUTION_GATES)),  # aberrant PCs; the hemodilution check
        Readout(KAPPA_LAMBDA, "pc_mrd", (("PC_kappa", "PC_lambda"),)),
        Readout(NKG2A_PCT, "nk", (NK_GATES,)),
        Readout(CART_COUNT, "cart", (CART_GATES,)),
    )


def gate_dependencies(template: GatingTemplate) -> dict[str, frozenset[str]]:
    """Per gate id of ``template``: the gate itself and every gate its events depend on (ancestors,
    boolean operands, gates a bound rule reads through ``population`` or ``exclude``, also in its
    ``fallback`` or ``floor``)."""
    out: dict[str, frozenset[str]] = {}
    for gid, path in template.gate_order():  # a gate's dependencies come before it
        gate = template.strategy.get_gate(gid, gate_path=path)
        direct = set(path[1:])  # path[0] is FlowKit's 'root', not a gate
        direct |= {ref["ref"] for ref in getattr(gate, "gate_refs", None) or ()}
        rule = template.rules.get(gid)
        if rule is not None:
            todo = list(rule.bounds.values())
            while todo:
                bound = todo.pop()
                if bound.population:
                    direct.add(bound.population)
                direct.update(bound.exclude)  # gates whose events it leaves out
                todo += [b for b in (bound.fallback, bound.floor) if b is not None]
        out[gid] = frozenset({gid}.union(*(out.get(d, {d}) for d in direct)))
    return out


def gate_evidence(g: TubeGating | StreamedGating) -> dict[str, dict[str, dict[str, Any]]]:
    """Per placed gate, the evidence of each placed bound (bound key such as ``CD38.min`` -> the
    evidence's fields); gates without evidence are left out."""
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for step in g.steps:
        evidence = getattr(step, "evidence", None) or {}
        if evidence:
            out[step.gate_id] = {key: (ev.as_dict() if hasattr(ev, "as_dict") else dict(ev))
                                 for key, ev in evidence.items()}
    return out


def gate_reviews(g: TubeGating | StreamedGating) -> tuple[GateReview, ...]:
    """The gates placement was unsure of, each with its one-line reason, in gating order."""
    reviews = getattr(g, "reviews", None)
    pairs = reviews() if callable(reviews) else [(s.gate_id, getattr(s, "review", None)) for s in g.steps]
    return tuple(GateReview(str(gate), str(reason)) for gate, reason in pairs if reason)


@dataclass(frozen=True)
class TubeReview:
    """One gated tube as the review sees it: the read-out its panel feeds (None: none), its
    gates' dependencies (:func:`gate_dependencies` of its template) and the unsure gates."""

    tube: str
    feeds: str | None
    dependencies: Mapping[str, frozenset[str]]
    reviews: tuple[GateReview, ...]


def review_needed(tubes: Sequence[TubeReview]) -> list[ReviewItem]:
    """Every read-out resting on an unsure gate, one item per (read-out, tube, gate), read-outs in
    :func:`readouts` order. A reviewed gate the template does not know (e.g. a tube-level check)
    marks every read-out of its tube: what it affects cannot be told, so nothing is assumed sure."""
    out: list[ReviewItem] = []
    for readout in readouts():
        for t in tubes:
            own = [g for group in readout.gates if set(group) <= set(t.dependencies) for g in group]
            if t.feeds != readout.feeds or not own or not t.reviews:
                continue
            needed = frozenset().union(*(t.dependencies[g] for g in own))
            for r in t.reviews:
                if r.gate in needed or r.gate not in t.dependencies:
                    out.append(ReviewItem(readout.name, r.gate, t.tube, r.reason))
    return out


def readout_reason(items: Sequence[ReviewItem], readout: str) -> str:
    """The reasons ``readout`` needs review, as one line ('' when it does not)."""
    return "; ".join(f"{i.tube} {i.gate}: {i.reason}" for i in items if i.readout == readout)

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
re-applying the exported ``gates.xml`` with FlowKit gives the same counts. The template and its rules
live in :mod:`._template` and :mod:`._rules`, the placement methods in :mod:`._placement` (gates)
and :mod:`._bounds` (rectangle bounds), the tube's events in :mod:`._view`, streaming in
:mod:`._streaming`.
"""

from __future__ import annotations

from mrdflow.gating._engine import GateEngine
from mrdflow.gating._placement import AllEvents, Placement
from mrdflow.gating._qc import QCSettings
from mrdflow.gating._result import GateStep, TubeGating
from mrdflow.gating._template import GatingTemplate
from mrdflow.gating._view import TubeView

__all__ = ["gate_tube"]

_QC_DEFAULTS = QCSettings()  # frozen: one instance serves every call
#: GateStep kinds of the gates a static (FlowJo) template may hold, by FlowKit class name.
_STATIC_KINDS = {"RectangleGate": "rect", "PolygonGate": "polygon", "BooleanGate": "boolean"}


def gate_tube(template: GatingTemplate, view: TubeView, *, qc_settings: QCSettings = _QC_DEFAULTS,
              fmo: TubeGating | None = None, chunk_size: int = 1 << 18,
              events: AllEvents | None = None) -> TubeGating:
    """Place the template's gates on ``view`` and evaluate them exactly (FlowKit semantics).

    ``fmo``: the gated FMO control tube of the same sample, used by ``fmo`` bound rules.
    ``events``: facts about every event of the tube when ``view`` holds a subsample of it.
    """
    if template.static:
        return _gate_static(template, view, chunk_size)
    placer = Placement(template, view, qc_settings, fmo, events)
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


def _gate_static(template: GatingTemplate, view: TubeView, chunk_size: int) -> TubeGating:
    """Apply a template as drawn (FlowJo workspace): no placement, exact FlowKit semantics."""
    engine = GateEngine(template.strategy, chunk_size=chunk_size)
    comp = view.compensation
    sample_comp = (list(comp.detectors), comp.spill) if comp is not None else None
    result = engine.evaluate(view.raw, view.fcs.pnn, sample_comp=sample_comp, pns=view.fcs.pns)
    # A drawn gate names channels ($PnN, FlowJo's "Comp-" prefix dropped); the read-outs name panel
    # markers: a channel read as one marker goes by the marker's name.
    marker_of = view.resolved.marker_of
    steps = []
    for gid, path in template.gate_order():
        # Counted by full path: a workspace may use one gate name under two parents.
        gate = template.strategy.get_gate(gid, gate_path=path)
        kind = _STATIC_KINDS.get(type(gate).__name__, "other")
        dims = tuple(d.id for d in getattr(gate, "dimensions", []) or [])
        names = [marker_of.get(d.removeprefix("Comp-"), d) for d in dims]
        bounds = ({n: (_coord(d.min), _coord(d.max)) for n, d in zip(names, gate.dimensions, strict=True)}
                  if kind == "rect" else {})
        vertices = [tuple(float(x) for x in v) for v in gate.vertices] if kind == "polygon" else []
        parent = path[-1] if len(path) > 1 else None
        full = (*path, gid)
        steps.append(GateStep(gid, parent, kind, dims, bounds=bounds, vertices=vertices,
                              how={"": f"as drawn in {template.source}"},
                              count=int(result.count(full)),
                              parent_count=int(result.count(path)) if parent else result.n_events,
                              static=True, path=full))
    return TubeGating(template.strategy, result, steps, view, {})


def _coord(x) -> float | None:
    return None if x is None else float(x)

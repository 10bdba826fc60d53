"""Placement rules of a gating template (``resources/gating/<panel>.yaml``) as typed values, and the
error every gating step raises.

A gate's rule names a gate-level method (``time_qc``, ``singlets``: entries of
:data:`~mrdflow.gating._placement.GATE_PLACERS`), or ``bounds`` with one :class:`BoundRule` per
placed rectangle bound (its ``method`` a name in :data:`~mrdflow.gating._bounds.BOUND_METHODS`), or
``fixed`` (the template as drawn).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from mrdflow.errors import MrdflowError

__all__ = ["BoundRule", "GateRule", "GatingError"]


class GatingError(MrdflowError):
    """A gating template or rule is invalid, or a tube cannot be gated (names file/gate/cause)."""


@dataclass(frozen=True)
class BoundRule:
    """How one bound (``<dimension>.min`` or ``.max``) of a rectangle gate is placed.

    method: a name in :data:`~mrdflow.gating._bounds.BOUND_METHODS`: ``valley`` (deepest density
    minimum inside ``window``), ``tail`` (mode of the population below + ``k`` robust SDs of its
    lower half, clipped to ``window``), ``gmm`` (two touching populations: equal posterior of a
    2-component Gaussian mixture), ``fmo`` (the ``quantile`` of the FMO tube's events in the same
    gate, clipped to ``window``; falls back to ``fallback`` when the sample has no FMO), ``fixed``
    (template value), ``brightest`` (the valley below the brightest population on the axis, e.g.
    counting beads; the window is its prior). ``window`` and ``given`` are in gate units.
    ``given``: restrict the events used for the density to ranges on other dimensions, e.g.
    ``{CD138: [0.35, null]}``. ``population``: use that gate's events instead of the parent's.
    ``exclude``: leave out the events of these gates (placed first), e.g. ``[Beads]`` takes the
    counting beads out of a scatter density wherever the bead gate put its cut. ``within_gate``:
    use only the events inside the gate's bounds on its other dimensions as placed before this
    one (rules are placed in the order the YAML lists them), e.g. a PC gate's CD138 cut placed
    among the events above its CD38 cut, wherever the data put that. ``floor`` (valley and tail
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
    exclude: tuple[str, ...] = ()
    within_gate: bool = False
    fallback: BoundRule | None = None
    floor: BoundRule | None = None


@dataclass(frozen=True)
class GateRule:
    """Placement of one template gate: ``method`` is ``bounds`` (rectangle, per-bound rules), a
    gate-level method (``time_qc``, ``singlets``) or ``fixed``."""

    gate_id: str
    method: str
    bounds: Mapping[str, BoundRule] = field(default_factory=dict)

"""Placing one bound of a rectangle gate: the table of bound methods.

A rule's bound (``CD38.min: {method: valley, window: [0.55, 0.80]}`` in ``<panel>.yaml``) names its
method in :data:`BOUND_METHODS`. A method is a function of a :class:`BoundContext` (the events the
bound is placed on, its search window, the FMO tube, ...) that returns ``(value, note)``: the bound
in gate units and how it was placed (``GateStep.how``: the plots' captions and the notes in
``metrics.json``). To add a method, write that function and add it to :data:`BOUND_METHODS` under
the name a template's ``method:`` gives; the template loader accepts every name in the table.

Every placed bound gets its :class:`~mrdflow.gating._evidence.BoundEvidence` (:func:`place_bound`
returns a :class:`PlacedBound`). A ``valley`` bound the evidence calls uncertain is placed again by
its rule's ``fallback`` (default: ``populations``, the valley between the populations found over
the whole axis nearest the window); the fallback's value replaces the valley's when it found a
valley between two populations, and the bound is sure again when that valley is deep
(:data:`~mrdflow.gating._evidence.DEEP_VALLEY`) and passes the same checks.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import numpy as np

from mrdflow.gating._density import density, threshold_valley
from mrdflow.gating._evidence import (
    DEEP_VALLEY,
    MIN_EVENTS,
    RARE_EVENTS,
    BoundEvidence,
    above_negative_cut,
    assess,
    brightest_valley,
    fixed_evidence,
    missed_population,
    negative_mode,
    populations_modes,
    populations_valley,
    rise_depth,
    tail_evidence,
)
from mrdflow.gating._rules import BoundRule, GatingError

if TYPE_CHECKING:
    from mrdflow.gating._placement import Placement

__all__ = ["BOUND_METHODS", "BoundContext", "BoundMethod", "PlacedBound", "place_bound"]


@dataclass
class BoundContext:
    """One bound being placed, as a bound method sees it.

    ``placement``: the walk over the template (the view, the masks of gates placed so far, the FMO
    tube's gating). ``gate_id``, ``dim``, ``side`` (``"min"`` or ``"max"``) and ``rule`` name the
    bound; ``parent_mask``: the gate's parent events (bool per event); ``bounds``: the gate's
    bounds so far ({dim: (min, max)}, gate units: template values and the bounds placed before this
    one). For a method that places from data, ``values`` are ``dim``'s values (gate units,
    float32) of the events the bound is placed on (the parent's, or ``rule.population``'s,
    within ``rule.given``; ``selection``: which events those are, bool per event), ``window`` the
    search window (gate units; its lower end raised by a ``floor`` rule) and ``floor_note`` what
    the floor did (appended to the note). ``evidence``: a
    method that places by another rule (``fmo`` without an FMO tube) leaves that rule's evidence
    here; otherwise :func:`place_bound` assesses the value itself.
    """

    placement: Placement
    gate_id: str
    dim: str
    side: str
    rule: BoundRule
    parent_mask: np.ndarray
    bounds: Mapping[str, tuple[float | None, float | None]]
    values: np.ndarray | None = None
    selection: np.ndarray | None = None
    window: tuple[float, float] | None = None
    floor_note: str = ""
    evidence: BoundEvidence | None = None

    @property
    def source(self) -> str:
        """The template, as messages name it."""
        return self.placement.template.source

    def place(self, rule: BoundRule) -> tuple[float, str]:
        """Place this bound by another rule (a fallback or a floor); its evidence is left in
        ``self.evidence``."""
        placed = place_bound(self.placement, self.gate_id, self.dim, self.side, rule, self.parent_mask, self.bounds)
        self.evidence = placed.evidence
        return placed.value, placed.note


#: A bound method: the context in, (bound in gate units, note) out.
BoundPlacer = Callable[[BoundContext], tuple[float, str]]


@dataclass(frozen=True)
class BoundMethod:
    """An entry of :data:`BOUND_METHODS`.

    ``place``: the function. ``data``: it places from the events (its rule needs a ``window``, and
    the context carries ``values``, the window and any floor); False for ``fixed``. ``floor``: a
    rule of this method may carry a ``floor``.
    """

    place: BoundPlacer
    data: bool = True
    floor: bool = False


@dataclass(frozen=True)
class PlacedBound:
    """A placed bound: ``value`` (gate units), ``note`` (``GateStep.how``) and its ``evidence``.

    ``recheck``: for a bound whose verdict depends on the gate's other bounds (a lowered
    ``above_negative`` cut is unsure when the gate takes in another lineage with it), the
    evidence again from the gate's final bounds; the rectangle placer calls it once every bound
    of the gate is placed (a later bound, e.g. CD138 placed ``within_gate``, may leave that
    lineage out)."""

    value: float
    note: str
    evidence: BoundEvidence
    recheck: Callable[[Mapping[str, tuple[float | None, float | None]]], BoundEvidence] | None = None


def place_bound(placement: Placement, gate_id: str, dim: str, side: str, rule: BoundRule,
                parent_mask: np.ndarray, bounds: Mapping[str, tuple[float | None, float | None]]) -> PlacedBound:
    """Place bound ``<dim>.<side>`` of gate ``gate_id`` by ``rule``, with its evidence; an
    uncertain valley bound is placed again by its fallback (module docstring)."""
    method = BOUND_METHODS.get(rule.method)
    if method is None:
        raise GatingError(f"gate {gate_id!r}: unknown method {rule.method!r}")
    ctx = BoundContext(placement, gate_id, dim, side, rule, parent_mask, bounds)
    if not method.data:
        t, note = method.place(ctx)
        return PlacedBound(t, note, fixed_evidence(t))
    ctx.selection = _selection(placement, rule, parent_mask)
    if rule.within_gate:
        ctx.selection &= _in_gate_elsewhere(ctx, bounds)
    ctx.values = placement.view.values(dim)[ctx.selection]
    ctx.window = rule.window
    if rule.floor is not None:
        f, fnote = ctx.place(rule.floor)
        ctx.evidence = None  # the floor's evidence is not this bound's
        w = rule.window
        ctx.window = (min(max(w[0], f), w[1] - 1e-3 * (w[1] - w[0])), w[1])
        ctx.floor_note = f"; floor {f:.3f} ({rule.floor.population or 'parent'} {fnote})"
    t, note = method.place(ctx)
    ev = ctx.evidence if ctx.evidence is not None else assess(rule.method, ctx.values, t, ctx.window, ctx.side)
    if ev.sure and rule.method == "valley" and side == "min" and rule.fallback is not None \
            and rule.fallback.method == "above_negative":
        negative = _negative(ctx)
        missed = missed_population(ctx.values, t, ctx.window, negative)
        if missed is not None and _same_kind(ctx, negative, t):
            ev = replace(ev, sure=False, reason=missed)
        else:
            rare = _rare_like_kept(ctx, negative, t)
            if rare is not None:
                ev = replace(ev, sure=False, reason=rare)
    if ev.sure or rule.method != "valley":
        return PlacedBound(t, note, ev)
    return _fall_back(ctx, PlacedBound(t, note, ev))


def _fall_back(ctx: BoundContext, primary: PlacedBound) -> PlacedBound:
    """An uncertain valley bound placed by its rule's ``fallback`` (default ``populations``).

    The fallback's value is taken when it found a valley between two populations (the generic
    fallback's only within one window width of the window); the bound is sure when that valley is
    deep and passes the checks (judged on the whole axis: the fallback may leave the window by
    design). Otherwise the primary value stands, still uncertain.
    """
    rule = ctx.rule
    fb = rule.fallback or BoundRule("populations", window=rule.window, given=rule.given, population=rule.population)
    if fb.method == "tail":
        return _tail_fall_back(ctx, primary, fb)
    t, note = BOUND_METHODS[fb.method].place(ctx)
    why = primary.evidence.reason
    if np.isfinite(t) and _drops_a_population(ctx, primary.value, t):
        note = f"{note}, rejected: it would leave out a population the gate held"
        t = float("nan")
    if not np.isfinite(t):
        ev = replace(primary.evidence, fallback=f"{fb.method}: {note} (tried because {why})")
        return PlacedBound(primary.value, f"{primary.note}; {fb.method}: {note}", ev)
    whole = assess(fb.method, ctx.values, t, (0.0, 1.0), ctx.side)
    if fb.method == "above_negative" and whole.valley_depth is None:
        # The candidates hold no negative population below the cut: judge the one-sided valley,
        # the rise from the cut to the population the gate keeps.
        depth, prominence = rise_depth(ctx.values, t, (0.0, 1.0))
        whole = replace(whole, valley_depth=depth, prominence=prominence)
    deep = whole.valley_depth is not None and whole.valley_depth >= DEEP_VALLEY
    w = ctx.window
    # The generic fallback (populations, no rule of its own) trusts the template's window as a prior:
    # a valley more than one window width away from it separates other populations than the ones
    # the template drew the gate between (e.g. a CD117-dim clone, not the CD117-bright mast cells),
    # so it is not taken. A rule's own fallback (above_negative) says where the
    # cut belongs whatever the window, and is judged by its valley alone.
    far = rule.fallback is None and max(w[0] - t, t - w[1], 0.0) > (w[1] - w[0])
    if far:
        # Its value would count those other populations as the gate's (a CD117+ clone as mast
        # cells): the primary value stands, unsure, and the fallback is only recorded.
        away = f"{max(w[0] - t, t - w[1]):.3f} from the window [{w[0]:.2f}, {w[1]:.2f}], more than its width"
        ev = replace(primary.evidence, fallback=f"{fb.method}: {note}, not taken: {away} (tried because {why})",
                     sure=False, reason=f"{why}; fallback {fb.method} {t:.3f}: {away}")
        return PlacedBound(primary.value, f"{primary.note}; {fb.method}: {note}, not taken ({away})", ev)
    sure = whole.sure and deep
    reason = None if sure else (
        f"{primary.evidence.reason}; fallback {fb.method} {t:.3f}: "
        + (whole.reason
           or f"valley depth {whole.valley_depth if whole.valley_depth is not None else 0:.2f} < {DEEP_VALLEY}"))
    ev = replace(whole, method=rule.method, window=(float(w[0]), float(w[1])),
                 edge_distance=float(min(abs(t - w[0]), abs(w[1] - t))),
                 fallback=f"{fb.method}: {note} (the valley {primary.value:.3f} was uncertain: {why})",
                 sure=sure, reason=reason)
    note = f"{note} (fallback: valley {primary.value:.3f} uncertain){ctx.floor_note}"
    if fb.method != "above_negative":
        return PlacedBound(t, note, ev)

    def recheck(gate_bounds: Mapping[str, tuple[float | None, float | None]]) -> BoundEvidence:
        taken_in = _unlike_taken_in(ctx, primary.value, t, gate_bounds) if ev.sure else None
        if taken_in is None:
            return ev
        return replace(ev, sure=False, reason=f"{primary.evidence.reason}; fallback {fb.method} {t:.3f}: {taken_in}")

    return PlacedBound(t, note, recheck(ctx.bounds), recheck)


def _tail_fall_back(ctx: BoundContext, primary: PlacedBound, fb: BoundRule) -> PlacedBound:
    """An uncertain valley bound placed again as the upper end of the population below it (a
    ``tail`` fallback: its ``k`` and ``window``, on the primary's events), and judged as a tail cut
    (:func:`~mrdflow.gating._evidence.tail_evidence`), not by a valley it does not have. A sure tail
    cut replaces the valley's value; an unsure one is only recorded and the valley's value stands,
    unsure."""
    why = primary.evidence.reason
    window = fb.window or ctx.window
    raw, note = _tail_value(ctx.values, fb.k)
    if not np.isfinite(raw):
        ev = replace(primary.evidence, fallback=f"{note} (tried because {why})")
        return PlacedBound(primary.value, f"{primary.note}; {note}", ev)
    t = min(max(raw, window[0]), window[1])
    if t != raw:
        note += f", clipped to window [{window[0]:.2f}, {window[1]:.2f}]"
    ev = tail_evidence(ctx.values, t, window, clipped=t != raw)
    if ev.sure and _drops_a_population(ctx, primary.value, t):
        ev = replace(ev, sure=False, reason=f"the tail cut {t:.3f} would leave out a population the gate held")
    tried = f"tail: {note} (the valley {primary.value:.3f} was uncertain: {why})"
    if not ev.sure:
        kept = replace(primary.evidence, fallback=f"{tried}; not taken: {ev.reason}",
                       reason=f"{why}; fallback tail {t:.3f}: {ev.reason}")
        return PlacedBound(primary.value, f"{primary.note}; tail: {note}, not taken ({ev.reason})", kept)
    ev = replace(ev, method=ctx.rule.method, fallback=tried)
    return PlacedBound(t, f"{note} (fallback: valley {primary.value:.3f} uncertain){ctx.floor_note}", ev)


def _selection(placement: Placement, rule: BoundRule, parent_mask: np.ndarray) -> np.ndarray:
    """The events a bound is placed on (bool per event): the parent's, or ``rule.population``'s,
    within the ``rule.given`` ranges on other dimensions, less the events of the gates in
    ``rule.exclude``."""
    base = placement.masks[rule.population] if rule.population else parent_mask
    sel = base.copy()
    for gid in rule.exclude:
        sel &= ~placement.masks[gid]
    for gdim, (lo, hi) in rule.given.items():
        v = placement.view.values(gdim)
        if lo is not None:
            sel &= v >= lo
        if hi is not None:
            sel &= v < hi
    return sel


# ---------------------------------------------------------------------------------------------
# The methods
# ---------------------------------------------------------------------------------------------

def _fixed(ctx: BoundContext) -> tuple[float, str]:
    """The template's own value."""
    lo, hi = ctx.bounds[ctx.dim]
    value = lo if ctx.side == "min" else hi
    if value is None:
        raise GatingError(f"{ctx.source}: gate {ctx.gate_id!r}: {ctx.dim}.{ctx.side} is fixed but the template "
                          "has no value")
    return float(value), "fixed (template)"


def _valley(ctx: BoundContext) -> tuple[float, str]:
    """The deepest density minimum inside the window."""
    v, window = ctx.values, ctx.window
    lo_r, hi_r = float(np.min(v)) if v.size else window[0], float(np.max(v)) if v.size else window[1]
    lo_r, hi_r = min(lo_r, window[0]) - 0.05, max(hi_r, window[1]) + 0.05
    t, kind = threshold_valley(v, lo_r, hi_r, search=window, fallback=None)
    return t, f"{kind} {t:.3f} in [{window[0]:.2f}, {window[1]:.2f}] ({v.size} events){ctx.floor_note}"


def _tail(ctx: BoundContext) -> tuple[float, str]:
    """Above the population's negative mode: mode + k robust SDs, clipped to the window."""
    t, note = _robust_tail(ctx.values, ctx.window, ctx.rule.k)
    return t, note + ctx.floor_note


def _gmm(ctx: BoundContext) -> tuple[float, str]:
    """Where two touching populations meet (equal posterior of a 2-component mixture)."""
    t, note = _gmm_threshold(ctx.values, ctx.window, seed=0)
    return t, note + ctx.floor_note


def _fmo(ctx: BoundContext) -> tuple[float, str]:
    """The ``quantile`` of the FMO tube's events in the same gate (or ``rule.population``),
    clipped to the window; the ``fallback`` rule without a usable FMO tube."""
    br, window, fmo = ctx.rule, ctx.window, ctx.placement.fmo
    gid, dim, side = ctx.gate_id, ctx.dim, ctx.side
    if fmo is None:
        if br.fallback is None:
            raise GatingError(f"{ctx.source}: gate {gid!r}: {dim}.{side} needs an FMO tube and has no fallback")
        t, note = ctx.place(br.fallback)
        return t, f"no FMO tube; {note}"
    ref_gate = br.population or ctx.placement.parent_of(gid)
    fmask = fmo.mask(ref_gate) if ref_gate else np.ones(fmo.view.n, bool)
    fv = fmo.view.values(dim)[fmask]
    if fv.size < 50:
        if br.fallback is None:
            raise GatingError(f"{ctx.source}: gate {gid!r}: FMO tube has only {fv.size} events in {ref_gate!r}")
        t, note = ctx.place(br.fallback)
        return t, f"FMO has {fv.size} events in {ref_gate}; {note}"
    q = float(np.quantile(fv, br.quantile if side == "min" else 1 - br.quantile))
    t = min(max(q, window[0]), window[1])
    note = f"FMO {100 * br.quantile:g}th percentile {q:.3f} of {fv.size} {ref_gate} events"
    if t != q:
        note += f", clipped to [{window[0]:.2f}, {window[1]:.2f}]"
    return t, note


def _drops_a_population(ctx: BoundContext, primary: float, t: float) -> bool:
    """Whether moving the cut from ``primary`` to ``t`` moves a population (a density mode) out
    of the gate. A fallback may bring into the gate a population the uncertain valley left out
    (CD38-dim plasma cells below a CD38 window), never take out one the gate held: that would
    trade one uncertain cut for a cut through the gate's own populations."""
    into_gate = t > primary if ctx.side == "min" else t < primary
    if not into_gate:
        return False
    modes = populations_modes(ctx.values, ctx.window)
    lo, hi = sorted((primary, t))
    return bool(((modes > lo) & (modes < hi)).any())


def _populations(ctx: BoundContext) -> tuple[float, str]:
    """The populations over the whole axis first, then the valley between two adjacent ones
    nearest the window (NaN when fewer than two populations are found)."""
    t, note = populations_valley(ctx.values, ctx.window)
    return (float("nan") if t is None else t), note


def _above_negative(ctx: BoundContext) -> tuple[float, str]:
    """The cut just above the negative population, wherever the window is: the negative
    population from the parent's events, the cut at the density minimum of the bound's events
    between it and their lowest population above it (every event above the negative population is
    positive, however dim; NaN when there is no such population)."""
    t, note = above_negative_cut(ctx.values, ctx.window, _negative(ctx))
    return (float("nan") if t is None else t), note


def _same_kind(ctx: BoundContext, negative: float | None, cut: float) -> bool:
    """Whether the candidate events between the negative population and ``cut`` are the same kind
    as those above the cut on every dimension the rule's ``given`` selects them by (e.g. as
    CD138-bright as the plasma cells the cut keeps): their median on that dimension at least the
    kept events' 10th percentile. Events that only graze a ``given`` threshold (CD138-dim
    eosinophils and doublets in a marrow where plasma cells are rare) are not a missed population;
    CD38-dim plasma cells, as CD138-bright as the others, are. True when nothing is kept to compare
    with (nothing speaks against the candidates)."""
    if negative is None:
        return False
    sel = ctx.selection  # the events the bound was placed on
    v = ctx.placement.view.values(ctx.dim)
    between = sel & (v > negative) & (v < cut)
    kept = sel & (v >= cut)
    if int(kept.sum()) < MIN_EVENTS:
        return True
    for gdim, (lo, _hi) in ctx.rule.given.items():
        if lo is None:
            continue
        g = ctx.placement.view.values(gdim)
        if float(np.median(g[between])) < float(np.percentile(g[kept], 10)):
            return False
    return True


def _like_kept(ctx: BoundContext, events: np.ndarray, kept: np.ndarray) -> np.ndarray | None:
    """Which of ``events`` (bool per event) are as bright as the ``kept`` events on every dimension
    the rule's ``given`` selects by a lower bound (at least the kept events' 10th percentile there:
    as CD138-bright as the plasma cells a PC gate keeps); None when fewer than MIN_EVENTS are kept
    or the rule selects by no lower bound."""
    if int(kept.sum()) < MIN_EVENTS:
        return None
    like = events.copy()
    lows = [gdim for gdim, (lo, _hi) in ctx.rule.given.items() if lo is not None]
    if not lows:
        return None
    for gdim in lows:
        g = ctx.placement.view.values(gdim)
        like &= g >= float(np.percentile(g[kept], 10))
    return like


def _rare_like_kept(ctx: BoundContext, negative: float | None, cut: float) -> str | None:
    """The reason a sure ``min`` cut is still wrong when :data:`RARE_EVENTS` or more candidates as
    bright as the kept events on the ``given`` dimensions (CD138-bright like the kept PCs) lie
    between the negative population and the cut; else None. A rare population forms no density
    mode (:func:`missed_population` cannot see it), yet a CD38-dim clone of a few hundred cells in
    an MRD marrow is the read-out itself."""
    if negative is None:
        return None
    sel = ctx.selection  # the events the bound was placed on
    v = ctx.placement.view.values(ctx.dim)
    like = _like_kept(ctx, sel & (v > negative) & (v < cut), sel & (v >= cut))
    n = int(like.sum()) if like is not None else 0
    if n < RARE_EVENTS:
        return None
    return (f"{n} events as bright on {', '.join(ctx.rule.given)} as those the gate keeps lie between the "
            f"negative population ({negative:.2f}) and the cut {cut:.3f}")


def _unlike_taken_in(ctx: BoundContext, primary: float, cut: float,
                     gate_bounds: Mapping[str, tuple[float | None, float | None]]) -> str | None:
    """The reason a lowered ``above_negative`` cut is unsure: it also takes in :data:`RARE_EVENTS`
    or more candidates dimmer on the ``given`` dimensions than those the primary cut kept, and more
    than a fifth as many as the like ones it takes in (a CD138-dim eosinophil tail beside a rare
    CD38-dim clone): the gate, a rectangle, cannot keep the one without the other. None otherwise."""
    if cut >= primary:
        return None
    sel = _in_gate_elsewhere(ctx, gate_bounds)
    v = ctx.placement.view.values(ctx.dim)
    taken = sel & (v >= cut) & (v < primary)
    like = _like_kept(ctx, taken, sel & (v >= primary))
    if like is None:
        return None
    n_like, n_unlike = int(like.sum()), int((taken & ~like).sum())
    if n_unlike < RARE_EVENTS or n_unlike <= 0.2 * n_like:
        return None
    return (f"the cut {cut:.3f} takes in {n_like} events like the kept ones and {n_unlike} dimmer on "
            f"{', '.join(ctx.rule.given)}: the gate cannot keep the one without the other")


def _in_gate_elsewhere(ctx: BoundContext, gate_bounds: Mapping[str, tuple[float | None, float | None]]) -> np.ndarray:
    """The parent's events inside ``gate_bounds`` on the gate's other dimensions (the template's
    values and the bounds placed so far, or the final ones): the events this bound alone decides
    on (bool per event)."""
    sel = ctx.parent_mask.copy()
    for gdim, (lo, hi) in gate_bounds.items():
        if gdim == ctx.dim:
            continue
        g = ctx.placement.view.values(gdim)
        if lo is not None:
            sel &= g >= lo
        if hi is not None:
            sel &= g <= hi
    return sel


def _negative(ctx: BoundContext) -> float | None:
    """Where the negative population sits on the bound's axis (gate units): the lowest mode of the
    parent's events that are not candidates (outside the rule's ``given`` ranges, e.g. the CD138-
    nucleated cells for a PC gate's CD38 bound), or of the whole parent when the rule has no
    ``given``. The candidates are left out because a large CD38-dim clone would otherwise be the
    parent's lowest mode and pass for the negative population."""
    parent = ctx.parent_mask
    uniform = getattr(ctx.placement, "uniform", None)
    if uniform is not None:  # a sample plus a rare gate's candidates: the sample's
        parent = parent & uniform  # events alone show the other populations as they are
    others = parent & ~_selection(ctx.placement, ctx.rule, parent)
    mask = others if ctx.rule.given and int(others.sum()) >= MIN_EVENTS else parent
    return negative_mode(ctx.placement.view.values(ctx.dim)[mask], ctx.window)


#: Counting beads are uniform microspheres: manufacturers give a size CV of a few %, and their
#: forward and side scatter spread about as little. Cell populations spread more: lymphocytes, the
#: most uniform cells in blood, have an FSC CV of about 10% and an SSC CV of about 20%. A "brightest
#: population" whose scatter CV (robust: IQR / 1.349 / median) exceeds 10% on FSC-A or SSC-A is
#: cells (a bright stain, dead cells, a saturated pile-up), not beads.
TIGHT_SCATTER_CV = 0.10
#: The scatter dimensions whose spread tells beads from cells (the ones a panel has are used).
SCATTER_DIMS = ("FSC-A", "SSC-A")


def _brightest(ctx: BoundContext) -> tuple[float, str]:
    """The valley below the brightest population on the axis (counting beads: brighter than any
    stained cell, whether the axis holds only unstained cells and beads or also cells stained on a
    channel the beads share), raised to that population's lower edge when an empty stretch
    separates it from rarer events below (:func:`~mrdflow.gating._evidence.brightest_valley`).
    The populations are found over the whole axis; the window is the
    template's prior: the bound is unsure when the brightest population lies below it, when the
    cut lies more than the window's width from it, when the valley is shallow, or when the
    population above the cut is not tight in scatter (:data:`TIGHT_SCATTER_CV`). With fewer than
    two populations the window's density minimum stands, unsure (no bright population)."""
    v, w = ctx.values, ctx.window
    cut, valley, top, note = brightest_valley(v, w)
    reasons = []
    if cut is None:
        t, vnote = _valley(ctx)
        note, reasons = f"{note}; {vnote}", ["no population brighter than the rest on the axis"]
    else:
        t = float(cut)
    # The gap is judged at the valley (the cut may sit higher, at the population's lower edge).
    ev = assess("brightest", v, t if valley is None else valley, w, ctx.side)
    ev = replace(ev, value=t, edge_distance=float(min(abs(t - w[0]), abs(w[1] - t))))
    reasons += [ev.reason] if ev.reason else []
    if cut is not None:
        if top is not None and top < w[0]:
            reasons.append(f"the brightest population ({top:.2f}) lies below the window [{w[0]:.2f}, {w[1]:.2f}]")
        if max(w[0] - t, t - w[1], 0.0) > w[1] - w[0]:
            reasons.append(f"{t:.3f} more than the window's width from [{w[0]:.2f}, {w[1]:.2f}]")
        if ev.valley_depth is None or ev.valley_depth < DEEP_VALLEY:
            reasons.append(f"valley depth {ev.valley_depth or 0.0:.2f} < {DEEP_VALLEY} below the brightest population")
        cvs = _scatter_cv(ctx, t)
        if cvs:
            note += " (scatter CV " + ", ".join(f"{d} {100 * c:.1f}%" for d, c in cvs.items()) + ")"
            loose = {d: c for d, c in cvs.items() if c > TIGHT_SCATTER_CV}
            if loose:
                reasons.append("the brightest population is not tight in scatter ("
                               + ", ".join(f"{d} CV {100 * c:.0f}%" for d, c in loose.items())
                               + f" > {100 * TIGHT_SCATTER_CV:.0f}%): cells, not beads")
    ctx.evidence = replace(ev, sure=not reasons, reason="; ".join(reasons) or None)
    return t, note + ctx.floor_note


def _scatter_cv(ctx: BoundContext, cut: float) -> dict[str, float]:
    """Robust CV (IQR / 1.349 / median) of each scatter dimension of the bound's events above
    ``cut`` (the brightest population); empty with fewer than MIN_EVENTS such events."""
    view = ctx.placement.view
    above = np.flatnonzero(ctx.selection)[ctx.values >= cut]
    out: dict[str, float] = {}
    if above.size < MIN_EVENTS:
        return out
    for d in SCATTER_DIMS:
        if d not in view.resolved.index:
            continue
        x = view.values(d)[above].astype(np.float64)
        q25, q50, q75 = np.percentile(x[np.isfinite(x)], [25, 50, 75])
        if q50 > 0:
            out[d] = float((q75 - q25) / 1.349 / q50)
    return out


def _tail_value(values: np.ndarray, k: float) -> tuple[float, str]:
    """(mode of the main population + k robust SDs of its lower half, note); NaN with fewer than
    20 events. The lower half's spread is the population's own: its upper side may carry the tail
    or the next population."""
    v = values[np.isfinite(values)]
    if v.size < 20:
        return float("nan"), f"tail: too few events ({v.size})"
    lo, hi = np.percentile(v, [0.1, 99.9])
    d = density(v, float(lo), float(hi) + 1e-6)
    mode = float(d.x[np.argmax(d.y)])
    left = v[v <= mode]
    sd = float(np.sqrt(np.mean((left - mode) ** 2))) if left.size > 10 else float(np.std(v))
    t = mode + k * sd
    return t, f"tail: mode {mode:.3f} + {k:g}×SD {sd:.3f} = {t:.3f}"


def _robust_tail(values: np.ndarray, window: tuple[float, float], k: float) -> tuple[float, str]:
    """Mode of the main population + k robust SDs of its lower half, clipped to the window."""
    t, note = _tail_value(values, k)
    if not np.isfinite(t):
        return window[0] + 0.5 * (window[1] - window[0]), "tail: too few events, window centre"
    clipped = min(max(t, window[0]), window[1])
    if clipped != t:
        note += f", clipped to window [{window[0]:.2f}, {window[1]:.2f}]"
    return clipped, note


def _gmm_threshold(values: np.ndarray, window: tuple[float, float], *, seed: int = 0,
                   max_events: int = 200_000) -> tuple[float, str]:
    """Where two touching populations meet: a 2-component Gaussian mixture fitted to the events
    (:func:`fit_two_gaussians`), threshold where the posterior of the two components is equal,
    inside the window.

    Used where a valley is too shallow to find (populations overlap). Falls back to the window's
    density minimum when the mixture does not put one component on each side of the window.
    """
    v = values[np.isfinite(values)].astype(np.float64)
    if v.size < 50:
        t, kind = threshold_valley(v, window[0] - 0.05, window[1] + 0.05, search=window)
        return t, f"gmm: too few events ({v.size}); {kind} {t:.3f}"
    if v.size > max_events:  # a seeded subsample: the fit needs the shapes, not every event
        v = np.random.default_rng(seed).choice(v, max_events, replace=False)
    weights, means, variances = fit_two_gaussians(v)
    lo_c, hi_c = int(np.argmin(means)), int(np.argmax(means))
    grid = np.linspace(window[0], window[1], 401)
    log_p = _component_log_density(grid, weights, means, variances)
    diff = log_p[:, hi_c] - log_p[:, lo_c]  # same sign as the posteriors' difference
    cross = np.flatnonzero(np.diff(np.sign(diff)) > 0)
    if means[lo_c] >= window[1] or means[hi_c] <= window[0] or cross.size == 0:
        t, kind = threshold_valley(v, float(v.min()) - 0.05, float(v.max()) + 0.05, search=window)
        return t, f"gmm: components {means[lo_c]:.2f}/{means[hi_c]:.2f} not either side of the window; {kind} {t:.3f}"
    i = int(cross[0])
    t = float(grid[i] + (grid[i + 1] - grid[i]) * (-diff[i]) / (diff[i + 1] - diff[i]))
    return t, (f"gmm: equal posterior {t:.3f} between components at {means[lo_c]:.2f} "
               f"({weights[lo_c]:.0%}) and {means[hi_c]:.2f} ({weights[hi_c]:.0%})")


# A 1-D two-component mixture fitted by EM, written out rather than scikit-learn's GaussianMixture:
# importing sklearn.mixture costs ~1.5 s (measured), more than the whole rest of a marrow tube's
# gating, and the 1-D case is a few lines of the textbook EM. Same model as GaussianMixture(2)
# (full = scalar variances, reg_covar 1e-6 added to each variance); tests compare the threshold
# with scikit-learn's.
_GMM_REG = 1e-6
_GMM_TOL = 1e-10      # stop when the mean log-likelihood per event changes less than this
_GMM_MAX_ITER = 2000


def _component_log_density(x: np.ndarray, weights, means, variances) -> np.ndarray:
    """log(weight_k * N(x; mean_k, variance_k)) for each x (rows) and component (columns)."""
    x = np.asarray(x, np.float64)[:, None]
    return (np.log(weights) - 0.5 * np.log(2 * np.pi * variances)
            - 0.5 * (x - means) ** 2 / variances)


def fit_two_gaussians(v: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(weights, means, variances) of a two-component Gaussian mixture fitted to 1-D ``v`` by
    expectation-maximisation, started from a 1-D 2-means split (deterministic: no random
    restarts are needed in one dimension, where the 2-means optimum is found by scanning the
    sorted values)."""
    x = np.sort(np.asarray(v, np.float64))
    n = x.size
    # 2-means in 1-D: the split of the sorted values that minimises the within-cluster sum of
    # squares, found exactly from prefix sums.
    c1, c2 = np.cumsum(x), np.cumsum(x * x)
    k = np.arange(1, n)
    left = c2[:-1] - c1[:-1] ** 2 / k
    right = (c2[-1] - c2[:-1]) - (c1[-1] - c1[:-1]) ** 2 / (n - k)
    split = int(np.argmin(left + right)) + 1
    resp = np.zeros((n, 2))
    resp[:split, 0] = 1.0
    resp[split:, 1] = 1.0
    last = -np.inf
    for _ in range(_GMM_MAX_ITER):
        nk = resp.sum(axis=0) + 10 * np.finfo(np.float64).eps
        means = (resp * x[:, None]).sum(axis=0) / nk
        variances = (resp * (x[:, None] - means) ** 2).sum(axis=0) / nk + _GMM_REG
        weights = nk / n
        log_p = _component_log_density(x, weights, means, variances)
        top = log_p.max(axis=1, keepdims=True)
        log_norm = top[:, 0] + np.log(np.exp(log_p - top).sum(axis=1))
        resp = np.exp(log_p - log_norm[:, None])
        ll = float(log_norm.mean())
        if abs(ll - last) < _GMM_TOL:
            break
        last = ll
    return weights, means, variances


#: Bound methods by the name a template rule's ``method:`` gives (in the order messages list them).
BOUND_METHODS: dict[str, BoundMethod] = {
    "valley": BoundMethod(_valley, floor=True),
    "tail": BoundMethod(_tail, floor=True),
    "gmm": BoundMethod(_gmm),
    "fmo": BoundMethod(_fmo),
    "fixed": BoundMethod(_fixed, data=False),
    "populations": BoundMethod(_populations),
    "above_negative": BoundMethod(_above_negative),
    "brightest": BoundMethod(_brightest),
}

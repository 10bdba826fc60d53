"""Streaming: gating a tube larger than memory.

Gates are placed on a seeded uniform random sample of the tube's events (exactly as
:func:`~mrdflow.gating.gate_tube` places them on a whole tube, with the facts placement needs about
every event gathered in the same pass), then every event is counted a chunk at a time.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np

from mrdflow.gating._candidates import CandidatePlan, boxes_as_json, candidate_plans, region_strategy, subtree_ids
from mrdflow.gating._engine import GateEngine, available_cpus
from mrdflow.gating._model import Strategy
from mrdflow.gating._placement import ROOT, AllEvents, Placement, TemplateGate, edge_between, either, finite_max
from mrdflow.gating._qc import QCSettings
from mrdflow.gating._rawbounds import MONOTONE
from mrdflow.gating._result import GateStep, KeptEvents, StreamedGating, TubeGating, nonfinite_rows
from mrdflow.gating._rules import GateRule, GatingError
from mrdflow.gating._template import GatingTemplate
from mrdflow.gating._transforms import Compensation, apply_transform, make_transform
from mrdflow.gating._tube import gate_tube
from mrdflow.gating._view import OpenTube, TubeView
from mrdflow.io import FCSData
from mrdflow.panels import ResolvedPanel

__all__ = ["gate_tube_streamed"]

_QC_DEFAULTS = QCSettings()  # frozen: one instance serves every call


class _Source:
    """A streamed tube: an opened tube (file, header, panel) read as scaled chunks of ``chunk_events``."""

    def __init__(self, tube: OpenTube, chunk_events: int, workers: int):
        self.path = tube.path
        self.header = tube.header
        self.resolved = tube.resolved
        self.compensation = tube.compensation
        self.transforms = dict(tube.transforms)
        self.scatter = make_transform(self.transforms["scatter"])
        self.name = tube.name
        self.chunk_events = int(chunk_events)
        self.workers = int(workers)

    def chunks(self):
        """(first event, FCSData of scaled events) for each chunk, in file order."""
        from mrdflow.io import iter_events

        for start, chunk in iter_events(self.path, self.chunk_events, reuse=True):  # nothing keeps a chunk
            chunk.scale_in_place()
            yield start, chunk

    def view(self, fcs: FCSData, workers: int | None = None) -> TubeView:
        return TubeView(fcs, self.resolved, self.compensation, self.transforms, name=self.name,
                        workers=workers or self.workers)



class _StreamEvents(AllEvents):
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
                best = either(max, best, finite_max(self.source.view(chunk, 1).values(dim)))
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
                    below[j] = either(max, below[j], float(t[i - 1]))
                if i < t.size:
                    above[j] = either(min, above[j], float(t[i]))
        return [edge_between(below[j], above[j], float(e[j])) for j in range(e.size)]



def _placement_sample(source: _Source, n_keep: int, seed: int) -> tuple[FCSData, np.ndarray, _StreamEvents]:
    """One pass over the file: a uniform random sample of exactly ``min(n_keep, n)`` events (in
    file order, so Time stays ordered), their row numbers in the file, and the all-event
    minima/maxima placement needs.

    Each chunk contributes a hypergeometric share of the remaining sample (sequential sampling
    without replacement), so the sample is uniform over the tube and memory is the sample plus
    one chunk.
    """
    header = source.header
    n = header.n_events
    k_left, n_left = min(int(n_keep), n), n
    rng = np.random.default_rng(seed)
    out = np.empty((k_left, header.n_parameters), np.float32)
    index = np.empty(k_left, np.int64)
    filled = 0
    tmin: float | None = None
    tmax: float | None = None
    fluorescence = {m.name for m in source.resolved.panel.markers}
    scatter = [d for d in source.resolved.index if d != "Time" and d not in fluorescence]
    maxima: dict[str, float | None] = {d: None for d in scatter}
    has_time = "Time" in source.resolved.index
    for start, chunk in source.chunks():
        m = chunk.n_events
        take = int(rng.hypergeometric(m, n_left - m, k_left)) if n_left > m else k_left
        rows = np.sort(rng.choice(m, take, replace=False)) if take < m else np.arange(m)
        out[filled:filled + take] = chunk.events[rows]
        index[filled:filled + take] = start + rows
        filled += take
        k_left -= take
        n_left -= m
        if has_time:  # Time in gate units is the scaled column itself
            lo, hi = _finite_extremes(chunk.events[:, source.resolved.index["Time"]])
            if lo is not None:
                tmin, tmax = either(min, tmin, lo), either(max, tmax, hi)
        for d in scatter:
            maxima[d] = either(max, maxima[d], _scatter_max(source, chunk, d))
    if filled != out.shape[0]:  # the file changed under us
        raise GatingError(f"{source.name}: read {filled} placement events, expected {out.shape[0]}")
    span = (tmin, tmax) if tmin is not None else None
    return FCSData.from_events(header, out), index, _StreamEvents(source, span, maxima)


def _finite_extremes(column: np.ndarray) -> tuple[float | None, float | None]:
    """(smallest, largest) finite value of ``column``, or (None, None) without one."""
    if column.size == 0:
        return None, None
    lo, hi = column.min(), column.max()  # NaN and infinities show in these
    if not (np.isfinite(lo) and np.isfinite(hi)):
        column = column[np.isfinite(column)]
        if column.size == 0:
            return None, None
        lo, hi = column.min(), column.max()
    return float(lo), float(hi)


def _scatter_max(source: _Source, chunk: FCSData, dim: str) -> float | None:
    """The largest finite value of scatter dimension ``dim`` in gate units over ``chunk``: its
    transform (increasing) of the largest scaled value, which is the largest of its transformed
    values, rounding included; for another transform, every value transformed."""
    transform = source.scatter
    if type(transform).__name__ not in MONOTONE or dim in source.resolved.shared:
        return finite_max(source.view(chunk, 1).values(dim))
    _, hi = _finite_extremes(chunk.events[:, source.resolved.index[dim]])
    if hi is None:
        return None
    return float(apply_transform(transform, np.array([[hi]]), out_dtype=np.float32)[0, 0])


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


def gate_tube_streamed(template: GatingTemplate, tube: OpenTube | str | Path, resolved: ResolvedPanel | None = None,
                       compensation: Compensation | None = None, transforms: Mapping[str, Mapping] | None = None, *,
                       qc_settings: QCSettings = _QC_DEFAULTS, fmo: TubeGating | StreamedGating | None = None,
                       placement_events: int = 1_000_000, chunk_events: int = 1 << 20,
                       keep: Mapping[str, Sequence[str]] | None = None, seed: int = 0, name: str = "",
                       workers: int | None = None, chunk_size: int = 1 << 18) -> StreamedGating:
    """Gate a tube too large to hold: place on a sample, count every event in a stream.

    ``tube``: the tube from :func:`~mrdflow.gating.open_tube`, or its FCS file's path with the
    file's ``resolved`` panel, ``compensation`` and config ``transforms``. ``name``: how messages
    name the file (default: the tube's name, or the path).

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
    if isinstance(tube, OpenTube):
        tube = replace(tube, name=name) if name else tube
    else:
        from mrdflow.io import read_header

        if resolved is None or transforms is None:
            raise TypeError("gate_tube_streamed: a path needs its resolved panel and transforms")
        tube = OpenTube(str(tube), name or str(tube), read_header(tube), resolved, compensation, dict(transforms))
    workers = int(workers or available_cpus(4))
    source = _Source(tube, chunk_events, workers)
    sample_fcs, sample_index, all_events = _placement_sample(source, placement_events, seed)
    sample_view = source.view(sample_fcs)
    fmo_sample = getattr(fmo, "sample", fmo)
    sample = gate_tube(template, sample_view, qc_settings=qc_settings, fmo=fmo_sample,
                       chunk_size=chunk_size, events=all_events)
    step_ids = {s.gate_id for s in sample.steps}
    keep = {g: list(f) for g, f in (keep or {}).items() if g in step_ids}
    plans = candidate_plans(template, sample.steps, list(keep), sample_view) if not template.static else []
    counting, region = sample.strategy, None
    if plans:  # the candidate regions, counted in the same pass as top-level gates of their own
        rs, rids = region_strategy(plans, Placement(template, sample_view, qc_settings).dimension,
                                   sample.strategy.transformations)
        counting = Strategy()
        for tid, t in sample.strategy.transformations.items():
            counting.add_transform(tid, t)
        for strategy in (sample.strategy, rs):
            for gid, path in strategy.get_gate_ids():
                counting.add_gate(strategy.get_gate(gid, path), path)
        region = _Region(rids, max(2 * int(placement_events), 1_000_000))
    engine = GateEngine(counting, chunk_size=chunk_size, workers=workers)
    counts, nonfinite, n, kept = _count_every_event(source, engine, keep, step_ids, region)
    if region is not None:
        counts = {p: c for p, c in counts.items() if p[-1] not in region.ids}
    candidates_qc = {}
    if plans:
        sample, counts, kept, candidates_qc = _place_on_candidates(
            template, sample, sample_index, plans, region, source, counts, kept, keep,
            qc_settings=qc_settings, fmo=fmo_sample, chunk_size=chunk_size, workers=workers)
    resolve = sample.result.resolve
    steps = []
    for st in sample.steps:
        c = counts[resolve(st.path or st.gate_id)]
        pc = counts[resolve(st.path[:-1] if st.path else st.parent)] if st.parent else n
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
    if candidates_qc:
        qc["placement"]["candidates"] = candidates_qc
    return StreamedGating(sample.strategy, steps, qc, sample, n, nonfinite, kept, counts)


class _Region:
    """The candidate regions' gate ids (gates of the counting strategy) and what the pass collected:
    the events in any of them (at most ``limit``; past it, none are kept) and their row numbers."""

    def __init__(self, ids: list[str], limit: int):
        self.ids, self.limit = set(ids), int(limit)
        self.parts: list[np.ndarray] = []
        self.rows: list[np.ndarray] = []
        self.n = 0
        self.overflow = False

    def collect(self, start: int, events: np.ndarray, res) -> None:
        """Keep the events of a chunk (its first row ``start``) in any region gate of ``res``."""
        if self.overflow:
            return
        inside = np.logical_or.reduce([res.membership(g) for g in sorted(self.ids)])
        rows = np.flatnonzero(inside)
        self.n += rows.size
        if self.n > self.limit:
            self.overflow = True
            self.parts, self.rows = [], []
            return
        self.parts.append(events[rows])
        self.rows.append(start + rows)

    def events(self, n_parameters: int) -> tuple[np.ndarray, np.ndarray]:
        """(collected events, their row numbers), in file order."""
        return (_drain(self.parts, (0, n_parameters), np.float32),
                _drain(self.rows, (0,), np.int64))


def _count_every_event(source: _Source, engine: GateEngine, keep: Mapping[str, list[str]], step_ids: set[str],
                       region: _Region | None = None
                       ) -> tuple[dict[tuple[str, ...], int], int, int, dict[str, KeptEvents]]:
    """The streaming pass: (events per population path, non-finite events, events, the kept
    events of each population in ``keep``), evaluating ``engine`` on one chunk at a time; the
    candidate events of ``region`` are collected on the way."""
    header = source.header
    compensation = source.compensation
    sample_comp = (list(compensation.detectors), compensation.spill) if compensation is not None else None
    counts = {p: 0 for p in engine.paths}
    nonfinite = 0
    markers = [m.name for m in source.resolved.panel.markers]
    parts: dict[str, list[np.ndarray]] = {g: [] for g in keep}
    flag_parts: dict[str, dict[str, list[np.ndarray]]] = {
        g: {f: [] for f in fl if f in step_ids} for g, fl in keep.items()}
    n = 0
    for start, chunk in source.chunks():
        ev = chunk.events
        res = engine.evaluate(ev, header.pnn, sample_comp=sample_comp, pns=header.pns)
        if region is not None:
            region.collect(start, ev, res)
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
    return counts, nonfinite, n, kept


class _JoinedView(TubeView):
    """The placement sample's view followed by the extra candidates' view, without copying either:
    a column is the two views' columns joined (a row's gate-unit values never depend on the other
    rows, so they equal a view of the joined events'); the joined events themselves are built only
    if asked for."""

    def __init__(self, first: TubeView, second: TubeView):
        state = dict(first.__dict__)
        state.pop("raw", None)
        state.pop("fcs", None)
        self.__dict__.update(state)
        self._parts = (first, second)
        self._cache = {}
        self._joined: np.ndarray | None = None

    @property
    def n(self) -> int:
        return sum(v.n for v in self._parts)

    @property
    def raw(self) -> np.ndarray:
        if self._joined is None:
            self._joined = np.concatenate([v.raw for v in self._parts])
        return self._joined

    @property
    def fcs(self) -> FCSData:
        return FCSData.from_events(self._parts[0].fcs.header, self.raw)

    def prefetch(self, dims: Sequence[str], workers: int | None = None) -> None:
        todo = [d for d in dict.fromkeys(dims) if d not in self._cache]
        for v in self._parts:
            v.prefetch(todo, workers)
        for d in todo:
            self._cache[d] = np.concatenate([v.values(d) for v in self._parts])


def _place_on_candidates(template: GatingTemplate, sample: TubeGating, sample_index: np.ndarray,
                         plans: list[CandidatePlan], region: _Region, source: _Source,
                         counts: dict[tuple[str, ...], int], kept: dict[str, KeptEvents],
                         keep: Mapping[str, list[str]], *, qc_settings: QCSettings, fmo, chunk_size: int,
                         workers: int):
    """The kept gates of ``plans`` placed again on the sample plus every candidate event
    (:mod:`mrdflow.gating._candidates`). Returns (the sample's gating under the final strategy,
    counts, kept events, the QC record); the sample's placement stands, and the record says why,
    when the candidates overflowed or the second placement read outside them."""
    header = source.header
    record = {"boxes": boxes_as_json(plans), "events": int(region.n)}
    if region.overflow:
        record["placed_on"] = "sample"
        record["why"] = f"more than {region.limit} candidate events"
        _note(sample.steps, plans, f"placed on the {sample.n_events:,}-event sample only: {record['why']}")
        return sample, counts, kept, record
    cand_events, cand_rows = region.events(header.n_parameters)
    # The placement view: the sample, then the candidates it lacks (the re-placed gates read
    # densities only, so the order is free); `uniform` marks the sample's own events.
    at = np.minimum(np.searchsorted(sample_index, cand_rows), max(sample_index.size - 1, 0))
    extra = (sample_index[at] != cand_rows) if sample_index.size else np.ones(cand_rows.size, bool)
    extra_events = cand_events[extra]
    view = _JoinedView(sample.view, source.view(FCSData.from_events(header, extra_events)))
    uniform = np.zeros(view.n, bool)
    uniform[:sample_index.size] = True
    comp = source.compensation
    sample_comp = (list(comp.detectors), comp.spill) if comp is not None else None
    # the other gates' events among them: the sample's memberships, and the extra events gated
    on_extra = GateEngine(sample.strategy, chunk_size=chunk_size, workers=workers).evaluate(
        extra_events, header.pnn, sample_comp=sample_comp, pns=header.pns)
    redo = subtree_ids(plans)
    p = Placement(template, view, qc_settings, fmo=fmo)
    p.uniform = uniform
    for gid, path in sample.strategy.get_gate_ids():
        if gid in redo:
            continue
        full = tuple(path) + (gid,)
        p.strategy.add_gate(sample.strategy.get_gate(gid, path), path)
        p.paths[gid] = full
        p.masks[gid] = np.concatenate([sample.result.membership(full), on_extra.membership(full)])
    for gid, tpath in template.gate_order():
        if gid not in redo:
            continue
        parent = tpath[-1] if len(tpath) > 1 else None
        gate = TemplateGate(gid, template.strategy.get_gate(gid, gate_path=tpath), parent,
                            p.paths[parent] if parent else (ROOT,), template.rules.get(gid, GateRule(gid, "fixed")))
        p._placer_for(gate)(p, gate)
    placed = {st.gate_id: st for st in p.steps}
    why = [w for w in (plan.covers(placed) for plan in plans) if w]
    record["placement_events"] = int(view.n)
    if why:
        record["placed_on"] = "sample"
        record["why"] = "; ".join(why)
        _note(sample.steps, plans, f"placed on the {sample.n_events:,}-event sample only: {record['why']}")
        return sample, counts, kept, record
    _note(p.steps, plans, f"placed on the {sample.n_events:,}-event sample plus all {region.n:,} events of the "
                          "tube that could be in it")
    record["placed_on"] = "sample and candidates"
    final = Strategy()
    for tid, t in sample.strategy.transformations.items():
        final.add_transform(tid, t)
    for gid, path in sample.strategy.get_gate_ids():
        final.add_gate(p.strategy.get_gate(gid, path), path)
    # The subtrees' events all lie among the candidates: their counts and kept events from those.
    on_candidates = GateEngine(final, chunk_size=chunk_size, workers=workers).evaluate(
        cand_events, header.pnn, sample_comp=sample_comp, pns=header.pns)
    counts = dict(counts)
    for path in on_candidates.paths:
        if path[-1] in redo:
            counts[path] = on_candidates.count(path)
    kept = dict(kept)
    markers = [m.name for m in source.resolved.panel.markers]
    have = {st.gate_id for st in sample.steps}
    for g, flags in keep.items():
        if g not in redo:
            continue
        m = np.asarray(on_candidates.membership(g))
        rows_view = source.view(FCSData.from_events(header, cand_events[m]), 1)
        rows_view.prefetch(markers)
        values = (np.column_stack([rows_view.values(mk) for mk in markers]).astype(np.float32, copy=False)
                  if m.any() else np.zeros((0, len(markers)), np.float32))
        kept[g] = KeptEvents(g, markers, values,
                             {f: np.asarray(on_candidates.membership(f))[m] for f in flags if f in have})
    # The sample's own gating under the final gates (plots, distribution read-outs).
    steps = [placed.get(st.gate_id, st) if st.gate_id in redo else st for st in sample.steps]
    on_sample = GateEngine(final, chunk_size=chunk_size, workers=workers).evaluate(
        sample.view.raw, header.pnn, sample_comp=sample_comp, pns=header.pns)
    for st in steps:
        st.count = int(on_sample.count(st.path or st.gate_id))
        st.parent_count = int(on_sample.count(st.path[:-1] if st.path else st.parent)) if st.parent \
            else on_sample.n_events
    return TubeGating(final, on_sample, steps, sample.view, sample.qc), counts, kept, record


def _note(steps: list[GateStep], plans: list[CandidatePlan], note: str) -> None:
    """Say on each kept gate's step (its caption and gating table) what it was placed on."""
    gates = {plan.gate_id for plan in plans}
    for st in steps:
        if st.gate_id in gates:
            st.how[""] = f"{st.how[''] + '; ' if st.how.get('') else ''}{note}"

"""One tube opened for gating: :func:`open_tube` reads the header, resolves the panel and checks the
compensation; :class:`TubeView` holds the events and gives each template dimension in gate units.

Every reader of a tube goes through :func:`open_tube` (the sample analysis, NK and CAR-T read-outs,
the normal-PC reference builder); :meth:`OpenTube.view` reads its events into memory, and
:func:`~mrdflow.gating.gate_tube_streamed` streams them instead.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mrdflow.errors import MrdflowError
from mrdflow.gating._engine import _single_threaded_blas as single_threaded_blas
from mrdflow.gating._engine import available_cpus, run_threaded
from mrdflow.gating._rules import GatingError
from mrdflow.gating._transforms import (
    Compensation,
    CompensationError,
    apply_transform,
    compensation_for,
    make_transform,
)
from mrdflow.io import FCSData, FCSHeader
from mrdflow.panels import Panel, ResolvedPanel, resolve_panel

__all__ = ["OpenTube", "TubeView", "open_tube"]


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
    logicle-transformed, scatter linear-scaled, Time as stored × $TIMESTEP. A marker the panel
    reads on other markers' channels (``shares``, e.g. counting beads bright in every channel) is
    the per-event minimum of those markers' values: beads are bright on all of them, a cell on at
    most some. Columns are computed once and cached (float32, one column each).
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
        if dim in self.resolved.shared:
            raise GatingError(f"{self.name}: marker {dim!r} has no channel of its own (it is read on the "
                              f"channels of {list(self.resolved.shared[dim])})")
        if dim not in self.resolved.index:
            raise GatingError(f"{self.name}: template dimension {dim!r} is not a marker of panel "
                              f"{self.resolved.panel.name!r}")
        return self.resolved.pnn[dim]

    def shares(self, dim: str) -> tuple[str, ...]:
        """The markers whose channels ``dim`` is read on (its values: their per-event minimum);
        empty for a dimension with a channel of its own."""
        return tuple(self.resolved.shared.get(dim, ()))

    def kind(self, dim: str) -> str:
        if dim == "Time":
            return "time"
        return "fluorescence" if dim in self.fluorescence else "scatter"

    def _column_index(self, dim: str) -> int:
        if dim not in self.resolved.index:
            raise GatingError(f"{self.name}: template dimension {dim!r} is not a marker of panel "
                              f"{self.resolved.panel.name!r}")
        return self.resolved.index[dim]

    def prefetch(self, dims: Sequence[str], workers: int | None = None) -> None:
        """Compute the gate-unit columns of ``dims`` now, in one pass over the events.

        Row chunks of :attr:`CHUNK` events are compensated (detectors × inverse spillover, in
        float64) and transformed, and written into the float32 columns: no compensated copy of
        the whole matrix is kept. Chunks run as tasks of dask's threaded scheduler (``workers`` at
        once; the work is numpy, which releases the GIL), BLAS on one thread (these tall-skinny
        products only slow down with threads on small nodes). Later ``values(dim)`` calls hit
        the cache. A shared marker's column is the minimum of its shared markers' columns.
        """
        shared = self.resolved.shared
        derived = [d for d in dict.fromkeys(dims) if d in shared and d not in self._cache]
        if derived:
            self.prefetch([s for d in derived for s in shared[d]] + [d for d in dims if d not in shared], workers)
            for d in derived:
                self._cache[d] = np.minimum.reduce([self._cache[s] for s in shared[d]])
            return
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
                run_threaded(run, bounds, workers)
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


@dataclass(frozen=True)
class OpenTube:
    """A tube opened for gating; its events are not read yet.

    ``path``: the FCS file; ``name``: how messages name it; ``header``: its HEADER and TEXT;
    ``resolved``: the panel's markers mapped to its channels; ``compensation``: the spillover to
    apply (None: uncompensated), every detector a channel of the file; ``transforms``: the config's
    ``{"fluorescence": {...}, "scatter": {...}}`` transform specs.
    """

    path: str
    name: str
    header: FCSHeader
    resolved: ResolvedPanel
    compensation: Compensation | None
    transforms: Mapping[str, Mapping]

    @property
    def n_events(self) -> int:
        """Events of the tube ($TOT)."""
        return int(self.header.n_events)

    def view(self, *, workers: int | None = None) -> TubeView:
        """Read the events (float32, scaled in place: one matrix in memory) and view them for gating."""
        from mrdflow.io import read_fcs

        fcs = read_fcs(self.path)
        fcs.scale_in_place()  # the stored values are not needed again: one matrix, not two
        return TubeView(fcs, self.resolved, self.compensation, self.transforms, name=self.name, workers=workers)


def open_tube(path: str | Path, panel: Panel, transforms: Mapping[str, Mapping], *, compensation: str = "fcs",
              unstained: Iterable[str] = (), name: str = "", workdir: str | Path = ".",
              min_events: int = 0) -> OpenTube:
    """Open one tube for gating: read its header, resolve ``panel`` against its channels and
    build its compensation; the events are not read (:meth:`OpenTube.view` reads them,
    :func:`~mrdflow.gating.gate_tube_streamed` streams them).

    ``compensation``: ``"fcs"`` (the file's $SPILLOVER), ``"none"`` or a matrix file (relative to
    ``workdir``); ``unstained``: markers an FMO control leaves unstained (they fall back to their
    detector channel); ``name``: the file as messages name it (default: ``path``); ``min_events``:
    fewer events than this is an error. Raises :class:`~mrdflow.errors.MrdflowError` (too few
    events), :class:`~mrdflow.panels.PanelError` or :class:`~mrdflow.gating.CompensationError`
    (also when the spillover names a channel the file lacks).
    """
    from mrdflow.io import read_header

    header = read_header(path)
    name = name or str(path)
    if header.n_events < min_events:
        raise MrdflowError(f"{name}: only {header.n_events} events (minimum {min_events})")
    resolved = resolve_panel(panel, header.pnn, header.pns, unstained=unstained, file=name)
    comp = compensation_for(compensation, header.metadata, file=name, workdir=workdir)
    if comp is not None:
        lacking = [d for d in comp.detectors if d not in header.pnn]
        if lacking:
            raise CompensationError(f"{name}: the spillover matrix names channel(s) {lacking} that the file lacks "
                                    f"(its channels: {', '.join(header.pnn)})")
    return OpenTube(str(path), name, header, resolved, comp, dict(transforms))

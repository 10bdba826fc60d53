"""Calibrating one panel's gating template on a lab's own files.

Each file is opened the way the pipeline opens it (:func:`mrdflow.gating.open_tube` with the
config's panel, compensation and transforms) and gated with the shared template (placed on at most
``max_events`` events, a seeded uniform sample, as the pipeline places a large tube), so that each
marker's values can be pooled on the population its expected positions describe (the
``population`` of the template's ``expected:`` section, e.g. the nucleated cells of a marrow or the
lymphocytes of a blood tube; every event when none is named). Each file counts the same in the
pooled density. The markers' populations are then located (:mod:`._modes`) and mapped
(:mod:`._mapping`).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mrdflow.calibration._mapping import (
    ExpectedMarker,
    ExpectedPositions,
    WindowMap,
    map_for,
    map_rules,
    map_strategy,
    read_expected,
)
from mrdflow.calibration._modes import MarkerModes, locate_main, locate_modes
from mrdflow.errors import CalibrationError

__all__ = ["MarkerCalibration", "PanelCalibration", "calibrate_markers", "calibrate_panel", "calibrate_pooled"]

#: Events a file is gated on at most (a seeded uniform sample of a larger file).
MAX_EVENTS = 200_000


@dataclass(frozen=True)
class MarkerCalibration:
    """One dimension's calibration: what was expected and found, the map and why.

    status: ``affine``, ``shift``, ``scale`` (the map's kind) or ``template`` (left as in the
    template). ``values``/``weights``: the pooled gate-unit values (for the plot)."""

    marker: str
    expected: ExpectedMarker
    modes: MarkerModes
    map: WindowMap
    note: str
    values: np.ndarray = field(repr=False, default_factory=lambda: np.zeros(0))
    weights: np.ndarray = field(repr=False, default_factory=lambda: np.zeros(0))

    @property
    def status(self) -> str:
        return self.map.kind


@dataclass
class PanelCalibration:
    """A panel calibrated on a lab's files: the template's rules and strategy, the per-marker
    results, the mapped rules (``gates``, ``expected``) and strategy, and what it came from."""

    panel: str
    template_dir: Path
    files: list[str]
    markers: dict[str, MarkerCalibration]
    template_gates: dict
    gates: dict
    expected: dict
    strategy: object
    unmapped: dict[str, str] = field(default_factory=dict)
    review: list[str] = field(default_factory=list)
    when: str = field(default_factory=lambda: dt.date.today().isoformat())

    @property
    def maps(self) -> dict[str, WindowMap]:
        return {m: c.map for m, c in self.markers.items()}


def calibrate_markers(expected: ExpectedPositions,
                      pooled: Mapping[str, tuple[np.ndarray, np.ndarray | None]]) -> dict[str, MarkerCalibration]:
    """Each expected marker's populations located in its pooled (values, weights) and mapped."""
    out = {}
    for name, exp in expected.markers.items():
        values, weights = pooled.get(name, (np.zeros(0), None))
        weights = np.ones(len(values)) if weights is None else np.asarray(weights)
        if exp.scatter:
            modes = locate_main(values, weights)
        else:
            modes = locate_modes(values, weights, expected_negative=exp.negative, expected_positive=exp.positive)
        m, note = map_for(exp, modes)
        out[name] = MarkerCalibration(name, exp, modes, m, note, np.asarray(values), weights)
    return out


def _mapped_expected(doc: Mapping, markers: Mapping[str, MarkerCalibration]) -> dict:
    """The template's ``expected:`` section with every position mapped: the positions this
    lab's instrument puts the populations at (the found ones where found)."""
    out = {k: v for k, v in doc.items() if k != "markers"}
    out["markers"] = {}
    for name, spec in (doc.get("markers") or {}).items():
        m = markers[name].map if name in markers else WindowMap()
        out["markers"][name] = {k: (m.bound(v) if k in ("negative", "positive", "main") else v)
                                for k, v in spec.items()}
    return out


def _dimensions(strategy) -> list[str]:
    """Every gate dimension of a strategy, in gate order (Time left out)."""
    out: list[str] = []
    for gid, path in strategy.get_gate_ids():
        for d in getattr(strategy.get_gate(gid, gate_path=path), "dimensions", None) or []:
            if d.id != "Time" and d.id not in out:
                out.append(d.id)
    return out


def _pool(files: Sequence[tuple[str | Path, str]], template, expected: ExpectedPositions, panel, panel_config: Mapping,
          *, qc, max_events: int, seed: int, workdir: str | Path) -> tuple[dict, list[str]]:
    """Per expected marker, the values of its population pooled over ``files`` ((path, name)
    pairs), each file weighted to count the same; and the shared template's unsure gates."""
    from mrdflow.gating import gate_tube, gate_tube_streamed, open_tube

    parts: dict[str, list[tuple[np.ndarray, np.ndarray]]] = {m: [] for m in expected.markers}
    review: list[str] = []
    for path, name in files:
        opened = open_tube(path, panel, panel_config["transform"], compensation=panel_config.get("compensation", "fcs"),
                           name=name, workdir=workdir)
        if opened.n_events > max_events:
            g = gate_tube_streamed(template, opened, qc_settings=qc, placement_events=max_events, seed=seed).sample
        else:
            g = gate_tube(template, opened.view(), qc_settings=qc)
        review += [f"{name}: {reason}" for _, reason in g.reviews()]
        for marker, exp in expected.markers.items():
            mask = g.mask(exp.population) if exp.population else np.ones(g.n_events, bool)
            v = np.asarray(g.view.values(marker)[mask], dtype=np.float64)
            v = v[np.isfinite(v)]
            if v.size:
                parts[marker].append((v, np.full(v.size, 1.0 / v.size)))
        g.view.release()
    pooled = {m: (np.concatenate([p[0] for p in ps]), np.concatenate([p[1] for p in ps])) if ps
              else (np.zeros(0), np.zeros(0)) for m, ps in parts.items()}
    return pooled, review


def calibrate_panel(panel_name: str, files: Sequence[tuple[str | Path, str]], *, panel, panel_config: Mapping,
                    gating_dir: str | Path, qc=None, max_events: int = MAX_EVENTS, seed: int = 0,
                    workdir: str | Path = ".") -> PanelCalibration:
    """Calibrate ``panel_name``'s template in ``gating_dir`` on ``files`` ((path, name as
    messages give it) pairs) of that panel: ``panel`` (:class:`mrdflow.panels.Panel`) and
    ``panel_config`` (the config's ``panels.<panel>``: transform, compensation) as the pipeline
    reads them; each file gated on at most ``max_events`` events (a sample seeded by ``seed``)."""
    from mrdflow.gating import QCSettings

    template, doc = _template(gating_dir, panel_name)
    if not files:
        raise CalibrationError(f"panel {panel_name!r}: no file to calibrate from")
    pooled, review = _pool(files, template, read_expected(doc["expected"]), panel, panel_config,
                           qc=qc or QCSettings(), max_events=max_events, seed=seed, workdir=workdir)
    return calibrate_pooled(panel_name, gating_dir, pooled, files=[n for _, n in files], review=review)


def _template(gating_dir: str | Path, panel_name: str):
    """The panel's template (its rules and ``expected:`` section checked) and its rules document.
    Raises :class:`~mrdflow.errors.CalibrationError` naming the file when it has no ``expected:``."""
    from mrdflow.gating import load_template, rules_document

    template = load_template(gating_dir, panel_name)
    rules_path = Path(gating_dir) / f"{panel_name}.yaml"
    doc = rules_document(rules_path) if rules_path.is_file() else {}
    if not doc.get("expected"):
        raise CalibrationError(f"{rules_path}: panel {panel_name!r} has no 'expected:' section (where the "
                               "template's populations sit) to calibrate from")
    return template, doc


def calibrate_pooled(panel_name: str, gating_dir: str | Path,
                     pooled: Mapping[str, tuple[np.ndarray, np.ndarray | None]], *, files: Sequence[str] = (),
                     review: Sequence[str] = ()) -> PanelCalibration:
    """Calibrate ``panel_name``'s template in ``gating_dir`` from already pooled gate-unit values
    ({marker: (values, weights or None)}, each on its ``expected:`` population); ``files``: what
    they came from (for the header), ``review``: the shared template's unsure gates on them."""
    template, doc = _template(gating_dir, panel_name)
    markers = calibrate_markers(read_expected(doc["expected"]), pooled)
    maps = {m: c.map for m, c in markers.items()}
    gates = doc.get("gates") or {}
    unmapped = {d: "no expected positions in the template" for d in _dimensions(template.strategy) if d not in markers}
    return PanelCalibration(
        panel=panel_name, template_dir=Path(gating_dir), files=list(files), markers=markers,
        template_gates=gates, gates=map_rules(gates, maps), expected=_mapped_expected(doc["expected"], markers),
        strategy=map_strategy(template.strategy, maps), unmapped=unmapped, review=list(review))

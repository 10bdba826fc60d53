"""The normal-PC reference: the phenotype of normal bone-marrow plasma cells that PC clusters (and,
at MRD levels, single PC events) are compared with to call them normal or aberrant (config
``clustering.reference``; the demo's is ``resources/reference/normal_pc.yaml``).

A lab builds its own from normal marrows acquired on its own instrument with its own settings
(``scripts/build_normal_pc_reference.py``): each marrow is gated by the per-sample stage, its PC
events are pooled (:func:`build_normal_pc_reference`) and written (:func:`write_reference`).
Values are in gate units: the config's fluorescence transform (logicle) of compensated values.

File format (YAML)::

    n_events: 13907                       # optional: normal PC events it was built from
    markers:
      CD27: {median: 0.636, sd: 0.055}     # one entry per marker
"""

from __future__ import annotations

import textwrap
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import yaml

from mrdflow.atomic import atomic_open

from ._events import BACKBONE, ClusteringError, PCEvents

__all__ = [
    "MIN_REFERENCE_EVENTS",
    "REFERENCE_MARKERS",
    "NormalPCReference",
    "build_normal_pc_reference",
    "load_reference",
    "write_reference",
]

#: Markers a built reference describes: the backbone less the PC-defining CD38 and CD138, plus
#: NGF tube 1's CD81 and CD117.
REFERENCE_MARKERS = ("CD27", "CD56", "CD45", "CD19", "CD81", "CD117")
#: Backbone markers every reference must describe (CD38 and CD138 define PCs, so they do not).
_REQUIRED = tuple(m for m in BACKBONE if m not in ("CD138", "CD38"))
#: Fewest pooled normal PC events a marker's median and spread are taken from.
MIN_REFERENCE_EVENTS = 100
#: Smallest spread a built reference gives a marker (logicle units).
MIN_SD = 0.02
_HEADER = (
    "Normal bone-marrow plasma-cell phenotype, used to label PC clusters normal or aberrant.",
)
_UNITS = (
    "Units: the config's fluorescence transform (logicle) of compensated values.",
    "median: typical expression of normal PCs; sd: central-95% spread ((q97.5 - q2.5) / 3.92).",
)


@dataclass(frozen=True)
class NormalPCReference:
    """Normal bone-marrow PC phenotype: per marker the expected median and tolerated spread (SD),
    in logicle units under the configured transform. source: where it came from (a file path or a
    description); n_events: normal PC events it was built from (None when not recorded)."""

    median: Mapping[str, float]
    sd: Mapping[str, float]
    source: str = ""
    n_events: int | None = None


def load_reference(path: str | Path) -> NormalPCReference:
    """Read a reference file (format: module docstring); it must describe CD27, CD56, CD45, CD19."""
    path = Path(path)
    try:
        doc = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as e:
        raise ClusteringError(f"{path}: cannot read normal-PC reference ({e})") from None
    markers = (doc or {}).get("markers") or {}
    med, sd = {}, {}
    for m, spec in markers.items():
        try:
            med[m] = float(spec["median"])
            sd[m] = float(spec["sd"])
        except (KeyError, TypeError, ValueError):
            raise ClusteringError(f"{path}: markers.{m} needs numeric 'median' and 'sd'") from None
        if sd[m] <= 0:
            raise ClusteringError(f"{path}: markers.{m}.sd must be > 0")
    missing = [m for m in _REQUIRED if m not in med]
    if missing:
        raise ClusteringError(f"{path}: reference lacks backbone marker(s) {missing}")
    n_events = (doc or {}).get("n_events")
    if n_events is not None and (not isinstance(n_events, int) or isinstance(n_events, bool) or n_events < 0):
        raise ClusteringError(f"{path}: n_events must be a whole number of events, not {n_events!r}")
    return NormalPCReference(med, sd, str(path), n_events)


def build_normal_pc_reference(tubes: Iterable[PCEvents], markers: Sequence[str] = REFERENCE_MARKERS, *,
                              min_events: int = MIN_REFERENCE_EVENTS, source: str = "") -> NormalPCReference:
    """The reference from normal marrows' PC events (as the per-sample stage keeps them).

    Every tube's events of a marker are pooled (a marker counts from the tubes that measure it);
    per marker the median and, as the spread, the central 95% expressed as an SD ((q97.5 − q2.5) /
    3.92, at least :data:`MIN_SD`), both rounded to 3 decimals (logicle units). The central 95%
    rather than a MAD: normal PCs hold real minor subsets (CD19−, CD56+) that a MAD of the main mode
    would call aberrant. ``n_events`` is the PC events of all tubes. Raises
    :class:`ClusteringError` when a marker has fewer than ``min_events`` events, or when
    ``markers`` leaves out a backbone marker the clustering needs (CD27, CD56, CD45, CD19).
    """
    lacking = [m for m in _REQUIRED if m not in markers]
    if lacking:
        raise ClusteringError(f"a normal-PC reference must describe {list(_REQUIRED)}; {lacking} not asked for")
    pooled: dict[str, list[np.ndarray]] = {m: [] for m in markers}
    n = 0
    for t in tubes:
        n += int(t.values.shape[0])
        for m in markers:
            if m in t.markers:
                pooled[m].append(t.values[:, t.markers.index(m)])
    med: dict[str, float] = {}
    sd: dict[str, float] = {}
    for m, parts in pooled.items():
        v = np.concatenate(parts) if parts else np.zeros(0)
        if v.size < min_events:
            raise ClusteringError(f"only {v.size} normal PC events for {m} (at least {min_events} needed): "
                                  f"add normal marrows, or marrows with more events")
        lo, hi = np.quantile(v, [0.025, 0.975])
        med[m] = round(float(np.median(v)), 3)
        sd[m] = round(max(float((hi - lo) / 3.92), MIN_SD), 3)
    return NormalPCReference(med, sd, source, n)


def write_reference(reference: NormalPCReference, path: str | Path, notes: Sequence[str] = ()) -> str:
    """Write ``reference`` in the format :func:`load_reference` reads (atomically); ``notes``: comment
    lines (provenance: when, from which marrows) put in its header. Returns the text written."""
    lines = [f"# {c}" for c in _HEADER]
    lines += [f"# {part}" for note in notes for part in textwrap.wrap(note, 100)]
    lines += [f"# {c}" for c in _UNITS]
    if reference.n_events is not None:
        lines.append(f"n_events: {int(reference.n_events)}")
    lines.append("markers:")
    lines += [f"  {m}: {{median: {float(v)!r}, sd: {float(reference.sd[m])!r}}}" for m, v in reference.median.items()]
    text = "\n".join(lines) + "\n"
    with atomic_open(path, "w") as fh:
        fh.write(text)
    return text

"""Panels: which marker sits on which channel of an FCS file.

A panel (``resources/panels/<name>.yaml``) lists scatter/time parameters and fluorescence markers,
each with aliases. Resolution looks at ``$PnS`` (the reagent, e.g. ``CD138 BV421``) first and at
``$PnN`` (the detector or, on some instruments, the marker) second. Comparison ignores case, spaces,
hyphens, underscores, dots and a fluorochrome written before or after the marker, so ``CD138 BV421``,
``CD138-BV421``, ``BV421 CD138`` and ``cd138`` all name CD138. A marker that matches no channel fails
with a :class:`~mrdflow.errors.PanelError` naming the panel, the marker and the channels present.

A panel entry may name a ``detector``: the instrument channel the lab acquires the marker on. It is
used only for controls that leave the marker unstained on purpose (an FMO tube) — never to guess a
stained marker.

A marker may have no channel of its own and be read on other markers' channels: ``shares: [CD4,
CD8]`` (one or several fluorescence markers of the same panel, each with a channel of its own).
Counting beads such as CountBright or Trucount are bright in every channel, so a lab with no free
channel reads them on the channels of markers that no cell carries together. Resolution then looks
for no channel for that marker (:attr:`ResolvedPanel.shared` records what it shares); the gating
view gives it, per event, the minimum of the shared markers' gate-unit values
(:class:`mrdflow.gating.TubeView`).

A panel names the read-out it feeds with ``readout:`` (one of :data:`READOUTS`): ``pc_mrd`` (marrow
plasma cells, the cohort PC model and the MRD call), ``nk`` (NK cells and NKG2A) or ``cart`` (CAR-T
absolute counts). A panel without ``readout`` is gated and its populations counted, and feeds no
read-out. The analysis asks a panel its read-out and never lists panel names.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from mrdflow.errors import PanelError

__all__ = [
    "READOUTS",
    "Marker",
    "Panel",
    "ResolvedPanel",
    "load_panel",
    "load_panels",
    "normalize_label",
    "readouts",
    "resolve_panel",
]

#: The read-outs a panel can feed (``readout:`` in its YAML file).
READOUTS = ("pc_mrd", "nk", "cart")

# Fluorochrome and tandem names that labs write next to a marker in $PnS. Longest forms first so
# that "PE-Cy7" is stripped whole rather than leaving "cy7" behind after "PE".
_FLUOROCHROMES = sorted(
    {
        "bv421", "bv480", "bv510", "bv570", "bv605", "bv650", "bv711", "bv750", "bv786",
        "buv395", "buv496", "buv563", "buv615", "buv661", "buv737", "buv805",
        "bb515", "bb700", "v450", "v500", "v500c", "pacificblue", "pacificorange", "horizonv450",
        "krome orange", "kromeorange", "fitc", "af488", "alexafluor488", "alexa488",
        "pe", "pecy5", "pecy55", "pecy7", "pedazzle594", "petexasred", "pecf594", "pe594", "ecd",
        "percp", "percpcy55", "percpefluor710", "pc5", "pc55", "pc7",
        "apc", "apcc750", "apch7", "apccy7", "apcalexafluor750", "apcr700", "apcef780",
        "apcfire750", "af647", "alexafluor647", "alexa647", "af700", "alexafluor700", "alexa700",
        "7aad", "dapi", "pi", "fvs450", "fvs510", "fvs575v", "fvs780",
    },
    key=len,
    reverse=True,
)
# Detector suffixes: area/height/width.
_MEASURE_SUFFIX = re.compile(r"[-_ ]?(a|h|w)$", re.IGNORECASE)
_NON_ALNUM = re.compile(r"[^0-9a-z/+]")


def normalize_label(text: str) -> str:
    """Lower-case ``text`` and drop spaces, hyphens, underscores and dots ("CD38 ME" -> "cd38me")."""
    return _NON_ALNUM.sub("", text.lower())


def _label_forms(text: str, *, detector: bool) -> set[str]:
    """Every normalised form a channel label can stand for a marker in.

    Includes the label itself, the label with a fluorochrome prefix/suffix removed and, for $PnN,
    without an -A/-H/-W measure suffix.
    """
    forms: set[str] = set()
    raw = [text]
    if detector:
        stripped = _MEASURE_SUFFIX.sub("", text.strip())
        if stripped and stripped != text.strip():
            raw.append(stripped)
    for r in raw:
        n = normalize_label(r)
        if not n:
            continue
        forms.add(n)
        for fl in _FLUOROCHROMES:
            fl_n = normalize_label(fl)
            if n.endswith(fl_n) and len(n) > len(fl_n):
                forms.add(n[: -len(fl_n)])
            if n.startswith(fl_n) and len(n) > len(fl_n):
                forms.add(n[len(fl_n):])
    return forms


@dataclass(frozen=True)
class Marker:
    """One panel entry: a marker (or scatter/time parameter) and the names it may appear under."""

    name: str
    aliases: tuple[str, ...]
    fluorochrome: str = ""
    detector: str = ""
    scatter: bool = False
    shares: tuple[str, ...] = ()  # markers whose channels it is read on (no channel of its own)

    def keys(self) -> set[str]:
        return {normalize_label(a) for a in (self.name, *self.aliases) if normalize_label(a)}


@dataclass(frozen=True)
class Panel:
    """A named panel: scatter/time parameters plus fluorescence markers, and the read-out it feeds
    (one of :data:`READOUTS`, or ``None`` for a panel that is only gated)."""

    name: str
    description: str
    specimen: str
    scatter: tuple[Marker, ...]
    markers: tuple[Marker, ...]
    source: str = ""
    readout: str | None = None

    @property
    def all(self) -> tuple[Marker, ...]:
        return self.scatter + self.markers

    def marker(self, name: str) -> Marker:
        for m in self.all:
            if m.name == name:
                return m
        raise PanelError(f"panel {self.name!r} has no marker {name!r} (it has {[m.name for m in self.all]})")


@dataclass(frozen=True)
class ResolvedPanel:
    """A panel matched to one file's channels: marker name -> column index and $PnN.

    ``shared``: marker -> the markers whose channels it is read on (a panel entry's ``shares``);
    such a marker is in neither ``index`` nor ``pnn``.
    """

    panel: Panel
    index: Mapping[str, int]
    pnn: Mapping[str, str]
    via: Mapping[str, str] = field(default_factory=dict)  # marker -> "$PnS" | "$PnN" | "detector"
    shared: Mapping[str, tuple[str, ...]] = field(default_factory=dict)

    def columns(self, names: Iterable[str]) -> list[int]:
        return [self.index[n] for n in names]

    @property
    def marker_of(self) -> dict[str, str]:
        """$PnN -> the marker read on that channel (a ``shared`` marker has no channel of its own)."""
        return {pnn: m for m, pnn in self.pnn.items()}

    @property
    def fluorescence(self) -> list[str]:
        return [m.name for m in self.panel.markers]


def _marker_from(name: str, spec: Mapping | None, *, scatter: bool, source: str) -> Marker:
    spec = dict(spec or {})
    unknown = set(spec) - {"aliases", "fluorochrome", "detector", *(() if scatter else ("shares",))}
    if unknown:
        raise PanelError(f"{source}: marker {name!r} has unknown field(s) {sorted(unknown)}")
    aliases = spec.get("aliases") or []
    if not isinstance(aliases, list) or not all(isinstance(a, str) for a in aliases):
        raise PanelError(f"{source}: marker {name!r}: 'aliases' must be a list of strings")
    shares = spec.get("shares", ())
    if "shares" in spec:
        if not isinstance(shares, list) or not shares or not all(isinstance(s, str) for s in shares):
            raise PanelError(f"{source}: marker {name!r}: 'shares' must be a non-empty list of marker names")
        if len(set(shares)) != len(shares):
            raise PanelError(f"{source}: marker {name!r}: 'shares' names a marker twice ({shares})")
        if spec.get("detector"):
            raise PanelError(f"{source}: marker {name!r}: 'shares' (no channel of its own) and 'detector' "
                             "exclude each other")
    return Marker(
        name=str(name),
        aliases=tuple(aliases),
        fluorochrome=str(spec.get("fluorochrome", "")),
        detector=str(spec.get("detector", "")),
        scatter=scatter,
        shares=tuple(str(s) for s in shares),
    )


def _check_shares(markers: Sequence[Marker], source: str) -> None:
    """Every ``shares`` names other fluorescence markers of the panel, each with a channel of its
    own (errors name the file and the field)."""
    own = {m.name for m in markers if not m.shares}
    for m in markers:
        for s in m.shares:
            if s == m.name:
                raise PanelError(f"{source}: marker {m.name!r}: 'shares' names the marker itself")
            if s not in own:
                why = ("shares channels itself" if s in {x.name for x in markers}
                       else f"is not a fluorescence marker of the panel ({sorted(own)})")
                raise PanelError(f"{source}: marker {m.name!r}: shares: {s!r} {why}")


def load_panel(path: str | Path) -> Panel:
    """Read one panel YAML file; errors name the file and the field."""
    path = Path(path)
    try:
        doc = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise PanelError(f"{path}: panel file not found") from None
    except yaml.YAMLError as e:
        raise PanelError(f"{path}: not valid YAML ({e})") from None
    if not isinstance(doc, dict):
        raise PanelError(f"{path}: a panel file must be a mapping with 'name' and 'markers'")
    unknown = set(doc) - {"name", "description", "specimen", "readout", "scatter", "markers"}
    if unknown:
        raise PanelError(f"{path}: unknown top-level field(s) {sorted(unknown)}")
    for key in ("name", "markers"):
        if key not in doc:
            raise PanelError(f"{path}: missing field {key!r}")
    if not isinstance(doc["markers"], dict) or not doc["markers"]:
        raise PanelError(f"{path}: 'markers' must be a non-empty mapping of marker -> spec")
    readout = doc.get("readout")
    if readout is not None and readout not in READOUTS:
        raise PanelError(f"{path}: readout: {readout!r} is not one of {list(READOUTS)}")
    src = str(path)
    scatter = tuple(_marker_from(k, v, scatter=True, source=src) for k, v in (doc.get("scatter") or {}).items())
    markers = tuple(_marker_from(k, v, scatter=False, source=src) for k, v in doc["markers"].items())
    _check_shares(markers, src)
    return Panel(
        name=str(doc["name"]),
        description=str(doc.get("description", "")),
        specimen=str(doc.get("specimen", "")),
        scatter=scatter,
        markers=markers,
        source=src,
        readout=readout,
    )


def readouts(panels: Mapping[str, Panel]) -> dict[str, str | None]:
    """Panel name -> the read-out it feeds (``None`` when it feeds none)."""
    return {name: p.readout for name, p in panels.items()}


def load_panels(folder: str | Path) -> dict[str, Panel]:
    """Every ``*.yaml`` panel in ``folder``, keyed by panel name."""
    panels: dict[str, Panel] = {}
    for p in sorted(Path(folder).glob("*.yaml")):
        panel = load_panel(p)
        if panel.name in panels:
            raise PanelError(f"{p}: panel name {panel.name!r} already defined in {panels[panel.name].source}")
        panels[panel.name] = panel
    return panels


def resolve_panel(
    panel: Panel,
    pnn: Sequence[str],
    pns: Sequence[str] | None = None,
    *,
    unstained: Iterable[str] = (),
    file: str = "",
) -> ResolvedPanel:
    """Map every marker of ``panel`` to a column of a file with labels ``pnn``/``pns``.

    ``$PnS`` is searched first, then ``$PnN``. Markers named in ``unstained`` (an FMO control's
    omitted marker) fall back to the panel's ``detector`` channel. A marker that ``shares`` other
    markers' channels is looked for nowhere: :attr:`ResolvedPanel.shared` records it. Raises :class:`PanelError` naming
    the panel, the file, the marker and the channels present when a marker is missing or matches
    more than one channel.
    """
    pns = list(pns) if pns is not None else [""] * len(pnn)
    if len(pns) != len(pnn):
        raise PanelError(f"{file or 'file'}: {len(pnn)} $PnN labels but {len(pns)} $PnS labels")
    unstained = set(unstained)
    s_forms = [_label_forms(s, detector=False) if s else set() for s in pns]
    n_forms = [_label_forms(n, detector=True) for n in pnn]
    n_exact = [normalize_label(n) for n in pnn]

    index: dict[str, int] = {}
    via: dict[str, str] = {}
    where = f" in {file}" if file else ""
    present = ", ".join(f"{n}" + (f" [{s}]" if s else "") for n, s in zip(pnn, pns))
    shared = {m.name: m.shares for m in panel.all if m.shares}
    for m in panel.all:
        if m.shares:
            continue  # read on the shared markers' channels: it has none of its own
        keys = m.keys()
        hits: list[int] = []
        how = ""
        # Scatter/time parameters are named by the detector: exact $PnN first (FSC-A must not
        # match FSC-H through a stripped suffix), fluorescence markers by the reagent.
        order = (("$PnN", n_exact), ("$PnS", s_forms)) if m.scatter else (("$PnS", s_forms), ("$PnN", n_forms))
        for label, forms in order:
            hits = [i for i, f in enumerate(forms) if (keys & f if isinstance(f, set) else f in keys)]
            if hits:
                how = label
                break
        if not hits and m.name in unstained and m.detector:
            hits = [i for i, n in enumerate(pnn) if normalize_label(n) == normalize_label(m.detector)]
            how = "detector"
        if len(hits) > 1 and not m.scatter:
            # Prefer the area measurement when a marker is recorded as -A and -H/-W.
            area = [i for i in hits if pnn[i].strip().upper().endswith("-A")]
            hits = area if len(area) == 1 else hits
        if not hits:
            raise PanelError(
                f"panel {panel.name!r}: marker {m.name!r} (aliases {list(m.aliases)}) not found{where}; "
                f"channels present: {present}"
            )
        if len(hits) > 1:
            raise PanelError(
                f"panel {panel.name!r}: marker {m.name!r} matches several channels{where}: "
                f"{[pnn[i] for i in hits]}; make the aliases or $PnS unambiguous"
            )
        index[m.name] = hits[0]
        via[m.name] = how
    taken: dict[int, str] = {}
    for name, i in index.items():
        if i in taken:
            raise PanelError(
                f"panel {panel.name!r}: markers {taken[i]!r} and {name!r} resolve to the same channel "
                f"{pnn[i]!r}{where}"
            )
        taken[i] = name
    return ResolvedPanel(panel=panel, index=index, pnn={k: pnn[i] for k, i in index.items()}, via=via,
                         shared=shared)

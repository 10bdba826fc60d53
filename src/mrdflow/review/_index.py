"""Which tubes the reviewers' workspaces hold (config ``review.workspaces``), worked out when the
workflow is parsed: cheap (an ``xml.etree`` pass over each workspace's sample list, no FlowKit, no
FCS file read), so Snakemake knows which samples to redo before any job runs.

A tube is a sample of a workspace when FlowJo's sample name (or the file name of its DataSet
URI) is the tube's file name, or failing that the same name without ``.fcs``, ignoring case (the
first two rules of :mod:`mrdflow.gating._workspace`; its ``$FIL`` rule needs every FCS header and
is left to template workspaces: a review workspace comes from ``results/review``, which names
samples by file name). What cannot be used is a problem, not an error, so the rest of the cohort
goes on: an unreadable or non-FlowJo file, a workspace sample no tube of the sheet is, a sample
two tubes could be, a tube in several workspaces (the last listed wins).

Which samples are redone
------------------------
A reviewed workspace holds the whole batch; the reviewer moves a few gates. A sample is redone
(rule ``review_sample``, then its read-outs and the cohort) when a tube of it is in a workspace
and either (1) its gates there differ from the same sample's gates in the batch's export
(``results/review/<batch>.wsp``, compared by :func:`gate_digests`: compensation, transforms,
every population's path, kind, coordinates rounded to 9 significant digits, and operands), or no
export is there to compare with; or (2) placement flagged the sample (its data-driven
``stage1.json`` lists ``review_needed``): the reviewer has seen it, which settles the flags.
Any other sample of the workspace is as the pipeline left it and is not redone.
"""

from __future__ import annotations

import hashlib
import os
import xml.etree.ElementTree as ET
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from mrdflow.config import Tube

__all__ = ["ALL_SAMPLES", "ReviewedTube", "ReviewIndex", "gate_digests", "index_reviews"]

#: FlowJo's group of every sample.
ALL_SAMPLES = "All Samples"


@dataclass(frozen=True)
class ReviewedTube:
    """A tube a reviewer's workspace holds: the sheet's ``sample_id``, ``tube`` and ``fcs``, the
    ``workspace`` path and FlowJo's name of the sample in it (``ws_sample``)."""

    sample_id: str
    tube: str
    fcs: str
    workspace: str
    ws_sample: str

    def as_dict(self) -> dict:
        return {"sample_id": self.sample_id, "tube": self.tube, "fcs": self.fcs, "workspace": self.workspace,
                "ws_sample": self.ws_sample}


@dataclass(frozen=True)
class ReviewIndex:
    """Reviewed tubes by sample_id, and the problems found (one line each, naming the workspace)."""

    by_sample: Mapping[str, tuple[ReviewedTube, ...]] = field(default_factory=dict)
    problems: tuple[str, ...] = ()
    unchanged: tuple[str, ...] = ()  # samples a workspace holds as the export had them, not flagged

    def of(self, sample_id: str) -> tuple[ReviewedTube, ...]:
        return self.by_sample.get(sample_id, ())

    def workspaces_of(self, sample_id: str) -> list[str]:
        """The workspaces holding a tube of the sample (the rule's inputs), once each."""
        return list(dict.fromkeys(r.workspace for r in self.of(sample_id)))


def _base(path: str) -> str:
    return path.replace("\\", "/").rsplit("/", 1)[-1]


def _stem(name: str | None) -> str | None:
    if name is None:
        return None
    return (name[:-4] if name.lower().endswith(".fcs") else name).lower()


_BOOLEAN = ("AndNode", "OrNode", "NotNode")


def _r(x: str | None) -> str | None:
    return None if x is None else f"{float(x):.9g}"


def _geometry(gate_el: ET.Element | None) -> list:
    if gate_el is None:
        return []
    out = []
    for el in gate_el.iter():
        tag = el.tag.rsplit("}", 1)[-1]
        attrs = {k.rsplit("}", 1)[-1]: v for k, v in el.attrib.items()}
        if tag == "dimension":
            names = [v for c in el for k, v in c.attrib.items() if k.endswith("name")]
            out.append(("dim", tuple(names), _r(attrs.get("min")), _r(attrs.get("max"))))
        elif tag == "coordinate":
            out.append(("vertex", _r(attrs.get("value"))))
        elif tag.endswith("Gate") and tag != "Gate":
            out.append(("kind", tag))
    return out


def _walk(parent: ET.Element | None, where: tuple[str, ...], items: list) -> None:
    """Every population under ``parent``: (kind, path, geometry, boolean operands), depth first."""
    if parent is None:
        return
    for child in parent:
        if child.tag not in ("Population", *_BOOLEAN):
            continue
        here = (*where, child.get("name", ""))
        deps = tuple(d.get("name") for d in child.findall("Dependents/Dependent"))
        items.append((child.tag, here, tuple(_geometry(child.find("Gate"))), deps))
        _walk(child.find("Subpopulations"), here, items)


_VOLATILE = {"id", "version", "editable", "color", "status", "spectral"}


def _canon(v: str) -> str:
    try:
        return f"{float(v):.9g}"
    except ValueError:
        return v


def _settings(sample: ET.Element) -> tuple:
    """The sample's compensation matrix and transforms, as plain data (ids and colours left out)."""
    out = []
    for child in sample:
        local = child.tag.rsplit("}", 1)[-1]
        if local in ("Transformations", "spilloverMatrix"):
            for el in child.iter():
                attrs = sorted((k.rsplit("}", 1)[-1], _canon(v)) for k, v in el.attrib.items()
                               if k.rsplit("}", 1)[-1] not in _VOLATILE)
                out.append((el.tag.rsplit("}", 1)[-1], tuple(attrs)))
    return ("settings", tuple(out))


def gate_digests(path: str | os.PathLike) -> dict[str, str]:
    """Per sample (FlowJo's sample name), a digest of its gates: its compensation matrix and
    transforms, and every population's path, kind, dimensions with their bounds, polygon vertices
    and boolean operands. Equal digests: the same
    gates, however FlowJo formatted them. (An ``xml.etree`` pass; an unreadable file raises.)"""
    root = ET.parse(os.fspath(path)).getroot()
    out = {}
    for sample in root.iter("Sample"):
        node = sample.find("SampleNode")
        if node is not None:
            items: list = [_settings(sample)]
            _walk(node.find("Subpopulations"), (), items)
            out[node.get("name", "")] = hashlib.sha256(repr(sorted(items, key=repr)).encode()).hexdigest()
    return out


def _digests_or_none(path: str | None) -> dict[str, str] | None:
    if path is None or not os.path.exists(path):
        return None
    try:
        return gate_digests(path)
    except (ET.ParseError, OSError, ValueError):
        return None


def index_reviews(workspaces: Sequence[str | os.PathLike], tubes: Sequence[Tube], *,
                  export_of: Callable[[Tube], str | None] | None = None,
                  flagged: Callable[[str], bool] | None = None) -> ReviewIndex:
    """The tubes each workspace holds (rules in the module docstring), later workspaces winning,
    kept for the samples to redo: ``export_of(tube)`` is the path of the batch export holding the
    tube (None: no export, the tube counts as changed); ``flagged(sample_id)``: placement flagged
    the sample. Without ``export_of`` every held sample is redone."""
    from mrdflow.gating import GatingError, workspace_samples

    problems: list[str] = []
    chosen: dict[tuple[str, str], ReviewedTube] = {}
    by_name: dict[str, list[Tube]] = {}
    by_stem: dict[str, list[Tube]] = {}
    for t in tubes:
        by_name.setdefault(_base(t.fcs), []).append(t)
        by_stem.setdefault(_stem(_base(t.fcs)), []).append(t)
    for ws in workspaces:
        path = os.fspath(ws)
        try:
            samples = workspace_samples(path, ALL_SAMPLES)
        except GatingError as e:
            problems.append(f"review workspace not used: {e}")
            continue
        if not samples:
            problems.append(f"{path}: the workspace holds no sample")
        seen_here: dict[tuple[str, str], str] = {}
        for s in samples:
            found = ([t for n in dict.fromkeys((s.name, s.file)) if n for t in by_name.get(n, [])]
                     or [t for n in dict.fromkeys((_stem(s.name), _stem(s.file))) if n for t in by_stem.get(n, [])])
            found = list({t.key: t for t in found}.values())
            if not found:
                problems.append(f"{path}: sample {s.name!r} is not in the sample sheet (no tube's file is named so); "
                                "its gates are not used")
                continue
            if len(found) > 1:
                problems.append(f"{path}: sample {s.name!r} could be any of the tubes "
                                f"{', '.join(t.key for t in found)} (same file name); its gates are not used")
                continue
            t = found[0]
            key = (t.sample_id, t.tube)
            if key in seen_here:
                problems.append(f"{path}: tube {t.key} is both sample {seen_here[key]!r} and {s.name!r}; "
                                f"{s.name!r} is used")
            elif key in chosen:
                problems.append(f"tube {t.key} is in review workspaces {chosen[key].workspace} and {path}: "
                                "the later one is used")
            seen_here[key] = s.name
            chosen[key] = ReviewedTube(t.sample_id, t.tube, t.fcs, path, s.name)
    by_sample: dict[str, list[ReviewedTube]] = {}
    changed: set[str] = set()
    digests: dict[str, dict[str, str] | None] = {}
    for t in tubes:  # sheet order
        r = chosen.get((t.sample_id, t.tube))
        if r is None:
            continue
        by_sample.setdefault(t.sample_id, []).append(r)
        if export_of is None:
            changed.add(t.sample_id)
            continue
        ref = export_of(t)
        for p in (ref, r.workspace):
            if p not in digests:
                digests[p] = _digests_or_none(p)
        theirs, ours = digests[r.workspace], digests[ref]
        if ours is None or theirs is None or ours.get(_base(t.fcs)) != theirs.get(r.ws_sample):
            changed.add(t.sample_id)
    redo = {k: tuple(v) for k, v in by_sample.items() if k in changed or (flagged is not None and flagged(k))}
    return ReviewIndex(redo, tuple(problems), tuple(k for k in by_sample if k not in redo))


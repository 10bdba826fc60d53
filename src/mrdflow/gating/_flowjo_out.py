"""A batch of gated samples as one FlowJo 10 workspace (``.wsp``) for review in FlowJo.

Every sample keeps its own data-driven gates, the compensation the pipeline used and the
transforms, and names its FCS file by a ``file:`` URI so FlowJo finds it.

How the workspace is built
--------------------------
FlowKit's writer (``export_flowjo_wsp``, behind ``Session.export_wsp``) writes one gating
strategy for every sample of one group: the same gates, transforms and matrices for all. Ours
differ per sample, and the writer also (1) puts the compensation matrix only under
``<Matrices>``, not in the ``<Sample>`` where FlowJo (and FlowKit's reader) look for the matrix a
sample uses, so compensated gates do not read back; (2) writes the sample's name as its DataSet
URI; (3) wants a loaded ``flowkit.Sample`` (every event) for its keywords; (4) numbers gates per
sample from the same start. So FlowKit writes each sample on its own (its gate elements: the
coordinates taken back through the transforms to FlowJo's channel scale, the ``Comp-`` prefixes,
the transforms per parameter) and this module assembles the workspace with ``xml.etree``: the
Sample elements, the matrix inside each sample and under ``<Matrices>``, the URIs, the keywords
from the FCS header, gate ids unique across the workspace, the ``<Groups>`` (``All Samples``
and ``group``) and the attributes FlowJo 10 writes on these elements that FlowKit leaves out
(the workspace's ``clientTimestamp``, ``nonAutoSaveFileName`` and schema location,
``expanded``/``sortPriority`` on nodes, the sample's event ``count`` from ``$TOT``,
``eventsInside`` and the drawing attributes of gates, ``quadId`` spelt as FlowJo spells it, a
linear transform's ``gain``, the matrix's ``transforms:id``/``status``, the groups' ``role``;
FlowJo's display state, ``<Graph>`` and the like, is left to FlowJo).

Boolean gates
-------------
FlowKit's writer has no boolean gates, so each is handed to it as a stand-in population (a copy of
a drawn gate under the boolean's own name: its children nest under it and get their ids) that is
then turned into FlowJo's boolean node: ``<AndNode>``, ``<OrNode>`` or ``<NotNode>`` beside the
``<Population>`` elements of the parent's ``<Subpopulations>``, with ``<Dependents>`` naming each
operand by its full gate path from the sample (``A/B/C``, without FlowKit's ``root``) and the
children in its own ``<Subpopulations>``. As FlowJo does, a NotNode holds a copy of the ``<Gate>``
of the population it negates (when that is a drawn gate); children of an AND/OR node carry no
``gating:parent_id`` (the node has no gate to name). FlowJo (and FlowKit reading FlowJo) evaluate a
boolean node within its parent population, as the pipeline does.

FlowJo has no per-operand complement, so an operand used as a complement (``complement: True``,
as in time QC's ``TimeOK`` = AND of NOT ``TimeOK_bad1..n`` and the shared-bead ``Cells`` = AND of
``Cells_FSC-A`` and NOT ``Cells_Beads_high``) becomes a helper ``<NotNode>`` beside the boolean,
named ``NOT <operand>`` + :data:`HELPER_SUFFIX` (``NOT TimeOK_bad1 (mrdflow helper)``), and the
AND/OR node depends on the helper instead: within the parent P, ``P and (P and not B)`` is
``P and not B``, so every population keeps exactly the pipeline's events. Booleans of one parent
that complement the same operand share its helper. A helper is no pipeline gate: an importer
drops every population whose name ends with :data:`HELPER_SUFFIX`. An AND/OR of a single
complemented operand is written as a plain ``<NotNode>`` (no helper). Refused
(:class:`GatingError`): a NOT whose operand is itself complemented (FlowJo has no identity node),
a NOT of more than one operand, and names FlowJo cannot address (a ``/`` in a gate name) or a
helper name already taken by a gate.

Limits: gates are rectangles, polygons and booleans; a dimension is compensated ("FCS") or not
("uncompensated"), no matrix of the strategy's own; populations carry no ``count`` (FlowJo
computes counts when it opens the workspace).
"""

from __future__ import annotations

import copy
import datetime
import io
import os
import re
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from mrdflow.atomic import atomic_open
from mrdflow.gating._rules import GatingError

__all__ = ["HELPER_SUFFIX", "FlowJoSample", "write_workspace"]

_NS = {
    "gating": "http://www.isac-net.org/std/Gating-ML/v2.0/gating",
    "transforms": "http://www.isac-net.org/std/Gating-ML/v2.0/transformations",
    "data-type": "http://www.isac-net.org/std/Gating-ML/v2.0/datatypes",
}
_XSI = "http://www.w3.org/2001/XMLSchema-instance"
for _prefix, _uri in {**_NS, "xsi": _XSI}.items():
    ET.register_namespace(_prefix, _uri)

#: FlowJo's name for the matrix of the FCS file's own spillover keyword.
MATRIX_NAME = "Acquisition-defined"
COMP_PREFIX = "Comp-"
FLOWJO_VERSION = "10.7.1"
ALL_SAMPLES = "All Samples"
#: End of the name of every helper population (``NOT <operand>`` + this): the NOT nodes that stand
#: for complemented operands of boolean gates (module docstring). No pipeline gate; an importer
#: drops them.
HELPER_SUFFIX = " (mrdflow helper)"
_GID = f"{{{_NS['gating']}}}id"
_GPARENT = f"{{{_NS['gating']}}}parent_id"
_GATE_ID_ATTRS = (_GID, _GPARENT)
_BOOL_TAGS = {"and": "AndNode", "or": "OrNode", "not": "NotNode"}
# FlowJo 10 sorts a node list by sortPriority: 10 on populations, 13 on NOT and 15 on AND nodes
# (as FlowJo writes them); OR nodes are given 14, between the two.
_SORT_PRIORITY = {"Population": "10", "NotNode": "13", "OrNode": "14", "AndNode": "15"}
_SCHEMA_LOCATION = " ".join(f"{_NS[k]} http://www.isac-net.org/std/Gating-ML/v2.0/gating/{xsd}" for k, xsd in (
    ("gating", "Gating-ML.v2.0.xsd"), ("transforms", "Transformations.v2.0.xsd"),
    ("data-type", "DataTypes.v2.0.xsd"))) + " "
# The drawing attributes FlowJo writes on every rectangle and polygon (after eventsInside).
_GATE_DRAWING = {"annoOffsetX": "0", "annoOffsetY": "0", "tint": "#000000", "isTinted": "0",
                 "lineWeight": "Normal", "userDefined": "1"}


@dataclass(frozen=True)
class FlowJoSample:
    """One sample of a review workspace.

    ``name``: FlowJo's sample name, the FCS file name. ``fcs_path``: the file (written as a
    ``file:`` URI, absolute). ``strategy``: its gates (FlowKit ``GatingStrategy`` on the file's
    ``$PnN`` channels, or ``TubeGating.strategy``). ``compensation``: the spillover the pipeline
    applied to "FCS" dimensions (``OpenTube.compensation``: ``detectors`` and ``spill``; or a
    ``flowkit.Matrix``; or ``(detectors, matrix)``), None when the events were not compensated.
    """

    name: str
    fcs_path: str
    strategy: Any
    compensation: Any = None


@dataclass(frozen=True)
class _BoolNode:
    """A FlowJo boolean node to write: its full path (``root`` first), element tag, the full paths
    of its operands, and whether it is a helper (no gate of the strategy)."""

    path: tuple[str, ...]
    tag: str
    dependents: tuple[tuple[str, ...], ...]
    helper: bool = False


def _fk_matrix(comp):
    """The compensation as a ``flowkit.Matrix`` (None stays None)."""
    import flowkit as fk

    if comp is None or isinstance(comp, fk.Matrix):
        return comp
    if hasattr(comp, "spill"):
        detectors, spill = comp.detectors, comp.spill
    else:
        detectors, spill = comp
    return fk.Matrix(spill, list(detectors))


def _check_strategy(sample: FlowJoSample, detectors: set[str]) -> None:
    import flowkit as fk

    for gid, path in sample.strategy.get_gate_ids():
        gate = sample.strategy.get_gate(gid, gate_path=path)
        if "/" in gid:
            raise GatingError(f"{sample.name}: gate {gid!r} has a '/' in its name, which FlowJo reads as a "
                              "path separator")
        if isinstance(gate, fk.gates.BooleanGate):
            continue  # checked when its nodes are planned (_boolean_plan)
        if not isinstance(gate, (fk.gates.RectangleGate, fk.gates.PolygonGate)):
            raise GatingError(f"{sample.name}: gate {gid!r} is a {type(gate).__name__}; a FlowJo review workspace "
                              "holds rectangle, polygon and boolean gates only")
        for dim in gate.dimensions:
            ref = dim.compensation_ref
            if ref not in (None, "uncompensated", "FCS"):
                raise GatingError(f"{sample.name}: gate {gid!r} dimension {dim.id!r} uses compensation {ref!r}; "
                                  "only the file's own ('FCS') or none is written")
            if ref in (None, "uncompensated") and dim.id in detectors:
                raise GatingError(f"{sample.name}: gate {gid!r} reads {dim.id!r} uncompensated, but FlowJo applies "
                                  "one compensation to every detector of a sample")


def _ref_path(sample: FlowJoSample, gid: str, ref: dict) -> tuple[str, ...]:
    """Full path (``root`` first) of the gate a boolean reference names."""
    path = ref.get("path")
    if path is None:
        raise GatingError(f"{sample.name}: boolean gate {gid!r} names {ref.get('ref')!r} without its gate path")
    path = tuple(path)
    if path[:1] != ("root",):
        path = ("root", *path)
    return (*path, ref["ref"])


def _boolean_plan(sample: FlowJoSample) -> list[_BoolNode]:
    """The FlowJo nodes of the strategy's boolean gates, helpers first (module docstring)."""
    import flowkit as fk

    strategy = sample.strategy
    ids = strategy.get_gate_ids()
    gates = {(*path, gid) for gid, path in ids}
    plan: list[_BoolNode] = []
    helpers: dict[tuple[str, ...], tuple[str, ...]] = {}  # helper path -> the operand it negates
    for gid, path in ids:
        gate = strategy.get_gate(gid, gate_path=path)
        if not isinstance(gate, fk.gates.BooleanGate):
            continue
        node = (*path, gid)
        refs = [(_ref_path(sample, gid, r), bool(r.get("complement", False))) for r in gate.gate_refs]
        unknown = [p for p, _ in refs if p not in gates]
        if unknown:
            raise GatingError(f"{sample.name}: boolean gate {gid!r} names gates not in the strategy: "
                              f"{['/'.join(p[1:]) for p in unknown]}")
        if gate.type == "not":
            if len(refs) != 1 or refs[0][1]:
                raise GatingError(f"{sample.name}: NOT gate {gid!r} must name exactly one gate, not as a complement "
                                  "(FlowJo's NOT node negates one population)")
            plan.append(_BoolNode(node, "NotNode", (refs[0][0],)))
            continue
        if len(refs) == 1 and refs[0][1]:  # AND/OR of one complemented gate: a NOT
            plan.append(_BoolNode(node, "NotNode", (refs[0][0],)))
            continue
        deps = []
        for dep, complement in refs:
            if complement:
                helper = (*path, f"NOT {dep[-1]}{HELPER_SUFFIX}")
                if helper in gates or helpers.get(helper, dep) != dep:
                    raise GatingError(f"{sample.name}: boolean gate {gid!r}: the helper population {helper[-1]!r} "
                                      "for its complemented operand is already a gate, or negates another one")
                if helper not in helpers:
                    helpers[helper] = dep
                    plan.append(_BoolNode(helper, "NotNode", (dep,), helper=True))
                dep = helper
            deps.append(dep)
        plan.append(_BoolNode(node, _BOOL_TAGS[gate.type], tuple(deps)))
    return plan


def _writer_strategy(sample: FlowJoSample, plan: Sequence[_BoolNode]):
    """The strategy FlowKit's writer can write: each boolean gate (and each helper, added beside
    the boolean that uses it) a stand-in copy of a drawn gate under the boolean's name."""
    import flowkit as fk

    src = sample.strategy
    out = fk.GatingStrategy()
    for tid, xform in src.transformations.items():
        out.add_transform(tid, xform)
    for mid, matrix in src.comp_matrices.items():
        out.add_comp_matrix(mid, matrix)
    ids = src.get_gate_ids()
    drawn = [g for g in (src.get_gate(gid, gate_path=path) for gid, path in ids)
             if not isinstance(g, fk.gates.BooleanGate)]
    helpers_before: dict[tuple[str, ...], list[tuple[str, ...]]] = {}
    for b in plan:
        if b.helper:
            user = next(u.path for u in plan if not u.helper and b.path in u.dependents)
            helpers_before.setdefault(user, []).append(b.path)

    def stand_in(name: str):
        if not drawn:
            raise GatingError(f"{sample.name}: boolean gates with no rectangle or polygon gate to refer to")
        gate = copy.deepcopy(drawn[0])  # its dimensions and transforms are already the strategy's
        gate.gate_name = name
        return gate

    for gid, path in ids:
        gate = src.get_gate(gid, gate_path=path)
        if isinstance(gate, fk.gates.BooleanGate):
            for helper in helpers_before.get((*path, gid), ()):
                out.add_gate(stand_in(helper[-1]), tuple(path))
            gate = stand_in(gid)
        out.add_gate(copy.deepcopy(gate), tuple(path))
    return out


#: The TEXT keywords a review workspace carries: those describing the acquisition and its channels.
#: Free text ($SRC, $SMNO, $COM, a lab's own keywords) may hold names or hospital numbers and stays
#: out, as from every mrdflow output; FlowJo reads the file's own keywords when it opens it.
_KEYWORDS = re.compile(r"\$(FIL|TOT|PAR|DATATYPE|MODE|BYTEORD|CYT|CYTSN|DATE|BTIM|ETIM|TIMESTEP|SPILLOVER|"
                       r"P\d+[NSRBEGV]|P\d+DISPLAY)|SPILL|\$SPILL", re.IGNORECASE)


def _keywords(fcs_path: str) -> tuple[str, dict[str, str]]:
    """FCS version and the file's TEXT keywords that :data:`_KEYWORDS` allows (none when it cannot
    be read: FlowJo reads them)."""
    from mrdflow.errors import MrdflowError
    from mrdflow.io import read_header

    try:
        header = read_header(fcs_path)
    except (OSError, MrdflowError):
        return "3.1", {}
    return header.version, {str(k): str(v) for k, v in header.metadata.items() if _KEYWORDS.fullmatch(str(k))}


def _flowkit_document(strategy, name: str, matrix) -> ET.Element:
    """The workspace FlowKit's writer makes for this sample alone (FlowJo sample id 1)."""
    from types import SimpleNamespace

    from flowkit._utils.wsp_utils import export_flowjo_wsp  # the writer behind Session.export_wsp

    strategy = copy.deepcopy(strategy)
    if matrix is not None:
        strategy.add_comp_matrix(MATRIX_NAME, matrix)  # the writer prefixes channels for its matrices
    # The writer reads only id, version and metadata of a sample: no events need loading.
    stub = SimpleNamespace(id=name, version="3.1", metadata={})
    buf = io.BytesIO()
    export_flowjo_wsp(strategy, ALL_SAMPLES, [stub], buf)
    return ET.fromstring(buf.getvalue())


def _populations(sub: ET.Element | None, path: tuple[str, ...], out: dict) -> dict:
    """Every node under a ``<Subpopulations>`` by full path (``root`` first)."""
    if sub is None:
        return out
    for el in sub:
        if el.tag == "Population" or el.tag in _BOOL_TAGS.values():
            here = (*path, el.get("name"))
            out[here] = el
            _populations(el.find("Subpopulations"), here, out)
    return out


def _write_booleans(node: ET.Element, plan: Sequence[_BoolNode]) -> None:
    """Turn the stand-in populations of ``plan`` into FlowJo's boolean nodes (module docstring)."""
    pops = _populations(node.find("Subpopulations"), ("root",), {})
    booleans = {b.path for b in plan}
    for b in plan:
        el = pops[b.path]
        stand_in = el.find("Gate")
        gid, parent = stand_in.get(_GID), stand_in.get(_GPARENT)
        el.remove(stand_in)
        el.tag = b.tag
        if b.tag == "NotNode" and b.dependents[0] not in booleans:
            # FlowJo keeps a copy of the negated population's gate in a NOT node; it takes the
            # stand-in's id, which the node's children already name as their parent.
            gate = copy.deepcopy(pops[b.dependents[0]].find("Gate"))
            for item in (gate, *gate):
                item.set(_GID, gid)
                item.attrib.pop(_GPARENT, None)
                if parent is not None:
                    item.set(_GPARENT, parent)
            el.insert(0, gate)
        deps = ET.SubElement(el, "Dependents")
        for dep in b.dependents:
            ET.SubElement(deps, "Dependent", name="/".join(dep[1:]))
    # Children of an AND/OR node: no gate of their parent to name.
    ids = {g.get(_GID) for g in node.iter("Gate")}
    for item in node.iter():
        if item.get(_GPARENT) is not None and item.get(_GPARENT) not in ids:
            del item.attrib[_GPARENT]


def _reorder(el: ET.Element, first: dict[str, str]) -> None:
    """Set ``first`` as the element's leading attributes (FlowJo's order), keeping the others after."""
    rest = {k: v for k, v in el.attrib.items() if k not in first}
    el.attrib.clear()
    el.attrib.update(first)
    el.attrib.update(rest)


def _flowjo_attributes(sample: FlowJoSample, node: ET.Element, transforms: ET.Element | None,
                       keywords: dict[str, str]) -> None:
    """The attributes FlowJo writes that FlowKit's writer leaves out (module docstring)."""
    import flowkit as fk

    first = {k: node.attrib.pop(k) for k in ("name", "annotation", "owningGroup")}
    total = keywords.get("$TOT", "").strip()
    _reorder(node, {**first, "expanded": "1", "sortPriority": "10", **({"count": total} if total.isdigit() else {})})
    complement = {}
    for gid, path in sample.strategy.get_gate_ids():
        gate = sample.strategy.get_gate(gid, gate_path=path)
        complement[(*path, gid)] = bool(getattr(gate, "use_complement", False)) and not isinstance(
            gate, fk.gates.BooleanGate)
    pops = _populations(node.find("Subpopulations"), ("root",), {})
    for path, el in pops.items():
        _reorder(el, {k: el.get(k, "") for k in ("name", "annotation", "owningGroup")}
                 | {"expanded": "1", "sortPriority": _SORT_PRIORITY[el.tag]})
        gate_el = el.find("Gate")
        if gate_el is None or not len(gate_el):
            continue
        inner = gate_el[0]
        # a NOT node's gate is the negated population's: its eventsInside
        dep = el.find("Dependents/Dependent") if el.tag == "NotNode" else None
        source = ("root", *dep.get("name").split("/")) if dep is not None else path
        quad = {"quadId": inner.attrib.pop("quadID")} if "quadID" in inner.attrib else {}  # FlowJo's spelling
        _reorder(inner, {"eventsInside": "0" if complement.get(source, False) else "1", **_GATE_DRAWING, **quad})
    if transforms is not None:
        for lin in transforms.iter(f"{{{_NS['transforms']}}}linear"):
            lin.set("gain", "1")


def _sample_element(sample: FlowJoSample, sample_id: str, gate_ids: dict) -> tuple[ET.Element, ET.Element | None]:
    """The finished ``<Sample>`` and its ``spilloverMatrix`` (None when uncompensated)."""
    if hasattr(sample.strategy, "to_flowkit"):  # placed gates (mrdflow's Strategy): FlowKit writes them
        sample = replace(sample, strategy=sample.strategy.to_flowkit())
    matrix = _fk_matrix(sample.compensation)
    detectors = set(matrix.detectors) if matrix is not None else set()
    _check_strategy(sample, detectors)
    plan = _boolean_plan(sample)
    doc = _flowkit_document(_writer_strategy(sample, plan) if plan else sample.strategy, sample.name, matrix)
    el = doc.find("SampleList/Sample")

    data = el.find("DataSet")
    uri = Path(os.path.abspath(sample.fcs_path)).as_uri()
    data.set("uri", uri)
    data.set("sampleID", sample_id)
    node = el.find("SampleNode")
    node.set("sampleID", sample_id)
    node.set("name", sample.name)
    _write_booleans(node, plan)

    version, keywords = _keywords(sample.fcs_path)
    kw_el = el.find("Keywords")
    for child in list(kw_el):
        kw_el.remove(child)
    ET.SubElement(kw_el, "Keyword", name="FJ_FCS_VERSION", value=version)
    for key, value in keywords.items():
        ET.SubElement(kw_el, "Keyword", name=key, value=value)
    _flowjo_attributes(sample, node, el.find("Transformations"), keywords)

    # FlowKit numbers each sample's gates from the same start: make ids unique in the workspace.
    for item in node.iter():
        for attr in _GATE_ID_ATTRS:
            old = item.get(attr)
            if old is not None:
                item.set(attr, gate_ids.setdefault((sample_id, old), f"ID{len(gate_ids) + 1}"))

    comp_el = None
    if matrix is not None:
        # The writer prefixes every channel but FSC-*/SSC-*/Time; only the matrix's detectors are
        # compensated channels in FlowJo.
        name_attr = f"{{{_NS['data-type']}}}name"
        for dim in node.iter(f"{{{_NS['data-type']}}}fcs-dimension"):
            label = dim.get(name_attr)
            if label.startswith(COMP_PREFIX) and label[len(COMP_PREFIX):] not in detectors:
                dim.set(name_attr, label[len(COMP_PREFIX):])
        comp_el = doc.find(f"Matrices/{{{_NS['transforms']}}}spilloverMatrix")
        matrix_id = str(uuid.uuid5(uuid.NAMESPACE_URL, f"{uri}#{MATRIX_NAME}"))
        comp_el.attrib.update({"editable": "0", "color": "#c0c0c0", "status": "FINALIZED",
                               f"{{{_NS['transforms']}}}id": matrix_id})
        el.insert(list(el).index(data) + 1, copy.deepcopy(comp_el))
    return el, comp_el


def _group_node(parent: ET.Element, name: str, sample_ids: Sequence[str]) -> None:
    node = ET.SubElement(parent, "GroupNode", name=name, annotation="", owningGroup=name, expanded="1",
                         sortPriority="10", count="-1")
    # FlowJo's own group and a group of samples put in by hand (not by keyword criteria)
    live, colour = ("1", "#000000") if name == ALL_SAMPLES else ("0", "#0000d0")
    group = ET.SubElement(node, "Group", name=name, live=live, role="ws.group.dlog.test", key="", synchronized="0",
                          foreground=colour, fontStyle="bold")
    ET.SubElement(group, "Criteria")
    refs = ET.SubElement(group, "SampleRefs")
    for sid in sample_ids:
        ET.SubElement(refs, "SampleRef", sampleID=sid)
    ET.SubElement(group, "Keywords")


def write_workspace(path: str | os.PathLike, samples: Sequence[FlowJoSample], *, group: str = "mrdflow") -> Path:
    """Write ``samples`` (each with its own gates) as one FlowJo 10 workspace at ``path``.

    The samples form the group ``group`` (and FlowJo's ``All Samples``). Written atomically;
    returns the path. How it is built: the module docstring.
    """
    samples = list(samples)
    if not samples:
        raise GatingError(f"{path}: no samples to write to a FlowJo workspace")
    names = [s.name for s in samples]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise GatingError(f"{path}: FlowJo sample names must be unique in a workspace (repeated: {dup})")
    now = datetime.datetime.now().astimezone()
    root = ET.Element("Workspace", {
        "version": "20.0", "modDate": now.strftime("%a %b %d %H:%M:%S %Z %Y"),
        "clientTimestamp": str(int(now.timestamp() * 1000)), "flowJoVersion": FLOWJO_VERSION,
        "drawRowBorders": "1", "drawColumnBorders": "1", "hideCompNodes": "1", "curGroup": ALL_SAMPLES,
        "groupPaneHeight": "-1", f"{{{_XSI}}}schemaLocation": _SCHEMA_LOCATION,
        "nonAutoSaveFileName": Path(os.path.abspath(path)).as_uri()})
    matrices = ET.SubElement(root, "Matrices")
    groups = ET.SubElement(root, "Groups")
    sample_list = ET.SubElement(root, "SampleList")
    ids = [str(i) for i in range(1, len(samples) + 1)]
    gate_ids: dict = {}
    for sample, sid in zip(samples, ids, strict=True):
        el, comp_el = _sample_element(sample, sid, gate_ids)
        sample_list.append(el)
        if comp_el is not None:
            matrices.append(comp_el)
    for name in dict.fromkeys([ALL_SAMPLES, group]):
        _group_node(groups, name, ids)
    ET.indent(root)
    with atomic_open(path, "wb") as fh:
        ET.ElementTree(root).write(fh, encoding="UTF-8", xml_declaration=True)
    return Path(path)

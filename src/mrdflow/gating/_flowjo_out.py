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
from the FCS header, gate ids unique across the workspace and the ``<Groups>`` (``All Samples``
and ``group``).

Limits: gates are rectangles and polygons (FlowKit's writer has no boolean gates); a dimension is
compensated ("FCS") or not ("uncompensated"), no matrix of the strategy's own.
"""

from __future__ import annotations

import copy
import datetime
import io
import os
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mrdflow.atomic import atomic_open
from mrdflow.gating._rules import GatingError

__all__ = ["FlowJoSample", "write_workspace"]

_NS = {
    "gating": "http://www.isac-net.org/std/Gating-ML/v2.0/gating",
    "transforms": "http://www.isac-net.org/std/Gating-ML/v2.0/transformations",
    "data-type": "http://www.isac-net.org/std/Gating-ML/v2.0/datatypes",
}
for _prefix, _uri in _NS.items():
    ET.register_namespace(_prefix, _uri)

#: FlowJo's name for the matrix of the FCS file's own spillover keyword.
MATRIX_NAME = "Acquisition-defined"
COMP_PREFIX = "Comp-"
FLOWJO_VERSION = "10.7.1"
ALL_SAMPLES = "All Samples"
_GATE_ID_ATTRS = (f"{{{_NS['gating']}}}id", f"{{{_NS['gating']}}}parent_id")


@dataclass(frozen=True)
class FlowJoSample:
    """One sample of a review workspace.

    ``name``: FlowJo's sample name, the FCS file name. ``fcs_path``: the file (written as a
    ``file:`` URI, absolute). ``strategy``: its gates (FlowKit ``GatingStrategy`` on the file's
    ``$PnN`` channels, as ``TubeGating.strategy``). ``compensation``: the spillover the pipeline
    applied to "FCS" dimensions (``OpenTube.compensation``: ``detectors`` and ``spill``; or a
    ``flowkit.Matrix``; or ``(detectors, matrix)``), None when the events were not compensated.
    """

    name: str
    fcs_path: str
    strategy: Any
    compensation: Any = None


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
        if not isinstance(gate, (fk.gates.RectangleGate, fk.gates.PolygonGate)):
            raise GatingError(f"{sample.name}: gate {gid!r} is a {type(gate).__name__}; a FlowJo review workspace "
                              "holds rectangle and polygon gates only")
        for dim in gate.dimensions:
            ref = dim.compensation_ref
            if ref not in (None, "uncompensated", "FCS"):
                raise GatingError(f"{sample.name}: gate {gid!r} dimension {dim.id!r} uses compensation {ref!r}; "
                                  "only the file's own ('FCS') or none is written")
            if ref in (None, "uncompensated") and dim.id in detectors:
                raise GatingError(f"{sample.name}: gate {gid!r} reads {dim.id!r} uncompensated, but FlowJo applies "
                                  "one compensation to every detector of a sample")


def _keywords(fcs_path: str) -> tuple[str, dict[str, str]]:
    """FCS version and TEXT keywords of the file (none when it cannot be read: FlowJo reads them)."""
    from mrdflow.errors import MrdflowError
    from mrdflow.io import read_header

    try:
        header = read_header(fcs_path)
    except (OSError, MrdflowError):
        return "3.1", {}
    return header.version, {str(k): str(v) for k, v in header.metadata.items()}


def _flowkit_document(sample: FlowJoSample, matrix) -> ET.Element:
    """The workspace FlowKit's writer makes for this sample alone (FlowJo sample id 1)."""
    from types import SimpleNamespace

    from flowkit._utils.wsp_utils import export_flowjo_wsp  # the writer behind Session.export_wsp

    strategy = copy.deepcopy(sample.strategy)
    if matrix is not None:
        strategy.add_comp_matrix(MATRIX_NAME, matrix)  # the writer prefixes channels for its matrices
    # The writer reads only id, version and metadata of a sample: no events need loading.
    stub = SimpleNamespace(id=sample.name, version="3.1", metadata={})
    buf = io.BytesIO()
    export_flowjo_wsp(strategy, ALL_SAMPLES, [stub], buf)
    return ET.fromstring(buf.getvalue())


def _sample_element(sample: FlowJoSample, sample_id: str, gate_ids: dict) -> tuple[ET.Element, ET.Element | None]:
    """The finished ``<Sample>`` and its ``spilloverMatrix`` (None when uncompensated)."""
    matrix = _fk_matrix(sample.compensation)
    detectors = set(matrix.detectors) if matrix is not None else set()
    _check_strategy(sample, detectors)
    doc = _flowkit_document(sample, matrix)
    el = doc.find("SampleList/Sample")

    data = el.find("DataSet")
    data.set("uri", Path(os.path.abspath(sample.fcs_path)).as_uri())
    data.set("sampleID", sample_id)
    node = el.find("SampleNode")
    node.set("sampleID", sample_id)
    node.set("name", sample.name)

    version, keywords = _keywords(sample.fcs_path)
    kw_el = el.find("Keywords")
    for child in list(kw_el):
        kw_el.remove(child)
    ET.SubElement(kw_el, "Keyword", name="FJ_FCS_VERSION", value=version)
    for key, value in keywords.items():
        ET.SubElement(kw_el, "Keyword", name=key, value=value)

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
        el.insert(list(el).index(data) + 1, copy.deepcopy(comp_el))
    return el, comp_el


def _group_node(parent: ET.Element, name: str, sample_ids: Sequence[str]) -> None:
    node = ET.SubElement(parent, "GroupNode", name=name, annotation="", owningGroup=name)
    group = ET.SubElement(node, "Group", name=name)
    refs = ET.SubElement(group, "SampleRefs")
    for sid in sample_ids:
        ET.SubElement(refs, "SampleRef", sampleID=sid)


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
    root = ET.Element("Workspace", {"version": "20.0", "modDate": now.strftime("%a %b %d %H:%M:%S %Z %Y"),
                                    "flowJoVersion": FLOWJO_VERSION, "curGroup": ALL_SAMPLES})
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

"""FlowJo 10 workspaces as static gating templates: which workspace sample an FCS file is, and
that sample's own gates.

How a file is matched to a workspace sample
-------------------------------------------
FlowKit keys a workspace's samples by their SampleNode name (FlowJo names a sample by the file
name it loaded) but matches the FCS files it is given by their ``$FIL`` keyword, so a file renamed
after acquisition (``$FIL`` still the instrument's name, as labs routinely do) is never found. The
simplest robust route: FlowKit reads the workspace without any FCS file
(``load_missing_file_data=True`` keeps every sample's gating strategy; our engine gates the
events anyway), and we choose the sample ourselves from a small ``xml.etree`` pass over the
workspace's ``SampleList`` (SampleNode name, the file name of the DataSet URI, the ``$FIL`` FlowJo
stored) and ``Groups``. In order, the first rule that finds any candidate decides:

1. FlowJo's sample name: the FCS file's name is a sample's SampleNode name or its URI's file name;
2. ``$FIL``: the file's ``$FIL`` is a sample's name, URI file name or stored ``$FIL``;
3. the file's own name: its name without ``.fcs``, ignoring case, is a sample's name or URI file
   name without ``.fcs``.

More than one candidate under the deciding rule, or none under any rule, is a
:class:`~mrdflow.gating.GatingError` naming the workspace, the file and the candidates.

The template is that sample's own gating strategy (``Workspace.get_gating_strategy``): FlowJo
stores each sample's complete gate tree, custom sample gates included.
"""

from __future__ import annotations

import functools
import os
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING
from urllib.parse import unquote, urlparse

from mrdflow.gating._rules import GatingError

if TYPE_CHECKING:
    from mrdflow.gating._template import GatingTemplate

__all__ = ["WorkspaceSample", "WorkspaceSampleMissing", "match_workspace_sample", "template_from_workspace",
           "workspace_samples"]

_SHOWN = 8  # candidates named in an error message


class WorkspaceSampleMissing(GatingError):
    """An FCS file (or ``sample_id``) that is no sample of the workspace group."""


@dataclass(frozen=True)
class WorkspaceSample:
    """One sample of a FlowJo workspace: ``name`` (the SampleNode name, FlowKit's sample id),
    ``file`` (file name of its DataSet URI, or None), ``fil`` (the ``$FIL`` FlowJo stored)."""

    name: str
    file: str | None
    fil: str | None


@dataclass(frozen=True)
class _Index:
    samples: dict[str, WorkspaceSample]  # by FlowJo's sampleID
    groups: dict[str, tuple[str, ...]]  # group name -> sampleIDs


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _uri_file(uri: str | None) -> str | None:
    """The file name at the end of a DataSet URI (``file:////host/dir/a%20b.fcs`` -> ``a b.fcs``)."""
    if not uri:
        return None
    path = unquote(urlparse(uri).path or uri).replace("\\", "/")
    return PurePosixPath(path).name or None


@functools.lru_cache(maxsize=8)
def _index_cached(path: str, _stamp: tuple[int, int]) -> _Index:
    try:
        root = ET.parse(path).getroot()
    except ET.ParseError as e:
        raise GatingError(f"{path}: not a readable FlowJo workspace (XML error: {e})") from None
    if _local(root.tag) != "Workspace" or root.find("SampleList") is None:
        raise GatingError(f"{path}: not a FlowJo 10 workspace (root element <{_local(root.tag)}>, expected "
                          "<Workspace> with a <SampleList>)")
    version = root.get("flowJoVersion", "")
    if not version.split(".")[0].isdigit() or int(version.split(".")[0]) < 10:
        raise GatingError(f"{path}: not a FlowJo 10 workspace (flowJoVersion {version!r})")
    samples: dict[str, WorkspaceSample] = {}
    for el in root.find("SampleList").findall("Sample"):
        node, data = el.find("SampleNode"), el.find("DataSet")
        if node is None or node.get("name") is None:
            raise GatingError(f"{path}: a <Sample> has no named <SampleNode>")
        sid = node.get("sampleID") or (data.get("sampleID") if data is not None else None) or node.get("name")
        fil = next((k.get("value") for k in el.iter("Keyword") if k.get("name") == "$FIL"), None)
        samples[sid] = WorkspaceSample(node.get("name"), _uri_file(data.get("uri") if data is not None else None),
                                       fil)
    groups: dict[str, tuple[str, ...]] = {}
    for gn in root.iter("GroupNode"):
        refs = [r.get("sampleID") for r in gn.iter("SampleRef")]
        groups[gn.get("name")] = tuple(dict.fromkeys(r for r in refs if r in samples))  # once each, in order
    return _Index(samples, groups)


def _index(wsp_path: str | Path) -> _Index:
    path = os.fspath(wsp_path)
    try:
        st = os.stat(path)
    except OSError as e:
        raise GatingError(f"{path}: FlowJo workspace not readable ({e.strerror})") from None
    return _index_cached(path, (st.st_mtime_ns, st.st_size))


def workspace_samples(wsp_path: str | Path, group: str) -> list[WorkspaceSample]:
    """The samples of ``group`` in the workspace, in FlowJo's order."""
    idx = _index(wsp_path)
    if group not in idx.groups:
        raise GatingError(f"{wsp_path}: no sample group {group!r} (groups: {sorted(idx.groups)})")
    return [idx.samples[s] for s in idx.groups[group]]


def _stem(name: str | None) -> str | None:
    if name is None:
        return None
    return (name[:-4] if name.lower().endswith(".fcs") else name).lower()


def _fcs_fil(fcs_path: str | Path) -> str | None:
    from mrdflow.errors import MrdflowError
    from mrdflow.io import read_header

    try:
        return read_header(fcs_path).metadata.get("$FIL")
    except (OSError, MrdflowError):
        return None  # an unreadable file is reported when it is gated; here it has no $FIL


def _named(cands: list[WorkspaceSample]) -> str:
    names = [c.name if c.file in (None, c.name) else f"{c.name} (file {c.file})" for c in cands]
    more = f" and {len(names) - _SHOWN} more" if len(names) > _SHOWN else ""
    return ", ".join(repr(n) for n in names[:_SHOWN]) + more


def match_workspace_sample(wsp_path: str | Path, group: str, fcs_path: str | Path) -> WorkspaceSample:
    """The sample of ``group`` that ``fcs_path`` is (rules in the module docstring)."""
    cands = workspace_samples(wsp_path, group)
    name = Path(fcs_path).name
    rules = [
        ("its file name", lambda s: name in (s.name, s.file)),
        ("its $FIL", None),
        ("its name without .fcs", lambda s: _stem(name) in (_stem(s.name), _stem(s.file))),
    ]
    for what, test in rules:
        if test is None:
            fil = _fcs_fil(fcs_path)
            if not fil:
                continue
            what = f"its $FIL {fil!r}"

            def test(s, fil=fil):
                return fil in (s.name, s.file, s.fil)
        found = [s for s in cands if test(s)]
        if len(found) == 1:
            return found[0]
        if found:
            raise GatingError(f"{wsp_path}: FCS file {name!r} matches {len(found)} samples of group {group!r} by "
                              f"{what}: {_named(found)}; name one with workspace.sample_id")
    raise WorkspaceSampleMissing(f"{wsp_path}: FCS file {name!r} is not a sample of group {group!r} (matched by file "
                      f"name, $FIL, then name without .fcs; samples: {_named(cands) or 'none'})")


def _pick(wsp_path, group: str, fcs_path, sample_id: str | None) -> WorkspaceSample:
    if sample_id is None:
        return match_workspace_sample(wsp_path, group, fcs_path)
    cands = workspace_samples(wsp_path, group)
    found = [s for s in cands if sample_id == s.name] or [s for s in cands if sample_id == s.file]
    if len(found) != 1:
        why = "is not a sample" if not found else "names several samples"
        error = GatingError if found else WorkspaceSampleMissing
        raise error(f"{wsp_path}: sample {sample_id!r} {why} of group {group!r} "
                    f"(samples: {_named(found or cands) or 'none'})")
    return found[0]


@functools.lru_cache(maxsize=4)
def _flowkit_workspace(path: str, _stamp: tuple[int, int]):
    import warnings

    import flowkit as fk

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            # No FCS file is given: FlowKit keeps every sample's gates (see the module docstring).
            return fk.Workspace(path, load_missing_file_data=True)
    except Exception as e:  # FlowKit raises several types for unreadable workspaces
        raise GatingError(f"{path}: cannot read FlowJo workspace ({type(e).__name__}: {e})") from None


def template_from_workspace(wsp_path: str | Path, group: str, panel: str, fcs_path: str | Path,
                            sample_id: str | None = None) -> GatingTemplate:
    """A static template: the gates FlowJo stored for one sample of a workspace's sample group.

    The sample is ``sample_id`` (its FlowJo name or file name) when given, else the sample that
    ``fcs_path`` is (matched as in the module docstring). Gates keep FlowJo's channel names,
    transforms and compensation and are applied as drawn (``static``).
    """
    from mrdflow.gating._template import GatingTemplate

    sample = _pick(wsp_path, group, fcs_path, sample_id)
    idx = _index(wsp_path)
    if sum(s.name == sample.name for s in idx.samples.values()) > 1:
        raise GatingError(f"{wsp_path}: several samples are named {sample.name!r}; FlowKit cannot tell their "
                          "gates apart (rename them in FlowJo)")
    path = os.fspath(wsp_path)
    st = os.stat(path)
    ws = _flowkit_workspace(path, (st.st_mtime_ns, st.st_size))
    try:
        strategy = ws.get_gating_strategy(sample.name)
    except KeyError:
        raise GatingError(f"{wsp_path}: FlowKit found no gates for sample {sample.name!r}") from None
    return GatingTemplate(panel, strategy, {}, f"{wsp_path}#{group}:{sample.name}", static=True)

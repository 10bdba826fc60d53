"""Small simulated tubes of the tiny test cohort, gated from their data and written to one FlowJo
workspace, and the XML edits a reviewer makes in FlowJo: shared by the tests of mrdflow.review
(``from review.review_cohort import ...``)."""
from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from mrdflow.config import Tube, validate_config

REPO = Path(__file__).resolve().parents[2]
TEST_CONFIG = REPO / "config" / "test"
GATING = REPO / "resources" / "gating"
PANELS_DIR = REPO / "resources" / "panels"
ALL = "All Samples"

G = "http://www.isac-net.org/std/Gating-ML/v2.0/gating"
D = "http://www.isac-net.org/std/Gating-ML/v2.0/datatypes"
T = "http://www.isac-net.org/std/Gating-ML/v2.0/transformations"
for _prefix, _uri in (("gating", G), ("data-type", D), ("transforms", T)):
    ET.register_namespace(_prefix, _uri)

NGF1 = "PT01/PT01_BM_baseline_ngf1.fcs"  # NGF tube 1: rectangles and the singlet polygon
NK = "PT01/PT01_PB_baseline_nk.fcs"  # the NK tube: NK = CD56pos OR CD16pos (a FlowJo OrNode)


def review_config() -> dict:
    """config/test/config.yaml, validated (every default filled in), plots off."""
    cfg = validate_config(yaml.safe_load((TEST_CONFIG / "config.yaml").read_text()), source="config/test")
    cfg["sample"]["plots"] = False
    return cfg


def sample_settings(cfg: dict | None = None):
    """The per-sample settings of the test config (the repository's panels, gating files and reference)."""
    from mrdflow.panels import load_panels
    from mrdflow.sample import settings_from_config

    cfg = cfg or review_config()
    return settings_from_config(cfg, load_panels(PANELS_DIR), GATING, workdir=REPO,
                                reference=REPO / cfg["clustering"]["reference"])


def sheet_rows(fcs: Sequence[str] | None = None, sample_ids: Sequence[str] | None = None) -> list[dict]:
    """Rows of config/test/samples.tsv (the simulator's input), by FCS path or by sample."""
    import mrdflow.demo._simulate as sim

    rows = sim.read_samples_tsv(TEST_CONFIG / "samples.tsv")
    return [r for r in rows
            if (fcs is None or r["fcs"] in fcs) and (sample_ids is None or r["sample_id"] in sample_ids)]


def simulate(rows: Sequence[dict], outdir: Path, clogs: dict | None = None) -> Path:
    """Simulate ``rows`` under ``outdir`` (their sheet paths); ``clogs``: file stem -> clog segment."""
    import mrdflow.demo._simulate as sim

    design = sim.load_design(TEST_CONFIG / "design.yaml")
    if clogs is not None:
        design = {**design, "clog_files": clogs}
    for r in rows:
        sim.simulate_file(r, design, outdir, seed=596)
    return outdir


@dataclass
class GatedTube:
    """One simulated tube gated from its data: its sheet row, the opened tube and its gating."""

    row: dict
    opened: Any  # mrdflow.gating.OpenTube
    gating: Any  # mrdflow.gating.TubeGating
    path: Path

    @property
    def name(self) -> str:
        """FlowJo's sample name: the file name."""
        return self.path.name

    @property
    def panel(self) -> str:
        return self.row["panel"]

    @property
    def labels(self) -> dict[str, str]:
        """Channel -> panel marker, as mrdflow.review labels coordinates."""
        resolved = self.opened.resolved
        return {pnn: m for m, pnn in resolved.pnn.items() if m not in resolved.shared}

    def reviewed(self, wsp: Path):
        """The tube's gates as read back from ``wsp`` (a FlowKit GatingStrategy)."""
        from mrdflow.gating import template_from_workspace

        return template_from_workspace(wsp, ALL, self.panel, self.path).strategy


def gate_batch(outdir: Path, fcs: Sequence[str] = (NGF1, NK),
               group: str = "batch") -> tuple[Path, dict[str, GatedTube]]:
    """Simulate the tubes ``fcs`` of the test sheet, gate each from its data (the panel's template
    and the test config's transforms) and write them to one workspace ``outdir/<group>.wsp``.
    Returns the workspace and the gated tubes by sheet path."""
    from mrdflow.gating import FlowJoSample, gate_tube, load_template, open_tube, write_workspace
    from mrdflow.panels import load_panels

    rows = sheet_rows(fcs)
    assert sorted(r["fcs"] for r in rows) == sorted(fcs)
    data = simulate(rows, outdir / "data")
    panels, cfg = load_panels(PANELS_DIR), review_config()
    gated: dict[str, GatedTube] = {}
    for r in rows:
        path = data / r["fcs"]
        opened = open_tube(path, panels[r["panel"]], cfg["panels"][r["panel"]]["transform"])
        gated[r["fcs"]] = GatedTube(r, opened, gate_tube(load_template(GATING, r["panel"]), opened.view()), path)
    samples = [FlowJoSample(g.name, str(g.path), g.gating.strategy, g.opened.compensation) for g in gated.values()]
    return write_workspace(outdir / f"{group}.wsp", samples, group=group), gated


def hand_tube(sample_id: str, tube: str, fcs: str, panel: str = "ngf_tube1") -> Tube:
    """A sample-sheet row built by hand."""
    return Tube(sample_id=sample_id, patient_id=sample_id[:4], specimen="BM", visit="baseline", day=-5, infusion=1,
                tube=tube, panel=panel, role="stain", fcs=fcs)


# ---- the XML a reviewer's FlowJo saves ------------------------------------------------------------

def edited(src: Path, dst: Path, *edits: Callable[[ET.Element], None]) -> Path:
    """``src`` with ``edits`` applied to its root element, written to ``dst``."""
    tree = ET.parse(src)
    for edit in edits:
        edit(tree.getroot())
    dst.parent.mkdir(parents=True, exist_ok=True)
    tree.write(dst, encoding="UTF-8", xml_declaration=True)
    return dst


def sample_el(root: ET.Element, name: str) -> ET.Element:
    """The <Sample> whose SampleNode is named ``name``."""
    return next(s for s in root.iter("Sample") if s.find("SampleNode").get("name") == name)


def node(sample: ET.Element, name: str) -> ET.Element:
    """A population or boolean node of a sample, by name."""
    return next(p for p in sample.iter() if p.tag in ("Population", "OrNode", "AndNode", "NotNode")
                and p.get("name") == name)


def dimension(pop: ET.Element, channel: str) -> ET.Element:
    """The gating:dimension of a population's gate that reads ``channel`` (compensated or not)."""
    for d in pop.find("Gate").iter(f"{{{G}}}dimension"):
        if d.find(f"{{{D}}}fcs-dimension").get(f"{{{D}}}name") in (channel, f"Comp-{channel}"):
            return d
    raise AssertionError(f"{pop.get('name')}: no dimension {channel}")


def scale_bound(sample: str, gate: str, channel: str, factor: float, bound: str = "min"):
    """An edit: one bound of one gate of one sample times ``factor`` (channel values, as FlowJo stores them)."""
    def edit(root: ET.Element) -> None:
        d = dimension(node(sample_el(root, sample), gate), channel)
        d.set(f"{{{G}}}{bound}", repr(float(d.get(f"{{{G}}}{bound}")) * factor))
    return edit


def rename(sample: str, gate: str, new: str):
    """An edit: a population renamed."""
    def edit(root: ET.Element) -> None:
        node(sample_el(root, sample), gate).set("name", new)
    return edit


def keep_samples(*names: str):
    """An edit: only the samples named stay (with their group references)."""
    def edit(root: ET.Element) -> None:
        for s in list(root.find("SampleList")):
            if s.find("SampleNode").get("name") not in names:
                sid = s.find("DataSet").get("sampleID")
                root.find("SampleList").remove(s)
                for refs in root.iter("SampleRefs"):
                    for ref in [r for r in refs if r.get("sampleID") == sid]:
                        refs.remove(ref)
    return edit


def uncompensated(sample: str):
    """An edit: what FlowJo saves when the reviewer sets a sample's compensation to "Uncompensated"
    (no matrix in the sample, gates on the uncompensated channels)."""
    def edit(root: ET.Element) -> None:
        s = sample_el(root, sample)
        s.remove(s.find(f"{{{T}}}spilloverMatrix"))
        for dim in s.iter(f"{{{D}}}fcs-dimension"):
            dim.set(f"{{{D}}}name", dim.get(f"{{{D}}}name").removeprefix("Comp-"))
    return edit

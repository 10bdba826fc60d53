"""The gates a sample job places without FlowKit (mrdflow.gating._model), their Gating-ML
(mrdflow.gating._gatingml) and the compiled templates: FlowKit reads them back to the same gates
and counts, and a sample job never imports FlowKit or bokeh."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

import mrdflow.demo._simulate as sim
from mrdflow.gating import (
    GateEngine,
    Strategy,
    compile_template,
    gate_tube,
    gatingml_bytes,
    load_compiled_template,
    load_template,
    open_tube,
)
from mrdflow.gating._model import AsinhTransform, LinearTransform, LogicleTransform
from mrdflow.panels import load_panels

REPO = Path(__file__).resolve().parents[2]


def _gates(strategy) -> dict:
    """A strategy's transforms and gates by (path, id): Gating-ML lists gates depth-first, a
    placed strategy in placement order."""
    doc = strategy.as_json()
    return {"transforms": doc["transforms"],
            "gates": {(tuple(g["path"]), g["id"]): g for g in doc["gates"]}}
GATING = REPO / "resources/gating"
CONFIG = REPO / "config/test/config.yaml"
TRANSFORMS = yaml.safe_load(CONFIG.read_text())["panels"]["pb_nk"]["transform"]
PANELS = load_panels(REPO / "resources/panels")
TEMPLATES = sorted(p.stem for p in GATING.glob("*.xml"))


@pytest.mark.parametrize("panel", TEMPLATES)
def test_compiled_template_is_the_template(panel, tmp_path):
    """A template compiled to JSON reads back (without FlowKit) to the same gates, rules and
    order as the template parsed by FlowKit; FlowKit's own strategy of it round-trips too."""
    direct = load_template(GATING, panel)
    path = tmp_path / f"{panel}.json"
    path.write_text(json.dumps(compile_template(GATING, panel)))
    compiled = load_compiled_template(path)
    assert compiled.strategy.as_json() == direct.strategy.as_json()
    assert compiled.rules == direct.rules and compiled.gate_order() == direct.gate_order()
    assert Strategy.from_flowkit(direct.strategy.to_flowkit()).as_json() == direct.strategy.as_json()


def test_a_compiled_template_of_another_version_is_refused(tmp_path):
    doc = compile_template(GATING, "pb_cart")
    doc["version"] = 0
    path = tmp_path / "pb_cart.json"
    path.write_text(json.dumps(doc))
    with pytest.raises(Exception, match="version 0"):
        load_compiled_template(path)


def test_transforms_are_flowkits():
    """Our transforms give FlowKit's values and inverses (FlowUtils' arithmetic; the vectorised
    logicle to ~1e-12)."""
    import flowkit as fk

    x = np.concatenate([np.linspace(-5000, 262144, 2001), [0.0, 1.0, -1.0]])[:, None]
    pairs = [
        (LogicleTransform(262144.0, 0.5, 4.5, 0.0), fk.transforms.LogicleTransform(262144.0, 0.5, 4.5, 0.0)),
        (AsinhTransform(262144.0, 4.0, 0.5), fk.transforms.AsinhTransform(262144.0, 4.0, 0.5)),
        (LinearTransform(262144.0, 10.0), fk.transforms.LinearTransform(262144.0, 10.0)),
    ]
    for ours, theirs in pairs:
        np.testing.assert_allclose(ours.apply(x), theirs.apply(x), rtol=0, atol=1e-12)
        y = theirs.apply(x)
        np.testing.assert_allclose(ours.inverse(y), theirs.inverse(y), rtol=1e-12, atol=1e-6)


@pytest.fixture(scope="module")
def nk_tube(tmp_path_factory):
    out = tmp_path_factory.mktemp("model")
    sim.simulate_cohort(REPO / "config/test/samples.tsv", REPO / "config/test/design.yaml", out, seed=596,
                        only=["PT01_PB_baseline_nk"])
    return out, out / "PT01" / "PT01_PB_baseline_nk.fcs"


def test_gatingml_reads_back_in_flowkit_with_the_same_gates_and_counts(nk_tube, tmp_path):
    """gates.xml written without FlowKit: FlowKit parses it to the very gates placed (every
    coordinate exact), and FlowKit's strategy counts what ours counts, gate by gate."""
    import flowkit as fk

    _, fcs = nk_tube
    view = open_tube(fcs, PANELS["pb_nk"], TRANSFORMS).view()
    g = gate_tube(load_template(GATING, "pb_nk"), view)
    xml = tmp_path / "gates.xml"
    xml.write_bytes(g.gatingml())
    assert g.gatingml() == gatingml_bytes(g.strategy)
    parsed = fk.parse_gating_xml(str(xml))
    assert _gates(Strategy.from_flowkit(parsed)) == _gates(g.strategy)
    comp = view.compensation
    sample_comp = (list(comp.detectors), comp.spill) if comp is not None else None
    theirs = GateEngine(parsed).evaluate(view.raw, view.fcs.pnn, sample_comp=sample_comp)
    for gid, path in g.strategy.get_gate_ids():
        assert theirs.count((*path, gid)) == g.count((*path, gid)), gid
    # FlowKit's own writer, given the same gates, writes a document that parses to them as well
    buf = tmp_path / "fk.xml"
    with open(buf, "wb") as fh:
        fk.export_gatingml(g.strategy.to_flowkit(), fh)
    assert _gates(Strategy.from_flowkit(fk.parse_gating_xml(str(buf)))) == _gates(g.strategy)


_JOB = """
import sys
from pathlib import Path
from mrdflow.config import load_config, read_samples, resolve_path
from mrdflow.panels import load_panels
from mrdflow.sample import analyse_sample, settings_from_config
repo, data, templates, out = map(Path, sys.argv[1:5])
cfg = load_config(repo / "config/test/config.yaml")
settings = settings_from_config(cfg, load_panels(repo / "resources/panels"), repo / "resources/gating", workdir=repo,
                                reference=resolve_path(cfg["clustering"]["reference"], repo), compiled_dir=templates)
tubes = [t for t in read_samples(repo / "config/test/samples.tsv") if t.sample_id == "PT01_PB_baseline_nk"]
analyse_sample("PT01_PB_baseline_nk", tubes, data, settings, out)
print(sorted(m for m in ("flowkit", "bokeh", "pandas", "sklearn", "scipy.stats", "scipy.signal", "scipy.optimize",
                   "scipy.ndimage", "distributed")
            if m in sys.modules))
"""


def test_a_sample_job_never_imports_flowkit_or_bokeh(nk_tube, tmp_path):
    """Structural, not a timing: a sample job gating a tube with a compiled template (plots and
    gates.xml included) leaves FlowKit and bokeh unimported (~1.5 s of every job), and pandas,
    scikit-learn, scipy.stats, scipy.signal and scipy.optimize too when no bound needs them."""
    data, _ = nk_tube
    templates = tmp_path / "templates"
    templates.mkdir()
    for panel in ("pb_nk",):
        (templates / f"{panel}.json").write_text(json.dumps(compile_template(GATING, panel)))
    out = tmp_path / "out"
    res = subprocess.run([sys.executable, "-c", _JOB, str(REPO), str(data), str(templates), str(out)],
                         capture_output=True, text=True, cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    assert res.stdout.strip().splitlines()[-1] == "[]", res.stdout
    assert (out / "gates.xml").is_file() and any((out / "plots").rglob("*.png"))
    rec = json.loads((out / "stage1.json").read_text())
    assert rec["status"] == "ok", rec


def test_a_template_gate_the_placer_cannot_hold_is_refused_naming_it(tmp_path):
    """An ellipse in a template (placement has no rule for it) is refused when the template is
    parsed, naming the file and the gate; a template's own spillover matrix is not carried (placed
    gates use the tube's own compensation)."""
    import flowkit as fk

    from mrdflow.gating import GatingError

    s = fk.GatingStrategy()
    dims = [fk.Dimension(ch, compensation_ref="uncompensated") for ch in ("FSC-A", "SSC-A")]
    s.add_gate(fk.gates.EllipsoidGate("Blob", dims, [0.5, 0.5], [[0.01, 0], [0, 0.01]], 1.0), ("root",))
    with open(tmp_path / "odd.xml", "wb") as fh:
        fk.export_gatingml(s, fh)
    with pytest.raises(GatingError, match=r"odd\.xml.*'Blob'.*EllipsoidGate"):
        compile_template(tmp_path, "odd")

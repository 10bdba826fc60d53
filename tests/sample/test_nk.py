"""PB NK panel: template gating on simulated tubes vs planted truth, FMO vs data-driven NKG2A
threshold, and nk_metrics edge cases."""
import csv
import json
import math
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import yaml

import mrdflow.demo._simulate as sim
from mrdflow.gating import GateStep, KeptEvents, TubeView, compensation_for, gate_tube, load_template, make_transform
from mrdflow.io import read_fcs
from mrdflow.panels import load_panels, resolve_panel
from mrdflow.sample import FMO_MARKER, NKError, NKMetrics, gate_nk_sample, nk_metrics

REPO = Path(__file__).resolve().parents[2]
TINY_SAMPLES = REPO / "config" / "test" / "samples.tsv"
TINY_DESIGN = REPO / "config" / "test" / "design.yaml"
CONFIG = yaml.safe_load((REPO / "config" / "test" / "config.yaml").read_text())
TRANSFORMS = CONFIG["panels"]["pb_nk"]["transform"]
PANEL = load_panels(REPO / "resources" / "panels")["pb_nk"]
TEMPLATE = load_template(REPO / "resources" / "gating", "pb_nk")
TOL = 3.0  # percentage points (20,000-event CI tubes; the demo's 100,000-event tubes reach < 0.5)


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    """PT01 (NKG2A 19.5 %, with FMO) and PT08 (36.7 %, no FMO) of the tiny cohort, plus PT09: a
    PT01 copy whose blood has no NK cells."""
    out = tmp_path_factory.mktemp("nk")
    sim.simulate_cohort(TINY_SAMPLES, TINY_DESIGN, out, seed=596,
                        only=["PT01_PB_baseline_nk", "PT08_PB_baseline_nk"])
    design = yaml.safe_load(TINY_DESIGN.read_text())
    p9 = json.loads(json.dumps(design["patients"]["PT01"], default=str))
    p9["nk"] = {"nkg2a_pct": 20.0, "nk_pct_lymph": 0.0, "fmo": True}
    design["patients"] = {"PT09": p9}
    design.pop("clog_files", None)
    (out / "design9.yaml").write_text(yaml.safe_dump(design))
    with open(TINY_SAMPLES) as fh:
        rows = list(csv.DictReader(fh, delimiter="\t"))
    cols = list(rows[0])
    nine = [{**r, "sample_id": "PT09_PB_baseline_nk", "patient_id": "PT09",
             "fcs": r["fcs"].replace("PT01", "PT09")}
            for r in rows if r["sample_id"] == "PT01_PB_baseline_nk"]
    with open(out / "samples9.tsv", "w", newline="") as fh:
        w = csv.DictWriter(fh, cols, delimiter="\t")
        w.writeheader()
        w.writerows(nine)
    sim.simulate_cohort(out / "samples9.tsv", out / "design9.yaml", out / "pt09", seed=596)
    return out


def _paths(root: Path, pid: str):
    stain = root / pid / f"{pid}_PB_baseline_nk.fcs"
    fmo = root / pid / f"{pid}_PB_baseline_nk_fmo.fcs"
    truth = json.loads(stain.with_suffix(".truth.json").read_text())
    return stain, (fmo if fmo.exists() else None), truth


def _gate(stain, fmo):
    return gate_nk_sample(stain, fmo, PANEL, TEMPLATE, TRANSFORMS)


def _view(path, unstained=()):
    d = read_fcs(path)
    r = resolve_panel(PANEL, d.pnn, d.pns, unstained=set(unstained))
    return TubeView(d, r, compensation_for("fcs", d.metadata), TRANSFORMS)


def _threshold(g, gate_id):
    return next(s for s in g.steps if s.gate_id == gate_id).bounds[FMO_MARKER][0]


def test_fmo_threshold_recovers_nkg2a(cohort):
    stain, fmo, truth = _paths(cohort, "PT01")
    assert fmo is not None
    s, f, m = _gate(stain, fmo)
    assert m.nkg2a_threshold_source == "fmo"
    assert abs(m.nkg2a_pct - truth["nkg2a_pct_of_nk"]) <= TOL
    assert abs(m.nk_pct_lymph - truth["nk_pct_of_lymphocytes"]) <= 2.0
    assert abs(m.nkg2a_pct_dim - truth["nkg2a_pct_of_nk_dim"]) <= TOL
    assert abs(m.nkg2a_pct_bright - truth["nkg2a_pct_of_nk_bright"]) <= 10.0  # ~200 bright NK
    assert abs(m.nk_bright_pct_of_nk - truth["nk_bright_pct_of_nk"]) <= 3.0
    # by construction ~0.5 % of the FMO's NK cells lie above its 99.5th percentile
    assert m.fmo_nk_count > 500 and m.fmo_nk_above_pct <= 1.5
    # one threshold for NK, both subsets and the T-cell QC gate
    for gid in ("NKG2Apos_bright", "NKG2Apos_dim", "Tcells_NKG2Apos"):
        assert _threshold(s, gid) == m.nkg2a_threshold
    # channel value is the logicle inverse of the gate threshold
    xf = make_transform(TRANSFORMS["fluorescence"])
    back = float(np.ravel(xf.apply(np.array([[m.nkg2a_threshold_channel]])))[0])
    assert back == pytest.approx(m.nkg2a_threshold, abs=1e-6)
    assert m.nkg2a_median_pos > m.nkg2a_threshold_channel > m.nkg2a_median
    d = m.as_dict()
    assert d["nkg2a_pct"] == m.nkg2a_pct and set(d) == set(NKMetrics.__dataclass_fields__)


@pytest.mark.parametrize("pid", ["PT01", "PT08"])
def test_data_threshold_without_fmo(cohort, pid):
    stain, _, truth = _paths(cohort, pid)
    s, f, m = _gate(stain, None)
    assert f is None and m.fmo_nk_count is None
    assert m.nkg2a_threshold_source == "data"
    assert "floor" in m.nkg2a_threshold_how  # T-cell negative bounded the search
    assert abs(m.nkg2a_pct - truth["nkg2a_pct_of_nk"]) <= TOL
    assert abs(m.nk_pct_lymph - truth["nk_pct_of_lymphocytes"]) <= 2.0
    # T cells are the internal negative: only their few planted NKG2A+ cells lie above
    assert m.t_cell_nkg2a_pct < 10.0


def test_threshold_follows_the_fmo(cohort):
    stain, fmo, _ = _paths(cohort, "PT01")
    fview = _view(fmo, {FMO_MARKER})
    f1 = gate_tube(TEMPLATE, fview)
    t1 = _threshold(gate_tube(TEMPLATE, _view(stain), fmo=f1), "NKG2Apos")
    # A brighter FMO background (more spread into PE) must raise the threshold.
    fview2 = _view(fmo, {FMO_MARKER})
    raw = fview2.raw.copy()
    raw[:, fview2.resolved.index[FMO_MARKER]] += 400.0
    fview2.raw = raw
    fview2.drop_cache()
    f2 = gate_tube(TEMPLATE, fview2)
    t2 = _threshold(gate_tube(TEMPLATE, _view(stain), fmo=f2), "NKG2Apos")
    assert t2 > t1 + 0.03
    q = float(np.quantile(f2.view.values(FMO_MARKER)[f2.mask("NK")], 0.995))
    assert t2 == pytest.approx(min(max(q, 0.22), 0.5), abs=1e-6)


def test_tube_without_nk_cells(cohort):
    stain, fmo, truth = _paths(cohort / "pt09", "PT09")
    assert truth["nk_cells"] == 0
    s, f, m = _gate(stain, fmo)
    assert m.lymphocytes > 1000
    assert m.nk_count <= 5  # no NK cells planted; a stray event at most
    if m.nk_count == 0:
        assert m.nkg2a_pct is None and m.nkg2a_median is None
    # FMO with (almost) no NK events: the data-driven fallback places the threshold
    assert m.nkg2a_threshold_source == "data"
    assert 0.2 <= m.nkg2a_threshold <= 0.55


# ---- nk_metrics on hand-made gatings ------------------------------------------------------

_IDS = ("Lymphocytes", "Tcells", "Tcells_NKG2Apos", "NK", "NK_bright", "NK_dim",
        "NKG2Apos", "NKG2Apos_bright", "NKG2Apos_dim")


def _fake(masks: dict, cd159a: np.ndarray, threshold=0.4, how="FMO 99.5th percentile 0.400 of 900 NK events"):
    steps = [GateStep(g, None, "rect", (FMO_MARKER,),
                      bounds={FMO_MARKER: (threshold, None)} if g.startswith(("NKG2A", "Tcells_")) else {},
                      how={f"{FMO_MARKER}.min": how} if g.startswith(("NKG2A", "Tcells_")) else {})
             for g in _IDS]
    view = SimpleNamespace(name="fake", transform_specs=TRANSFORMS, values=lambda dim: cd159a)

    def events_in(gate, flags=()):  # as TubeGating.events_in: the gate's events, one marker here
        m = masks[gate]
        return KeptEvents(gate, [FMO_MARKER], cd159a[m][:, None], {f: masks[f][m] for f in flags})

    return SimpleNamespace(steps=steps, view=view, mask=lambda g: masks[g],
                           count=lambda g: int(masks[g].sum()), events_in=events_in)


def test_nk_metrics_no_nk_cells():
    n = 100
    z = np.zeros(n, bool)
    masks = {g: z for g in _IDS}
    masks["Lymphocytes"] = np.ones(n, bool)
    masks["Tcells"] = np.arange(n) < 80
    m = nk_metrics(_fake(masks, np.full(n, 0.1, np.float32)), None)
    assert m.nk_count == 0 and m.nk_pct_lymph == 0.0
    for v in (m.nkg2a_pct, m.nkg2a_pct_bright, m.nkg2a_pct_dim, m.nk_bright_pct_of_nk,
              m.nkg2a_median, m.nkg2a_median_logicle, m.nkg2a_median_pos):
        assert v is None
    assert m.t_cell_nkg2a_pct == 0.0 and m.nkg2a_threshold == 0.4
    assert m.nkg2a_threshold_source == "fmo" and math.isfinite(m.nkg2a_threshold_channel)


def test_nk_metrics_counts_and_sources():
    n = 1000
    idx = np.arange(n)
    lym = idx < 1000
    nk = idx < 200
    pos = idx < 50
    vals = np.where(pos, 0.7, 0.1).astype(np.float32)
    masks = {"Lymphocytes": lym, "Tcells": (idx >= 200) & (idx < 900), "Tcells_NKG2Apos": idx == 899,
             "NK": nk, "NK_bright": idx < 20, "NK_dim": (idx >= 20) & nk, "NKG2Apos": pos,
             "NKG2Apos_bright": idx < 20, "NKG2Apos_dim": (idx >= 20) & pos}
    m = nk_metrics(_fake(masks, vals, how="no FMO tube; valley 0.400 in [0.35, 0.55] (200 events)"))
    assert m.nkg2a_threshold_source == "data"
    assert m.nk_pct_lymph == pytest.approx(20.0) and m.nkg2a_pct == pytest.approx(25.0)
    assert m.nkg2a_pct_bright == pytest.approx(100.0) and m.nkg2a_pct_dim == pytest.approx(30 / 180 * 100)
    assert m.nk_bright_pct_of_nk == pytest.approx(10.0) and m.t_cell_nkg2a_pct == pytest.approx(100 / 700)
    assert m.nkg2a_median_logicle == pytest.approx(0.1) and m.nkg2a_median_pos_logicle == pytest.approx(0.7)
    fixed = nk_metrics(_fake(masks, vals, how="fixed (template)"))
    assert fixed.nkg2a_threshold_source == "fixed"
    fb = nk_metrics(_fake(masks, vals, how="FMO has 3 events in NK; valley 0.400 in [0.35, 0.55]"))
    assert fb.nkg2a_threshold_source == "data"


def test_nk_metrics_needs_the_nk_template():
    masks = {g: np.zeros(3, bool) for g in _IDS}
    g = _fake(masks, np.zeros(3, np.float32))
    g.steps = [s for s in g.steps if s.gate_id != "NK"]
    with pytest.raises(NKError, match="NK"):
        nk_metrics(g)


def test_floor_rule_is_validated():
    from mrdflow.gating import GatingError
    from mrdflow.gating._template import _bound_rule

    br = _bound_rule({"method": "valley", "window": [0.2, 0.5],
                      "floor": {"method": "tail", "population": "Tcells", "k": 3, "window": [0.2, 0.45]}}, "x")
    assert br.floor.population == "Tcells" and br.floor.k == 3.0
    with pytest.raises(GatingError, match="floor"):
        _bound_rule({"method": "fmo", "window": [0.2, 0.5],
                     "floor": {"method": "tail", "window": [0.2, 0.45]}}, "x")

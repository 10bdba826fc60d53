"""The cohort simulator and the FCS writer: truth round trip, keywords, compensation, clogs."""
from __future__ import annotations

import csv
import math
import os
from pathlib import Path

import flowio
import flowkit as fk
import numpy as np
import pytest

import mrdflow.demo._simulate as sim
from mrdflow.demo._design import NK_BEADS_PANEL, TUBE_PANEL, _load_panel
from mrdflow.demo._instrument import SAT
from mrdflow.io import format_spillover, write_fcs

REPO = Path(__file__).resolve().parents[2]
TINY_DESIGN = REPO / "config/test/design.yaml"
TINY_SAMPLES = REPO / "config/test/samples.tsv"
DEMO = REPO / "resources/demo"

try:  # the project's reader; FlowKit stands in where it is not there yet
    from mrdflow.io import read_fcs as _read_fcs
except ImportError:  # pragma: no cover
    _read_fcs = None


def read(path):
    """(values, pnn, pns, metadata with '$' keys upper-case)."""
    if _read_fcs is not None:
        d = _read_fcs(path)
        return np.asarray(d.channel_values), list(d.pnn), list(d.pns), dict(d.metadata)
    s = fk.Sample(str(path))  # pragma: no cover
    meta = {("$" + k.upper() if not k.startswith("$") else k): v for k, v in s.metadata.items()}
    return s.get_events(source="raw"), s.pnn_labels, s.pns_labels, meta


# A few tiny files: baseline BM (both tubes), week-4 BM (both tubes), NK + FMO, two CAR-T tubes (one
# with a clog segment) and the serial NK tube with counting beads beside PT01's day-7 CAR-T tube, at
# half the tiny cohort's event counts.
PICK = ["PT08_BM_baseline", "PT08_BM_week4", "PT01_PB_baseline_nk", "PT01_PB_I1_D007",
        "PT08_PB_I1_D007"]
SCALE = 0.5


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    out = tmp_path_factory.mktemp("sim")
    truths = sim.simulate_cohort(TINY_SAMPLES, TINY_DESIGN, out, seed=596, events_scale=SCALE,
                                 only=PICK)
    return out, {t["file"]: t for t in truths}


def _labels(out, t):
    z = np.load(out / t["file"].replace(".fcs", ".labels.npz"))
    return z["labels"], [str(n) for n in z["names"]], z["clog"]


def _spill(meta):
    parts = meta["$SPILLOVER"].split(",")
    n = int(parts[0])
    return parts[1:1 + n], np.array([float(v) for v in parts[1 + n:]]).reshape(n, n)


# ------------------------------------------------------------------------------------ writer


def test_writer_round_trip_flowio_flowkit_reader(tmp_path):
    rng = np.random.default_rng(1)
    x = (rng.normal(size=(2500, 4)) * 1000).astype(np.float32)
    path = tmp_path / "w.fcs"
    chunks = (x[i:i + 1000] for i in range(0, 2500, 1000))  # streamed chunks
    write_fcs(path, chunks, ["FSC-A", "FITC-A", "PE-A", "Time"],
              pns=[None, "CD3 FITC", "", None],
              metadata={"$CYT": "Test/Cyt", "$SPILLOVER": format_spillover(
                  ["FITC-A", "PE-A"], np.array([[1, 0.2], [0.01, 1]])), "EMPTY": ""},
              pnr=[262144, 262144, 262144, 1000])
    assert not [p for p in tmp_path.iterdir() if p.name != "w.fcs"]  # no temp file left
    raw = path.read_bytes()
    assert raw[:6] == b"FCS3.1"
    f = flowio.FlowData(str(path))
    assert f.event_count == 2500 and f.channel_count == 4
    np.testing.assert_array_equal(np.reshape(f.events, (-1, 4)), x)
    assert f.text["cyt"] == "Test/Cyt"  # the delimiter in a value survives (escaped)
    s = fk.Sample(str(path))
    np.testing.assert_array_equal(s.get_events(source="raw"), x)
    assert s.pns_labels == ["", "CD3 FITC", "", ""]
    v, pnn, pns, meta = read(path)
    np.testing.assert_array_equal(v, x)
    assert meta["$P4R"] == "1000" and meta["$P1B"] == "32" and meta["$P1E"] == "0,0"
    assert meta["$DATATYPE"] == "F" and meta["$BYTEORD"] == "1,2,3,4"
    assert int(meta["$ENDDATA"]) - int(meta["$BEGINDATA"]) + 1 == 2500 * 4 * 4
    assert "EMPTY" not in meta


def test_writer_rejects_owned_keywords_and_keeps_old_file(tmp_path):
    path = tmp_path / "a.fcs"
    write_fcs(path, np.ones((3, 2)), ["A", "B"])
    before = path.read_bytes()
    with pytest.raises(ValueError):
        write_fcs(path, np.ones((3, 2)), ["A", "B"], metadata={"$TOT": "5"})

    def bad():
        yield np.ones((3, 2))
        raise RuntimeError("generator failed midway")

    with pytest.raises(RuntimeError):
        write_fcs(path, bad(), ["A", "B"])
    assert path.read_bytes() == before  # never half-written
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.fcs"]


# ------------------------------------------------------------------------------- simulator


def test_files_shape_keywords_and_spillover(tiny):
    out, truths = tiny
    assert len(truths) == 9
    for name, t in truths.items():
        v, pnn, pns, meta = read(out / name)
        panel = _load_panel(t["panel"])
        assert v.shape == (t["n_events"], 4 + len(panel.markers))
        assert pnn == ["FSC-A", "FSC-H", "SSC-A", *panel.detectors, "Time"]
        for m, f, s in zip(panel.markers, panel.fluors, pns[3:-1]):
            assert s == ("" if m in t["unstained_markers"] else f"{m} {f}")
        for k in ("$CYT", "$DATE", "$BTIM", "$ETIM", "$TIMESTEP", "$SRC", "$TOT"):
            assert meta.get(k), k
        assert meta["$SRC"] == t["sample_id"]
        assert all(meta[f"$P{i}R"] == "262144" for i in range(1, len(pnn)))
        assert float(meta[f"$P{len(pnn)}R"]) > v[:, -1].max()
        dets, S = _spill(meta)
        assert dets == panel.detectors
        np.testing.assert_allclose(np.diag(S), 1.0)
        off = S[~np.eye(len(dets), dtype=bool)]
        assert off.max() <= 0.3 and (off >= 0.01).sum() >= len(dets)
        fl = v[:, 3:-1]
        assert fl.max() <= SAT and (fl < 0).any()  # saturation clip; negatives exist
        assert np.all(np.diff(v[:, -1]) >= 0)  # Time increases


def test_labels_and_truth_counts(tiny):
    out, truths = tiny
    for t in truths.values():
        lab, names, clog = _labels(out, t)
        assert lab.dtype == np.uint8 and len(lab) == t["n_events"] == len(clog)
        assert names == t["populations"]
        counts = np.bincount(lab, minlength=len(names))
        assert {n: int(c) for n, c in zip(names, counts)} == t["counts"]
        nuc = sum(c for n, c in t["counts"].items() if n not in sim.NUCLEATED_EXCLUDE)
        assert t["n_nucleated"] == nuc and "nucleated_definition" in t
    # the cohort table has one row per file
    with open(out / "truth.tsv") as fh:
        rows = list(csv.DictReader(fh, delimiter="\t"))
    assert sorted(r["file"] for r in rows) == sorted(truths)


def test_planted_values_recovered(tiny):
    out, truths = tiny
    design = sim.load_design(TINY_DESIGN)
    by = {(t["sample_id"], t["tube"]): t for t in truths.values()}
    t = by[("PT08_BM_baseline", "ngf1")]
    lab, names, _ = _labels(out, t)
    pcs = np.isin(lab, [names.index(n) for n in ("pc_normal_kappa", "pc_normal_lambda",
                                                "pc_aberrant")]).sum()
    pc_pct = 100 * pcs / t["n_nucleated"]
    assert abs(pc_pct - design["patients"]["PT08"]["bm_baseline"]["pc_pct"]) < 0.1
    assert t["aberrant_light_chain"] == "kappa"
    kl = t["normal_pc_kappa_lambda_ratio"]
    assert 1.2 < kl < 2.5
    w = by[("PT08_BM_week4", "ngf1")]
    expect = 2.5e-4 * w["n_nucleated"]
    assert abs(w["aberrant_pc"] - expect) <= 1
    nk = by[("PT01_PB_baseline_nk", "nk")]
    lab, names, _ = _labels(out, nk)
    pos = np.isin(lab, [names.index("nk_bright_nkg2a_pos"), names.index("nk_dim_nkg2a_pos")]).sum()
    allnk = np.isin(lab, [i for i, n in enumerate(names) if n.startswith("nk_")]).sum()
    assert abs(100 * pos / allnk - 19.5) < 0.3
    assert abs(nk["nkg2a_pct_of_nk"] - 19.5) < 0.3
    assert nk["nkg2a_pct_of_nk_bright"] > nk["nkg2a_pct_of_nk_dim"]
    assert abs(nk["nk_pct_of_lymphocytes"] - 14.0) < 0.3
    c = by[("PT01_PB_I1_D007", "cart")]
    planted = sim.cart_concentration(7, design["patients"]["PT01"]["cart"][0])
    assert c["cart_per_ul_planted"] == pytest.approx(planted)
    rel_sd = math.sqrt(1 / max(c["car_t_events"], 1) + 1 / c["bead_events"])
    assert abs(c["cart_per_ul"] / planted - 1) < 5 * rel_sd
    assert c["car_t_events"] / c["bead_events"] * 50000 / 50 == pytest.approx(c["cart_per_ul"])


def test_reproducible_byte_identical(tiny, tmp_path):
    out, truths = tiny
    design = sim.load_design(TINY_DESIGN)
    rows = {r["fcs"]: r for r in sim.read_samples_tsv(TINY_SAMPLES)}
    name = "PT01/PT01_PB_baseline_nk_fmo.fcs"
    sim.simulate_file(rows[name], design, tmp_path, seed=596, events_scale=SCALE)
    assert (tmp_path / name).read_bytes() == (out / name).read_bytes()
    a = np.load(tmp_path / name.replace(".fcs", ".labels.npz"))["labels"]
    b = np.load(out / name.replace(".fcs", ".labels.npz"))["labels"]
    np.testing.assert_array_equal(a, b)
    sim.simulate_file(rows[name], design, tmp_path / "other", seed=597, events_scale=SCALE)
    assert (tmp_path / "other" / name).read_bytes() != (out / name).read_bytes()


def test_idempotent_skip(tiny):
    out, truths = tiny
    name = next(iter(truths))
    mtime = os.stat(out / name).st_mtime_ns
    again = sim.simulate_cohort(TINY_SAMPLES, TINY_DESIGN, out, seed=596, events_scale=SCALE,
                                only=PICK)
    assert all(t.get("skipped") for t in again)
    assert os.stat(out / name).st_mtime_ns == mtime


def _comp(path):
    s = fk.Sample(str(path))
    s.apply_compensation(s.metadata["spillover"])
    return s.get_events(source="raw"), s.get_events(source="comp"), s.pnn_labels


def test_compensation_recovers_unspilled_medians(tiny):
    out, truths = tiny
    # NK tube: CD3-FITC spills ~22% into PE (NKG2A); T cells are NKG2A-negative.
    t = next(t for t in truths.values() if t["tube"] == "nk")
    lab, names, _ = _labels(out, t)
    raw, comp, pnn = _comp(out / t["file"])
    pe = pnn.index("PE-A")
    tneg = lab == names.index("t_nkg2a_neg")
    assert np.median(raw[tneg, pe]) > 2000  # spill before compensation
    assert abs(np.median(comp[tneg, pe])) < 300  # ~0 after
    dpos = lab == names.index("nk_dim_nkg2a_pos")
    dneg = lab == names.index("nk_dim_nkg2a_neg")
    assert 3000 < np.median(comp[dpos, pe]) < 12000  # planted 6000
    assert abs(np.median(comp[dneg, pe])) < 300
    # the modes are 1.5-2 decades apart on a log scale
    gap = math.log10(np.median(comp[dpos, pe])) - math.log10(
        np.median(np.abs(comp[dneg, pe])) + 100)
    assert 1.3 < gap < 2.3
    # BM tube 1: CD38-FITC (PCs ~9e4) spills into CD56-PE; aberrant PCs keep their CD56.
    t = next(t for t in truths.values() if t["tube"] == "ngf1" and t["visit"] == "baseline")
    lab, names, _ = _labels(out, t)
    raw, comp, pnn = _comp(out / t["file"])
    pe, fitc = pnn.index("PE-A"), pnn.index("FITC-A")
    npc = np.isin(lab, [names.index("pc_normal_kappa"), names.index("pc_normal_lambda")])
    ab = lab == names.index("pc_aberrant")
    assert np.median(comp[npc, fitc]) == pytest.approx(90000, rel=0.25)
    assert np.median(raw[npc, pe]) > 10000 and np.median(comp[npc, pe]) < 1500
    assert np.median(comp[ab, pe]) == pytest.approx(15000, rel=0.3)


def test_fmo_tube_pe_is_unstained(tiny):
    out, truths = tiny
    fmo = next(t for t in truths.values() if t["tube"] == "nk_fmo")
    assert fmo["unstained_markers"] == ["CD159a"]
    _, _, pns, _ = read(out / fmo["file"])
    assert pns[6] == ""  # PE-A: no $PnS
    lab, names, _ = _labels(out, fmo)
    _, comp, pnn = _comp(out / fmo["file"])
    pos = np.isin(lab, [names.index("nk_dim_nkg2a_pos"), names.index("nk_bright_nkg2a_pos")])
    assert abs(np.median(comp[pos, pnn.index("PE-A")])) < 300


def test_scatter_doublets_and_debris(tiny):
    out, truths = tiny
    t = next(t for t in truths.values() if t["tube"] == "ngf1" and t["visit"] == "baseline")
    v, *_ = read(out / t["file"])
    lab, names, _ = _labels(out, t)
    ratio = v[:, 1] / np.maximum(v[:, 0], 1)
    dbl = lab == names.index("doublet")
    cells = ~np.isin(lab, [names.index("doublet"), names.index("debris")])
    assert 0.02 <= dbl.mean() <= 0.04
    assert np.median(ratio[dbl]) < np.median(ratio[cells]) - 0.15
    deb = lab == names.index("debris")
    assert np.median(v[deb, 0]) < 0.3 * np.median(v[cells, 0])
    # CD45-negative erythroblasts vs CD45-bright T cells
    cd45 = 3 + _load_panel("ngf_tube1").markers.index("CD45")
    assert np.median(v[lab == names.index("erythroblast"), cd45]) < 500
    assert np.median(v[lab == names.index("t_cell"), cd45]) > 10000


def test_clog_segment(tiny):
    out, truths = tiny
    c = next(t for t in truths.values() if t["file"].endswith("PT08_PB_I1_D007.fcs"))
    n = next(t for t in truths.values() if t["file"].endswith("PT01_PB_I1_D007.fcs"))
    assert c["clog"]["present"] and not n["clog"]["present"]
    v, *_ = read(out / c["file"])
    _, _, mask = _labels(out, c)
    i0, i1 = c["clog"]["event_start"], c["clog"]["event_end"]
    assert mask.sum() == i1 - i0 and mask[i0:i1].all()
    t = v[:, -1]
    assert t[i0] == pytest.approx(c["clog"]["time_start"], rel=1e-5)
    rate_in = (i1 - i0) / (t[i1 - 1] - t[i0])
    rate_all = len(t) / (t[-1] - t[0])
    assert rate_in < 0.5 * rate_all


def test_cart_kinetics_shape():
    p = {"cmax": 100, "tmax": 10, "alpha": 3, "k_fast": 0.15, "slow_frac": 0.05, "k_slow": 0.02}
    assert sim.cart_concentration(0, p) == 0
    assert sim.cart_concentration(10, p) == pytest.approx(100)
    days = np.arange(0, 60)
    c = np.array([sim.cart_concentration(d, p) for d in days])
    assert c.argmax() == 10 and np.all(np.diff(c[10:]) < 0)


def test_chunked_generation_matches_counts(tmp_path, monkeypatch):
    monkeypatch.setattr(sim, "CHUNK", 3000)
    design = sim.load_design(TINY_DESIGN)
    row = next(r for r in sim.read_samples_tsv(TINY_SAMPLES) if r["tube"] == "ngf2")
    t = sim.simulate_file(row, design, tmp_path, events_scale=0.5)
    v, *_ = read(tmp_path / row["fcs"])
    assert v.shape[0] == t["n_events"] == 10000


# ----------------------------------------------------------------------- committed sheets


def _tsv(path):
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh, delimiter="\t"))


@pytest.mark.parametrize("folder", [DEMO, REPO / "config/test"])
def test_sample_sheets_match_design(folder):
    design = sim.load_design(folder / "design.yaml")
    with open(folder / "samples.tsv") as fh:
        header = fh.readline().rstrip("\n").split("\t")
    assert header == sim.SAMPLE_COLUMNS
    rows = _tsv(folder / "samples.tsv")
    made = [{k: str(v) for k, v in r.items()} for r in sim.make_samples(design)]
    assert rows == made
    assert len({r["fcs"] for r in rows}) == len(rows)
    for r in rows:
        beads = r["panel"] == NK_BEADS_PANEL
        assert r["panel"] == (NK_BEADS_PANEL if beads else TUBE_PANEL[r["tube"]])
        assert (r["role"] == "fmo") == (r["tube"] == "nk_fmo") == (r["fmo_marker"] == "CD159a")
        assert bool(r["beads_per_tube"]) == bool(r["blood_volume_ul"]) == (r["tube"] == "cart" or beads)
        assert not beads or (r["tube"] in ("nk", "nk_fmo") and "nk_tube" in design)
    by_sample: dict[str, list[dict]] = {}
    for r in rows:
        by_sample.setdefault(r["sample_id"], []).append(r)
    for sid, tubes in by_sample.items():  # a sample's tubes share patient, specimen, visit, day, infusion
        assert len({tuple(t[k] for k in ("patient_id", "specimen", "visit", "day", "infusion")) for t in tubes}) == 1
        assert len({t["tube"] for t in tubes}) == len(tubes), sid
    clin = _tsv(folder / "clinical.tsv")
    assert sorted(c["patient_id"] for c in clin) == sorted(design["patients"])
    for c in clin:
        p = design["patients"][c["patient_id"]]
        assert c["infusion1_date"] == str(p["infusions"][0]["date"])
        assert c["light_chain"] == p["light_chain"] and c["ig_type"] == p["ig_type"]


def test_demo_design_reproduces_poster():
    d = sim.load_design(DEMO / "design.yaml")
    P = d["patients"]
    assert len(P) == 8
    assert np.median([p["bm_baseline"]["pc_pct"] for p in P.values()]) == pytest.approx(22.5)
    nkg = [p["nk"]["nkg2a_pct"] for p in P.values()]
    assert np.median(nkg) == pytest.approx(20.75) and min(nkg) == 5.0 and max(nkg) == 36.7
    pooled = 2 * 0.935 * d["events"]["bm_week4"]
    pos = sorted(k for k, p in P.items() if p["bm_week4"]["aberrant_level"] * pooled >= 20)
    assert pos == ["PT02", "PT08"]
    neg_events = [p["bm_week4"]["aberrant_level"] * pooled for k, p in P.items() if k not in pos]
    assert max(neg_events) <= 10 and pooled >= 2.0e6
    # modest negative relation: host NKG2A% vs CAR-T AUC(0-28), infusion 1
    auc = [np.trapezoid([sim.cart_concentration(t, p["cart"][0]) for t in range(29)])
           for p in P.values()]
    rk = lambda a: np.argsort(np.argsort(a))  # noqa: E731
    rho = np.corrcoef(rk(nkg), rk(auc))[0, 1]
    assert -0.95 < rho < -0.5
    clin = {c["patient_id"]: c for c in _tsv(DEMO / "clinical.tsv")}
    assert np.median([int(c["age"]) for c in clin.values()]) == 63.5
    assert np.median([float(c["follow_up_months"]) for c in clin.values()]) == pytest.approx(4.14)
    assert sum(c["best_response"] in ("sCR", "CR", "VGPR", "PR") for c in clin.values()) == 6
    assert clin["PT04"]["infusion2_date"] and float(clin["PT04"]["infusion2_dose_cells"]) == 4.5e8


def test_design_overrides_replace_instrument_and_biology_only():
    from mrdflow.demo._simulate import with_overrides

    design = {"instrument": {"cyt": "FACSCanto II"}, "biology": None, "patients": {}}
    out = with_overrides(design, {"instrument": "beckman", "biology": "anti_cd38"})
    assert out["instrument"] == "beckman" and out["biology"] == "anti_cd38"
    assert design["instrument"] == {"cyt": "FACSCanto II"}
    assert with_overrides(design, {"instrument": None, "biology": None}) == design
    with pytest.raises(ValueError, match="patients"):
        with_overrides(design, {"patients": {}})


def test_config_names_the_profiles_of_the_demo_variant():
    from mrdflow.config import load_config

    cfg = load_config(REPO / "config" / "demo_profile2" / "config.yaml")
    assert cfg["simulate"]["instrument"] == "beckman" and cfg["simulate"]["biology"] == "anti_cd38"
    assert cfg["simulate"]["design"] == "resources/demo/design.yaml"
    assert load_config(REPO / "config" / "config.yaml")["simulate"]["instrument"] is None

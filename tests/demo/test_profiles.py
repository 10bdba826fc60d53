"""The simulator's instrument and biology profiles: ``bd``/``default`` stay as they were, the
``beckman`` instrument writes another lab's files, and the ``anti_cd38`` biology plants what it
says (config/test_profile2 is the tiny cohort on both)."""
from __future__ import annotations

import copy
import hashlib
from pathlib import Path

import numpy as np
import pytest

import mrdflow.demo._simulate as sim
from mrdflow.demo import load_design, make_samples
from mrdflow.demo._biology import effective_patient
from mrdflow.demo._instrument import MAX_SHIFT_LOG10, instrument_for, marker_shifts
from mrdflow.errors import PanelError
from mrdflow.io import read_fcs, read_header
from mrdflow.panels import load_panels, resolve_panel

REPO = Path(__file__).resolve().parents[2]
TINY = REPO / "config/test/design.yaml"
PROFILE2 = REPO / "config/test_profile2"
SCALE = 0.5
PICK = ["PT01_BM_baseline", "PT08_BM_baseline", "PT01_PB_baseline_nk", "PT08_PB_baseline_nk",
        "PT08_PB_I1_D007"]


def _rows(design, ids):
    return [r for r in make_samples(design) if r["sample_id"] in ids]


def _simulate(design, ids, out, scale=SCALE):
    return {r["fcs"]: sim.simulate_file(r, design, out, seed=596, events_scale=scale)
            for r in _rows(design, ids)}


def _compensated(path):
    """(compensated events, $PnN, labels, population names) of a simulated file."""
    d = read_fcs(path)
    det, spill = d.spillover()
    x = np.asarray(d.channel_values, dtype=float)
    cols = [d.pnn.index(c) for c in det]
    x[:, cols] = x[:, cols] @ np.linalg.inv(np.asarray(spill, dtype=float))
    z = np.load(str(path).replace(".fcs", ".labels.npz"))
    return x, list(d.pnn), z["labels"], [str(n) for n in z["names"]]


def _of(labels, names, *pops):
    return np.isin(labels, [names.index(p) for p in pops])


@pytest.fixture(scope="module")
def p2(tmp_path_factory):
    out = tmp_path_factory.mktemp("p2")
    return out, _simulate(load_design(PROFILE2 / "design.yaml"), PICK, out)


# ---------------------------------------------------------------------------------------------
# bd / default: unchanged
# ---------------------------------------------------------------------------------------------
# Label digests (sha256 of the uint8 labels, 16 hex) and fingerprints of two tiny-cohort tubes at
# events_scale 0.25, as simulated before the profiles existed: the draws and the fingerprints
# (which decide whether data/ is simulated again) must not move. The fingerprints moved once, with
# the design: issue 13 gave the tiny design new keys (events, schedule.nk_days, nk_tube, ...) and
# both patients new entries; the draws did not.
BD_PINNED = {
    "PT01/PT01_PB_baseline_nk.fcs": ("03d26aea10932f32", "ff01c3811792ac3d"),
    "PT08/PT08_BM_baseline_ngf1.fcs": ("38e93e4cb74df09d", "de6f8d691776ad82"),
}


def test_bd_default_unchanged_and_explicit_names_are_the_same(tmp_path):
    design = load_design(TINY)
    ids = ["PT01_PB_baseline_nk", "PT08_BM_baseline"]
    a = _simulate(design, ids, tmp_path / "a", scale=0.25)
    for fcs, (labels_digest, fp) in BD_PINNED.items():
        z = np.load(tmp_path / "a" / fcs.replace(".fcs", ".labels.npz"))
        assert hashlib.sha256(z["labels"].tobytes()).hexdigest()[:16] == labels_digest
        assert a[fcs]["fingerprint"] == fp
        assert "instrument" not in a[fcs] and "biology" not in a[fcs]
    _simulate(design, ids, tmp_path / "b", scale=0.25)
    named = copy.deepcopy(design)
    named["instrument"] = {"profile": "bd", **design["instrument"]}
    named["biology"] = "default"
    c = _simulate(named, ids, tmp_path / "c", scale=0.25)
    for fcs in a:
        ref = (tmp_path / "a" / fcs).read_bytes()
        assert (tmp_path / "b" / fcs).read_bytes() == ref  # deterministic
        assert (tmp_path / "c" / fcs).read_bytes() == ref  # bd/default named = not named
        assert c[fcs]["counts"] == a[fcs]["counts"]
    h = read_header(tmp_path / "a" / "PT08/PT08_BM_baseline_ngf1.fcs")
    assert h.pnn[:4] == ["FSC-A", "FSC-H", "SSC-A", "BV421-A"] and h.pnn[-1] == "Time"
    assert h.metadata["$P4R"] == "262144" and h.metadata["$CYT"] == "FACSCanto II"
    assert effective_patient(design, "PT01", design["patients"]["PT01"]) is design["patients"]["PT01"]


# ---------------------------------------------------------------------------------------------
# beckman: another lab's instrument
# ---------------------------------------------------------------------------------------------
def test_beckman_names_range_and_spillover(p2):
    out, truths = p2
    bm = out / "PT08/PT08_BM_baseline_ngf1.fcs"
    h = read_header(bm)
    assert h.pnn == ["FS INT", "FS PEAK", "SS INT", "PB450-A", "KO525-A", "FITC-A", "PE-A",
                     "PC5.5-A", "PC7-A", "APC-A", "APC-A750-A", "TIME"]
    assert h.pns[3] == "CD138 Pacific Blue" and h.pns[7] == "CD45 PC5.5"
    for i in range(1, len(h.pnn)):
        assert int(h.metadata[f"$P{i}R"]) == 2 ** 20
    assert int(h.metadata[f"$P{len(h.pnn)}R"]) >= 2 ** 20
    assert h.metadata["$CYT"] == "Navios EX"
    nk = read_header(out / "PT01/PT01_PB_baseline_nk.fcs")
    v = nk.pnn.index("PB450-A")
    assert not nk.pns[v]  # the viability dye: a blank $PnS
    det, spill = read_fcs(bm).spillover()
    assert det == h.pnn[3:11]
    spill = np.asarray(spill, dtype=float)
    assert spill[det.index("PC5.5-A"), det.index("APC-A")] == pytest.approx(0.09)  # not bd's 0.015
    t = truths["PT08/PT08_BM_baseline_ngf1.fcs"]
    assert t["instrument"]["profile"] == "beckman" and t["instrument"]["pnr"] == 2 ** 20
    # the lab's panels (config/test_profile2/panels) resolve it; the project's need the aliases
    panels = load_panels(PROFILE2 / "panels")
    for fcs, tr in truths.items():
        hh = read_header(out / fcs)
        resolve_panel(panels[tr["panel"]], hh.pnn, hh.pns, unstained=tr["unstained_markers"])
    with pytest.raises(PanelError, match="Viability"):
        resolve_panel(load_panels(REPO / "resources/panels")["pb_nk"], nk.pnn, nk.pns)


def test_beckman_shifts_and_scatter_scale(tmp_path):
    """The same tube on both instruments: a bright population moves by the marker's shift (on
    top of the 4x fluorescence gain); scatter sits lower in its range."""
    bd = load_design(TINY)
    bk = copy.deepcopy(bd)
    bk["instrument"] = "beckman"
    ids = ["PT01_PB_baseline_nk"]
    _simulate(bd, ids, tmp_path / "bd")
    t = _simulate(bk, ids, tmp_path / "bk")["PT01/PT01_PB_baseline_nk.fcs"]
    shifts = t["instrument"]["marker_shift_log10"]
    assert shifts == marker_shifts(list(shifts), 11)
    assert all(abs(s) <= MAX_SHIFT_LOG10 for s in shifts.values())
    assert max(abs(s) for s in shifts.values()) > 0.2  # shifts of the size asked for do occur
    x1, n1, lab, names = _compensated(tmp_path / "bd/PT01/PT01_PB_baseline_nk.fcs")
    x2, n2, lab2, _ = _compensated(tmp_path / "bk/PT01/PT01_PB_baseline_nk.fcs")
    assert np.array_equal(lab, lab2)
    t_cells = _of(lab, names, "t_nkg2a_neg", "t_nkg2a_pos")
    for marker, c1, c2 in [("CD3", "FITC-A", "FITC-A"), ("CD45", "BV510-A", "KO525-A")]:
        moved = np.log10(np.median(x2[t_cells, n2.index(c2)]) / 4.0
                         / np.median(x1[t_cells, n1.index(c1)]))
        assert moved == pytest.approx(shifts[marker], abs=0.05), marker
    lymph_bd = np.median(x1[t_cells, 0]) / 2 ** 18
    lymph_bk = np.median(x2[t_cells, n2.index("FS INT")]) / 2 ** 20
    assert lymph_bk == pytest.approx(0.75 * lymph_bd, rel=0.05)


def test_unknown_profiles_are_refused():
    with pytest.raises(ValueError, match="instrument profile"):
        instrument_for({"instrument": "cytek"})
    with pytest.raises(ValueError, match="biology profile"):
        effective_patient({"biology": "dara"}, "P", {})
    with pytest.raises(ValueError, match="knob"):
        effective_patient({"biology": {"cd38": "dim"}}, "P", {})


# ---------------------------------------------------------------------------------------------
# anti_cd38 biology
# ---------------------------------------------------------------------------------------------
def test_anti_cd38_planted_truth(p2):
    out, truths = p2
    for pid in ("PT01", "PT08"):
        for tube in ("ngf1", "ngf2"):
            t = truths[f"{pid}/{pid}_BM_baseline_{tube}.fcs"]
            assert 40.0 <= t["planted"]["pc_pct_of_nucleated"] <= 60.0
            assert 38.0 <= t["pc_pct_of_nucleated"] <= 62.0  # from the labels
            ph = t["aberrant_phenotype"]
            assert (ph["CD38"], ph["CD56"], ph["CD45"]) == ("dim", "neg", "pos")
            assert t["biology"]["profile"] == "anti_cd38"
    assert truths["PT08/PT08_BM_baseline_ngf1.fcs"]["planted"]["pc_pct_of_nucleated"] == 53.5
    assert truths["PT08/PT08_BM_baseline_ngf1.fcs"]["aberrant_phenotype"]["CD117"] == "pos"
    nk1 = truths["PT01/PT01_PB_baseline_nk.fcs"]
    nk8 = truths["PT08/PT08_PB_baseline_nk.fcs"]
    assert nk1["nk_pct_of_lymphocytes"] == pytest.approx(3.0, abs=0.3)  # the profile's
    assert nk8["nk_pct_of_lymphocytes"] == pytest.approx(5.0, abs=0.3)  # the patient's knob
    cart = truths["PT08/PT08_PB_I1_D007.fcs"]
    design = load_design(TINY)
    for key in ("nk_tube", "nk_kinetics"):  # profile 2 has no NK counts: the host's NK cells of old
        design.pop(key)
    ref = sim.simulate_file(_rows(design, ["PT08_PB_I1_D007"])[0], design, out / "ref", seed=596,
                            events_scale=SCALE)
    assert cart["planted"]["host_per_ul"]["nk"] == pytest.approx(
        0.25 * ref["planted"]["host_per_ul"]["nk"])


def test_anti_cd38_clone_positions(p2):
    """CD38-dim: the clone's median CD38 sits at the upper edge of the CD38-negative
    populations (between their 90th and 99.9th percentiles), far below normal plasma cells;
    CD56-negative; CD45 above the CD45-negative erythroblasts."""
    out, _ = p2
    x, pnn, lab, names = _compensated(out / "PT08/PT08_BM_baseline_ngf1.fcs")
    cd38 = x[:, pnn.index("FITC-A")]
    neg = cd38[_of(lab, names, "neutrophil", "eosinophil", "erythroblast")]
    clone = _of(lab, names, "pc_aberrant")
    med = np.median(cd38[clone])
    p90, p999 = np.percentile(neg, [90, 99.9])
    assert p90 < med < p999
    assert med < np.median(cd38[_of(lab, names, "pc_normal_kappa", "pc_normal_lambda")]) / 10
    cd56, cd45 = x[:, pnn.index("PE-A")], x[:, pnn.index("PC5.5-A")]
    assert np.median(cd56[clone]) < np.percentile(cd56[_of(lab, names, "neutrophil")], 99)
    assert np.median(cd45[clone]) > 10 * max(1.0, np.median(cd45[_of(lab, names, "erythroblast")]))


# ---------------------------------------------------------------------------------------------
# cart_tube.bead_channel: counting beads without a channel of their own
# ---------------------------------------------------------------------------------------------
def test_bead_channel_none_writes_no_bead_channel(tmp_path):
    """``none``: the CAR-T file has no Beads channel; the beads (the same events) are bright on
    every fluorescence channel, above the stained cells, tight, with today's scatter. ``own`` (the
    default) writes today's file."""
    design = load_design(TINY)
    own, none = copy.deepcopy(design), copy.deepcopy(design)
    own["cart_tube"]["bead_channel"] = "own"
    none["cart_tube"]["bead_channel"] = "none"
    ids, fcs = ["PT01_PB_I1_D014"], "PT01/PT01_PB_I1_D014.fcs"
    a = _simulate(design, ids, tmp_path / "a")[fcs]
    _simulate(own, ids, tmp_path / "b")
    c = _simulate(none, ids, tmp_path / "c")[fcs]
    assert (tmp_path / "b" / fcs).read_bytes() == (tmp_path / "a" / fcs).read_bytes()
    assert "bead_channel" not in a["planted"] and c["planted"]["bead_channel"] == "none"
    h_own, h = read_header(tmp_path / "a" / fcs), read_header(tmp_path / "c" / fcs)
    assert "APC-A" in h_own.pnn and "APC-A" not in h.pnn
    assert h.pnn == [n for n in h_own.pnn if n != "APC-A"]
    assert not any("Beads" in (s or "") for s in h.pns)
    x0, _, lab0, _ = _compensated(tmp_path / "a" / fcs)
    x, pnn, lab, names = _compensated(tmp_path / "c" / fcs)
    assert np.array_equal(lab, lab0)
    beads = _of(lab, names, "bead")
    cells = [_of(lab, names, p) for p in ("granulocyte", "monocyte", "b_cell", "nk_cell", "t_cd4", "t_cd8",
                                          "cart_cd4", "cart_cd8") if _of(lab, names, p).sum() >= 20]
    for j in range(3, len(pnn) - 1):  # every fluorescence channel
        b = x[beads, j]
        q25, med, q75 = np.percentile(b, [25, 50, 75])
        assert (q75 - q25) / 1.349 / med < 0.06, pnn[j]  # tight: CV of a few %
        assert all(med > np.percentile(x[c, j], 99) for c in cells), pnn[j]
    for j in range(3):  # scatter as with a channel of their own
        assert np.median(x[beads, j]) == pytest.approx(np.median(x0[beads, j]), rel=0.02)
    bad = copy.deepcopy(design)
    bad["cart_tube"]["bead_channel"] = "shared"
    with pytest.raises(ValueError, match=r"cart_tube.bead_channel: 'shared' is not one of \['own', 'none'\]"):
        _simulate(bad, ids, tmp_path / "d")


def test_profile2_reads_its_beads_on_cd4_and_cd8(p2):
    out, truths = p2
    fcs = "PT08/PT08_PB_I1_D007.fcs"
    assert truths[fcs]["planted"]["bead_channel"] == "none"
    h = read_header(out / fcs)
    assert "APC-A" not in h.pnn
    r = resolve_panel(load_panels(PROFILE2 / "panels")["pb_cart"], h.pnn, h.pns)
    assert r.shared == {"Beads": ("CD4", "CD8")}

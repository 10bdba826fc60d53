"""The normal-PC reference builder: the library function and writer, and the lab tool
(scripts/build_normal_pc_reference.py) on two tiny simulated normal marrows."""
import json
import math

import numpy as np
import pytest
import yaml
from clustering.normal_marrows import DONORS, build_tiny_reference, reference_tool

from mrdflow.clustering import (
    BACKBONE,
    REFERENCE_MARKERS,
    ClusteringError,
    NormalPCReference,
    PCEvents,
    build_normal_pc_reference,
    label_clusters,
    load_pc_events,
    load_reference,
    write_reference,
)
from mrdflow.clustering import ClusteringSettings as Settings

TUBE1 = ["CD138", "CD27", "CD38", "CD56", "CD45", "CD19", "CD117", "CD81"]
TUBE2 = ["CD138", "CD27", "CD38", "CD56", "CD45", "CD19", "IgK", "IgL"]
NGF_BACKBONE = [m for m in BACKBONE if m not in ("CD138", "CD38")]  # what a reference must describe


def _tube(rng, sample, tube, markers, n, centre=0.5, sd=0.05):
    x = rng.normal(centre, sd, (n, len(markers))).astype(np.float32)
    return PCEvents(sample, tube, list(markers), x)


# ------------------------------------------------------------------------------- library


def test_build_pools_tubes_per_marker_and_counts_events():
    rng = np.random.default_rng(1)
    tubes = [_tube(rng, "N1", "ngf1", TUBE1, 400), _tube(rng, "N1", "ngf2", TUBE2, 300, centre=0.6),
             _tube(rng, "N2", "ngf1", TUBE1, 200)]
    ref = build_normal_pc_reference(tubes, source="three tubes")
    assert list(ref.median) == list(REFERENCE_MARKERS) == list(ref.sd)
    assert ref.n_events == 900 and ref.source == "three tubes"
    cd27 = np.concatenate([t.values[:, t.markers.index("CD27")] for t in tubes])
    assert ref.median["CD27"] == round(float(np.median(cd27)), 3)
    lo, hi = np.quantile(cd27, [0.025, 0.975])
    assert ref.sd["CD27"] == round(float((hi - lo) / 3.92), 3)
    # CD81 and CD117 come from tube-1 events only (600), CD27 from all 900
    cd81 = np.concatenate([t.values[:, t.markers.index("CD81")] for t in tubes if "CD81" in t.markers])
    assert ref.median["CD81"] == round(float(np.median(cd81)), 3)
    assert abs(ref.median["CD81"] - 0.5) < 0.02 and ref.median["CD27"] > ref.median["CD81"]


def test_build_floors_the_spread_and_needs_enough_events():
    rng = np.random.default_rng(2)
    flat = PCEvents("N1", "ngf1", TUBE1, np.full((500, len(TUBE1)), 0.4, np.float32))
    ref = build_normal_pc_reference([flat])
    assert set(ref.sd.values()) == {0.02} and set(ref.median.values()) == {0.4}
    with pytest.raises(ClusteringError, match="only 99 normal PC events for CD27"):
        build_normal_pc_reference([_tube(rng, "N1", "ngf1", TUBE1, 99)])
    with pytest.raises(ClusteringError, match="CD81"):  # no tube measures CD81
        build_normal_pc_reference([_tube(rng, "N1", "ngf2", TUBE2, 500)])
    assert build_normal_pc_reference([_tube(rng, "N1", "ngf2", TUBE2, 500)], NGF_BACKBONE).n_events == 500
    with pytest.raises(ClusteringError, match="must describe"):
        build_normal_pc_reference([_tube(rng, "N1", "ngf1", TUBE1, 500)], ("CD27", "CD81"))


def test_written_reference_loads_back(tmp_path):
    ref = NormalPCReference({"CD27": 0.636, "CD56": 0.262, "CD45": 0.581, "CD19": 0.539, "CD81": 0.617},
                            {"CD27": 0.055, "CD56": 0.173, "CD45": 0.111, "CD19": 0.138, "CD81": 0.057},
                            "test", 13907)
    path = tmp_path / "ref.yaml"
    text = write_reference(ref, path, ["Built from four donors."])
    assert path.read_text() == text and "# Built from four donors." in text
    back = load_reference(path)
    assert back == NormalPCReference(ref.median, ref.sd, str(path), 13907)
    assert list(back.median) == list(ref.median)  # marker order kept
    no_n = tmp_path / "no_n.yaml"
    write_reference(NormalPCReference(ref.median, ref.sd), no_n)
    assert load_reference(no_n).n_events is None and "n_events" not in no_n.read_text()


def test_committed_reference_loads():
    from clustering.normal_marrows import REPO

    ref = load_reference(REPO / "resources" / "reference" / "normal_pc.yaml")
    assert list(ref.median) == list(REFERENCE_MARKERS) and ref.n_events is None
    doc = yaml.safe_load((REPO / "resources" / "reference" / "normal_pc.yaml").read_text())
    assert set(doc) == {"markers"}  # the committed file predates n_events


def test_load_rejects_bad_n_events(tmp_path):
    p = tmp_path / "r.yaml"
    p.write_text("n_events: many\nmarkers:\n" + "".join(f"  {m}: {{median: 0.5, sd: 0.1}}\n" for m in NGF_BACKBONE))
    with pytest.raises(ClusteringError, match="n_events"):
        load_reference(p)


# ------------------------------------------------------------------ lab tool, end to end


@pytest.fixture(scope="module")
def tiny_reference(tmp_path_factory):
    work = tmp_path_factory.mktemp("normal_pc")
    return work, build_tiny_reference(work)


def test_tool_builds_a_loadable_reference_from_two_normal_marrows(tiny_reference):
    work, path = tiny_reference
    ref = load_reference(path)
    assert set(NGF_BACKBONE) <= set(ref.median) and list(ref.median) == list(REFERENCE_MARKERS)
    for m in ref.median:
        assert math.isfinite(ref.median[m]) and 0.0 < ref.median[m] < 1.0, m  # logicle units
        assert math.isfinite(ref.sd[m]) and 0.02 <= ref.sd[m] < 0.5, m
    # n_events is every PC event the per-sample stage kept for the two marrows (both tubes)
    kept = [e for d in DONORS for e in load_pc_events(work / "gating" / f"{d}_BM_baseline" / "pc_events.npz")]
    assert len(kept) == 4 and ref.n_events == sum(e.values.shape[0] for e in kept) > 0
    # ... close to the normal PCs the simulator planted (the gate misses few)
    planted = sum(json.loads(p.read_text())["normal_pc"] for p in (work / "data").rglob("*.truth.json"))
    assert 0.8 * planted <= ref.n_events <= 1.05 * planted
    header = path.read_text().splitlines()[:4]
    assert any("2 normal marrows" in line for line in header), header


def test_tiny_reference_agrees_with_the_committed_one(tiny_reference):
    """Same donors' phenotype (fewer events): medians within a fraction of the spread."""
    from clustering.normal_marrows import REPO

    tiny = load_reference(tiny_reference[1])
    committed = load_reference(REPO / "resources" / "reference" / "normal_pc.yaml")
    for m in committed.median:
        assert abs(tiny.median[m] - committed.median[m]) <= 0.5 * committed.sd[m], m


def test_tiny_reference_calls_normal_pcs_normal_and_tumour_aberrant(tiny_reference):
    ref = load_reference(tiny_reference[1])
    normal = [ref.median.get(m, 0.8) for m in BACKBONE]  # CD138 / CD38 bright
    tumour = [0.78, 0.40, 0.84, 0.72, 0.25, 0.18]  # CD27 low, CD56 high, CD45 and CD19 low
    labels = label_clusters(np.array([normal, tumour]), np.array([100, 100]), np.zeros(2), np.zeros(2), ref,
                            Settings(n_clusters=2))
    assert [lab.aberrant for lab in labels] == [False, True]


def test_same_reference_from_the_kept_pc_events(tiny_reference, tmp_path):
    work, path = tiny_reference
    out = tmp_path / "again.yaml"
    npz = [str(work / "gating" / f"{d}_BM_baseline" / "pc_events.npz") for d in DONORS]
    assert reference_tool().main(["--pc-events", *npz, "--out", str(out)]) == 0
    a, b = load_reference(path), load_reference(out)
    assert (a.median, a.sd, a.n_events) == (b.median, b.sd, b.n_events)


def test_tool_reports_a_panel_that_is_not_a_marrow_panel(tiny_reference, tmp_path, capsys):
    work, _ = tiny_reference
    fcs = next((work / "data").rglob("*_ngf1.fcs"))
    rc = reference_tool().main(["--fcs", str(fcs), "--panel", "pb_nk", "--out", str(tmp_path / "r.yaml")])
    assert rc == 1 and "not a PC/MRD panel" in capsys.readouterr().err
    assert not (tmp_path / "r.yaml").exists()

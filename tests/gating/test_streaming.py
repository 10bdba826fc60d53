"""Streamed gating (tubes larger than memory): gates placed on a sample, counted over every event.

With a placement sample as large as the tube, streaming must give exactly what in-memory gating
gives (gates, counts, kept events); with a smaller sample the counts are still over every event;
and no read ever asks for more than one chunk of events.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import mrdflow.demo._simulate as sim
from mrdflow.gating import (
    GateEngine,
    StreamedGating,
    TubeView,
    compensation_for,
    gate_tube,
    gate_tube_streamed,
    load_template,
)
from mrdflow.io import read_fcs, read_header
from mrdflow.panels import load_panels, resolve_panel

REPO = Path(__file__).resolve().parents[2]
TINY_DESIGN = REPO / "config/test/design.yaml"
TINY_SAMPLES = REPO / "config/test/samples.tsv"
PANELS = REPO / "resources/panels"
GATING = REPO / "resources/gating"
TRANSFORMS = {
    "fluorescence": {"type": "logicle", "t": 262144, "w": 0.5, "m": 4.5, "a": 0.0},
    "scatter": {"type": "linear", "t": 262144},
}
SAMPLE = "PT08_BM_baseline"
CHUNK = 3001  # not a divisor of anything: chunk edges fall everywhere


@pytest.fixture(scope="module")
def tubes(tmp_path_factory):
    """PT08's baseline marrow (both NGF tubes, 20 000 events each), a clog planted in tube 1 so
    the time QC excludes a segment (its edges come from the streamed Time pass)."""
    out = tmp_path_factory.mktemp("sim")
    design = sim.load_design(TINY_DESIGN)
    design["clog_files"] = {**(design.get("clog_files") or {}), f"{SAMPLE}_ngf1": {"start": 0.45, "length": 0.12}}
    rows = [r for r in sim.read_samples_tsv(TINY_SAMPLES) if r["sample_id"] == SAMPLE]
    assert {r["panel"] for r in rows} == {"ngf_tube1", "ngf_tube2"}
    for r in rows:
        sim.simulate_file(r, design, out, seed=596)
    return out, rows


def _setup(path: Path, panel: str):
    h = read_header(path)
    resolved = resolve_panel(load_panels(PANELS)[panel], h.pnn, h.pns)
    return resolved, compensation_for("fcs", h.metadata)


def _in_memory(path: Path, panel: str):
    d = read_fcs(path)
    d.scale_in_place()
    resolved, comp = _setup(path, panel)
    return gate_tube(load_template(GATING, panel), TubeView(d, resolved, comp, TRANSFORMS))


def _streamed(path: Path, panel: str, **kw) -> StreamedGating:
    resolved, comp = _setup(path, panel)
    return gate_tube_streamed(load_template(GATING, panel), path, resolved, comp, TRANSFORMS,
                              chunk_events=kw.pop("chunk_events", CHUNK),
                              keep={"PC": ("PC_kappa", "PC_lambda")}, **kw)


@pytest.mark.parametrize("panel", ["ngf_tube1", "ngf_tube2"])
def test_whole_tube_as_placement_sample_equals_in_memory(tubes, panel):
    folder, rows = tubes
    path = folder / next(r["fcs"] for r in rows if r["panel"] == panel)
    mem = _in_memory(path, panel)
    st = _streamed(path, panel, placement_events=10**9)
    assert st.gatingml() == mem.gatingml()  # the very same gates, edges included
    assert st.table() == mem.table()
    assert st.n_events == mem.n_events == read_header(path).n_events
    assert st.nonfinite_events() == mem.nonfinite_events()
    def counts(g):
        return [(s.gate_id, s.count, s.parent_count) for s in g.steps]

    assert counts(st) == counts(mem)
    flags = ("PC_kappa", "PC_lambda") if panel == "ngf_tube2" else ()
    a, b = st.events_in("PC", flags), mem.events_in("PC", flags)
    assert a.markers == b.markers
    assert a.values.shape == (mem.count("PC"), len(a.markers))
    np.testing.assert_allclose(a.values, b.values, rtol=0, atol=1e-6)
    for f in flags:
        np.testing.assert_array_equal(a.flags[f], b.flags[f])
    if panel == "ngf_tube1":
        assert st.qc["time"]["segments"] and any(s.gate_id == "TimeOK_bad1" for s in st.steps)
    for key, value in mem.qc["time"].items():
        assert st.qc["time"][key] == (pytest.approx(value, abs=1e-12) if key == "removed_fraction" else value), key


def test_smaller_placement_sample_counts_every_event(tubes):
    folder, rows = tubes
    path = folder / next(r["fcs"] for r in rows if r["panel"] == "ngf_tube2")
    mem = _in_memory(path, "ngf_tube2")
    st = _streamed(path, "ngf_tube2", placement_events=6000)
    placement = dict(st.qc["placement"])
    candidates = placement.pop("candidates")
    assert st.sample.n_events == 6000 and placement == {"events": 6000, "of": 20000, "seed": 0}
    # the PC gate (and its kappa/lambda children) placed again on every CD138+ or CD38+ event
    assert candidates["boxes"]["PC"] == [{"CD138": [0.45, None]}, {"CD38": [pytest.approx(0.55), None]}]
    assert candidates["placed_on"] == "sample and candidates", candidates.get("why")
    assert st.count("PC") <= candidates["events"] < 20000
    # the time QC's removed fraction is over every event too
    assert st.qc["time"]["removed_fraction"] == 1 - st.count("TimeOK") / st.n_events
    assert st.n_events == 20000
    # the masks and plots are the sample's; the counts and kept events are every event's
    assert st.mask("PC").shape == (6000,)
    assert st.events_in("PC", ("PC_kappa",)).values.shape[0] == st.count("PC")
    assert st.count("PC_kappa") == int(st.events_in("PC", ("PC_kappa",)).flags["PC_kappa"].sum())
    for s in st.steps:
        assert s.count == st.count(s.gate_id) and s.count <= s.parent_count
    # Gates placed on 30% of the events land close to where all the events put them: every
    # population within 1% of the tube (and the PC count, the read-out, within 3% of itself).
    for s in mem.steps:
        assert abs(st.count(s.gate_id) - s.count) <= 0.01 * mem.n_events, s.gate_id
    assert abs(st.count("PC") - mem.count("PC")) <= 0.03 * mem.count("PC")
    # the same seed, the same sample; another seed, another sample
    again = _streamed(path, "ngf_tube2", placement_events=6000)
    assert again.gatingml() == st.gatingml()
    other = _streamed(path, "ngf_tube2", placement_events=6000, seed=1)
    assert not np.array_equal(other.sample.view.raw, st.sample.view.raw)


def test_streaming_reads_one_chunk_at_a_time(tubes, monkeypatch):
    import mrdflow.io._reader as reader

    folder, rows = tubes
    path = folder / next(r["fcs"] for r in rows if r["panel"] == "ngf_tube1")
    asked = []
    real = reader._read_rows

    def spy(fh, header, start, stop, out_dtype, **kw):
        asked.append(stop - start)
        return real(fh, header, start, stop, out_dtype, **kw)

    def refuse(*a, **k):
        raise AssertionError("the streamed path read the whole tube")

    monkeypatch.setattr(reader, "_read_rows", spy)
    monkeypatch.setattr(reader, "read_fcs", refuse)
    st = _streamed(path, "ngf_tube1", placement_events=5000, chunk_events=4096)
    assert st.n_events == 20000
    assert asked and max(asked) <= 4096
    # sample, segment edges (a clog is planted), evaluation: three or four passes, no more
    assert sum(asked) in (3 * 20000, 4 * 20000)


def test_analyse_sample_streams_above_placement_events(tubes, tmp_path):
    """The per-sample stage streams a tube with more than ``sample.placement_events`` events:
    every file is written, counts are over every event and agree with each other and closely
    with the in-memory run, and the plots say they show the placement sample."""
    import csv
    import dataclasses

    from mrdflow.config import Tube
    from mrdflow.sample import analyse_sample, settings_from_config

    folder, rows = tubes
    cfg = {"panels": {p: {"transform": TRANSFORMS, "compensation": "fcs"} for p in ("ngf_tube1", "ngf_tube2")},
           "sample": {"plots": True}}
    settings = settings_from_config(cfg, load_panels(PANELS), GATING, workdir=REPO)
    assert settings.placement_events == 1_000_000  # the default: these 20 000-event tubes are read whole
    # 100 time bins for both runs (the default asks 200 events a bin, which a 12 000-event sample
    # cannot fill: its segments would be cut on a coarser grid)
    from mrdflow.gating import QCSettings

    settings = dataclasses.replace(settings, qc=QCSettings(min_events_per_bin=100))
    tube_list = [Tube(**{**{k: v for k, v in r.items() if k not in ("fmo_marker", "beads_per_tube", "blood_volume_ul")},
                         "day": int(r["day"]), "infusion": int(r["infusion"])}) for r in rows]
    mem = analyse_sample(SAMPLE, tube_list, folder, settings, tmp_path / "mem")
    st = analyse_sample(SAMPLE, tube_list, folder, dataclasses.replace(settings, placement_events=12_000),
                        tmp_path / "stream")
    assert st["status"] == mem["status"] == "ok" and not st["errors"]
    for t, q in st["tubes"].items():
        assert "placement_events" not in mem["tubes"][t]
        assert q["placement_events"] == 12_000 and q["events"] == mem["tubes"][t]["events"] == 20_000
        for key in ("time_ok", "singlets"):
            assert abs(q[key] - mem["tubes"][t][key]) <= 0.01 * q["events"], (t, key)
        c, cm = st["counts"][t], mem["counts"][t]
        assert abs(c["nucleated"] - cm["nucleated"]) <= 0.01 * q["events"]
        assert abs(c["pc"] - cm["pc"]) <= 0.03 * cm["pc"]
    with open(tmp_path / "stream" / "gating.tsv") as fh:
        table = {(r["tube"], r["population"]): int(r["count"]) for r in csv.DictReader(fh, delimiter="\t")}
    for t, c in st["counts"].items():
        assert table[(t, "PC")] == c["pc"] and table[(t, "Nucleated")] == c["nucleated"]
    from mrdflow.clustering import load_pc_events

    for e in load_pc_events(tmp_path / "stream" / "pc_events.npz"):  # every PC event, not the sample's
        assert e.values.shape[0] == st["counts"][e.tube]["pc"] > 0
        if e.kappa is not None:
            assert int(e.kappa.sum()) == st["counts"][e.tube]["pc_kappa"]
    plots = sorted((tmp_path / "stream" / "plots").rglob("*.png"))
    assert len(plots) == len(sorted((tmp_path / "mem" / "plots").rglob("*.png"))) > 10


def test_nk_tube_with_fmo_streamed(tmp_path):
    """A PB NK tube and its FMO control, both streamed: with whole-tube samples the NK read-outs
    (NKG2A% from every event, medians from the kept NK events) equal the in-memory ones; with a
    smaller sample the threshold comes from the FMO sample and NKG2A% stays close."""
    import dataclasses

    from mrdflow.config import Tube
    from mrdflow.sample import analyse_sample, settings_from_config

    sid = "PT01_PB_baseline_nk"
    design = sim.load_design(TINY_DESIGN)
    rows = [r for r in sim.read_samples_tsv(TINY_SAMPLES) if r["sample_id"] == sid]
    assert {r["role"] for r in rows} == {"stain", "fmo"}
    for r in rows:
        sim.simulate_file(r, design, tmp_path / "data", seed=596)
    tf = {"fluorescence": TRANSFORMS["fluorescence"], "scatter": TRANSFORMS["scatter"]}
    cfg = {"panels": {"pb_nk": {"transform": tf, "compensation": "fcs"}}, "sample": {"plots": False}}
    settings = settings_from_config(cfg, load_panels(PANELS), GATING, workdir=REPO)
    tube_list = [Tube(**{**{k: v for k, v in r.items() if k not in ("beads_per_tube", "blood_volume_ul")},
                         "fmo_marker": r["fmo_marker"] or None,
                         "day": int(r["day"]), "infusion": int(r["infusion"])}) for r in rows]
    mem = analyse_sample(sid, tube_list, tmp_path / "data", settings, tmp_path / "mem")
    n = mem["tubes"]["nk"]["events"]

    import mrdflow.gating as gating

    real = gating.gate_tube_streamed
    seen = []

    def whole(*a, **k):  # streamed, but with the whole tube as placement sample
        seen.append(a[1])
        return real(*a, **{**k, "placement_events": 10**9, "chunk_events": 2999})

    import pytest as _pytest

    with _pytest.MonkeyPatch.context() as mp:
        mp.setattr(gating, "gate_tube_streamed", whole)
        st = analyse_sample(sid, tube_list, tmp_path / "data", dataclasses.replace(settings, placement_events=1000),
                            tmp_path / "whole")
    assert len(seen) == 2  # stain and FMO both streamed
    assert st["nk"] == mem["nk"]
    small = analyse_sample(sid, tube_list, tmp_path / "data", dataclasses.replace(settings, placement_events=n // 2),
                           tmp_path / "small")
    assert small["tubes"]["nk"]["placement_events"] == n // 2
    assert small["nk"]["nk_count"] == int(np.load(tmp_path / "small" / "nk_events.npz")["values"].shape[0])
    assert abs(small["nk"]["nkg2a_pct"] - mem["nk"]["nkg2a_pct"]) <= 2.0  # percentage points


@pytest.fixture(scope="module")
def rare(tmp_path_factory):
    """PT08's week-4 marrow: 10^5 events a tube, ~40 plasma cells (an MRD-level population)."""
    out = tmp_path_factory.mktemp("rare")
    design = sim.load_design(TINY_DESIGN)
    rows = [r for r in sim.read_samples_tsv(TINY_SAMPLES) if r["sample_id"] == "PT08_BM_week4"]
    for r in rows:
        sim.simulate_file(r, design, out, seed=596)
    return out, rows


def _bounds(g, gate="PC"):
    return next(s for s in g.steps if s.gate_id == gate).bounds


@pytest.mark.parametrize("panel", ["ngf_tube1", "ngf_tube2"])
def test_rare_gate_placed_on_every_candidate(rare, panel):
    """On a 10% sample a ~40-event PC population is ~4 events; the PC gate is placed again on the
    sample plus every CD138+ or CD38+ event of the tube, so its CD38 cut is the whole tube's, and
    its count and kept events are exact (every event of the final gates, counted in memory)."""
    folder, rows = rare
    path = folder / next(r["fcs"] for r in rows if r["panel"] == panel)
    mem = _in_memory(path, panel)
    st = _streamed(path, panel, placement_events=10_000)
    cand = st.qc["placement"]["candidates"]
    assert cand["placed_on"] == "sample and candidates", cand.get("why")
    assert mem.count("PC") <= cand["events"] < 0.2 * st.n_events
    assert cand["placement_events"] > 10_000
    assert _bounds(st)["CD38"][0] == pytest.approx(_bounds(mem)["CD38"][0], abs=0.005)
    # counts over every event, the re-placed PC subtree included, equal a whole-tube evaluation
    d = read_fcs(path)
    resolved, comp = _setup(path, panel)
    whole = GateEngine(st.strategy).evaluate(d.scale_in_place(), d.pnn, sample_comp=(list(comp.detectors), comp.spill))
    for s in st.steps:
        assert st.count(s.gate_id) == whole.count(s.gate_id), s.gate_id
    flags = ("PC_kappa", "PC_lambda") if panel == "ngf_tube2" else ()
    kept = st.events_in("PC", flags)
    assert kept.values.shape[0] == st.count("PC") > 20
    for f in flags:
        assert int(kept.flags[f].sum()) == st.count(f)
    # the plots' sample is gated by the final gates
    assert st.sample.count("PC") == int(st.mask("PC").sum())


def test_rare_gate_outside_its_candidates_keeps_the_sample_placement(rare, monkeypatch):
    """When the second placement reads outside the candidates (here: a region drawn too tight on
    purpose), the sample's placement stands and the QC says why; counts stay exact."""
    import mrdflow.gating._candidates as cands

    monkeypatch.setattr(cands, "MARGIN", -0.2)  # the within-gate region starts 0.2 above the CD38 window
    folder, rows = rare
    path = folder / next(r["fcs"] for r in rows if r["panel"] == "ngf_tube1")
    st = _streamed(path, "ngf_tube1", placement_events=10_000)
    cand = st.qc["placement"]["candidates"]
    assert cand["placed_on"] == "sample"
    assert cand["why"].startswith("PC CD138.min read events outside its candidates")
    d = read_fcs(path)
    resolved, comp = _setup(path, "ngf_tube1")
    whole = GateEngine(st.strategy).evaluate(d.scale_in_place(), d.pnn, sample_comp=(list(comp.detectors), comp.spill))
    assert st.count("PC") == whole.count("PC") == st.events_in("PC").values.shape[0]

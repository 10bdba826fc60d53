"""Bound evidence and uncertainty: a population outside its search window is either found by the
fallback (recorded) or flagged; sure placements on the simulated tiny tubes stay unflagged."""
from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np

from mrdflow.gating import BoundEvidence, BoundRule
from mrdflow.gating._bounds import place_bound


class _View:
    def __init__(self, cols):
        self.cols = cols
        self.n = len(next(iter(cols.values())))

    def values(self, dim):
        return self.cols[dim]


def _placement(cd38: np.ndarray) -> SimpleNamespace:
    return SimpleNamespace(view=_View({"CD38": cd38.astype(np.float32)}), masks={},
                           template=SimpleNamespace(source="test"))


def _cd38(pc_at: float, seed: int = 1) -> np.ndarray:
    """CD138+ events: 40% CD38-negative (0.15) and 60% plasma cells at ``pc_at``."""
    rng = np.random.default_rng(seed)
    return np.concatenate([rng.normal(0.15, 0.05, 4000), rng.normal(pc_at, 0.04, 6000)])


def _place(values, window=(0.6, 0.8)):
    p = _placement(values)
    rule = BoundRule("valley", window=window)
    return place_bound(p, "PC", "CD38", "min", rule, np.ones(values.size, bool), {"CD38": (None, None)})


def test_population_inside_the_window_is_found_by_the_fallback():
    v = _cd38(0.66)
    placed = _place(v)
    ev = placed.evidence
    truth = 0.5 * (0.15 + 0.66)  # anywhere in the gap between the two populations keeps the PCs
    if ev.sure:
        assert ev.fallback is not None
        assert abs(placed.value - truth) < 0.15
        assert np.mean(v[6000 - 2000:] >= placed.value) > 0.7
    else:
        assert ev.reason


def test_population_below_the_window_is_never_a_sure_wrong_number():
    for pc_at in (0.55, 0.6, 0.66, 0.7):
        v = _cd38(pc_at)
        placed = _place(v)
        pcs = v[4000:]
        kept = float(np.mean(pcs >= placed.value))
        # Either the PCs are in the gate, or the bound is not sure: never a sure cut losing them.
        assert kept > 0.95 or not placed.evidence.sure, (pc_at, placed)


def test_evidence_is_sane_and_serialisable():
    placed = _place(_cd38(0.9))
    ev = placed.evidence
    assert ev.sure and ev.fallback is None and ev.method == "valley"
    assert 0.0 <= ev.valley_depth <= 1.0
    assert 0.0 <= ev.density_ratio <= 1.0
    assert ev.edge_distance >= 0.0
    d = json.loads(json.dumps(ev.as_dict()))
    assert d["window"] == [0.6, 0.8] and d["sure"] is True
    assert isinstance(ev, BoundEvidence)


def test_tiny_tubes_are_placed_sure_without_fallback(tmp_path):
    """The simulated tiny cohort's tubes: every bound sure, placed by its own method (so the counts
    are today's), and every evidence value in range."""
    from pathlib import Path

    import mrdflow.demo._simulate as sim
    from mrdflow.gating import gate_tube, load_template, open_tube
    from mrdflow.panels import load_panels

    repo = Path(__file__).resolve().parents[2]
    transforms = {"fluorescence": {"type": "logicle", "t": 262144, "w": 0.5, "m": 4.5, "a": 0.0},
                  "scatter": {"type": "linear", "t": 262144}}
    design = sim.load_design(repo / "config/test/design.yaml")
    panels = load_panels(repo / "resources/panels")
    wanted = {"PT08_BM_baseline", "PT01_BM_week4", "PT01_PB_I1_D000", "PT01_PB_I1_D014"}
    rows = [r for r in sim.read_samples_tsv(repo / "config/test/samples.tsv")
            if r["sample_id"] in wanted and r["role"] == "stain"]
    assert len(rows) == 6
    for r in rows:
        sim.simulate_file(r, design, tmp_path, seed=596)
        g = gate_tube(load_template(repo / "resources/gating", r["panel"]),
                      open_tube(tmp_path / r["fcs"], panels[r["panel"]], transforms).view())
        assert g.reviews() == [], r["fcs"]
        for step in g.steps:
            for ev in step.evidence.values():
                assert ev.sure and ev.fallback is None and ev.edge_distance >= 0
                assert ev.valley_depth is None or 0.0 <= ev.valley_depth <= 1.0
                assert ev.density_ratio is None or 0.0 <= ev.density_ratio <= 1.0


def _place_above_negative(values, window=(0.6, 0.8)):
    p = _placement(values)
    rule = BoundRule("valley", window=window, fallback=BoundRule("above_negative", window=window))
    return place_bound(p, "PC", "CD38", "min", rule, np.ones(values.size, bool), {"CD38": (None, None)})


def test_population_far_below_the_window_is_found_when_the_rule_says_above_negative():
    """PCs well below the window leave it empty: a valley search there finds a clean, deep 'valley'
    in the empty tail and would keep no PC. A rule whose fallback is above_negative ("every CD138+
    event above the CD38-negative population is a PC") catches the population between the negative
    one and the cut, and the cut moves into the gap above the negative population."""
    for pc_at in (0.4, 0.45, 0.5):
        v = _cd38(pc_at)
        placed = _place_above_negative(v)
        kept = float(np.mean(v[4000:] >= placed.value))
        assert kept > 0.95, (pc_at, placed)
        assert float(np.mean(v[:4000] >= placed.value)) < 0.05, (pc_at, placed)
        assert placed.evidence.fallback and "above_negative" in placed.evidence.fallback


def test_above_negative_rule_keeps_a_clean_valley_in_the_window():
    """Bright PCs in the window's reach: the valley in the window stands, no fallback."""
    v = _cd38(0.9)
    placed = _place_above_negative(v)
    assert placed.evidence.sure and placed.evidence.fallback is None
    assert float(np.mean(v[4000:] >= placed.value)) > 0.95


def _place_pc_cd38(cd38: np.ndarray, cd138: np.ndarray):
    """The PC gate's CD38.min as the NGF templates place it: a valley in [0.6, 0.8] among the
    CD138 >= 0.45 candidates, falling back to just above the CD38-negative population; the gate's
    CD138 bound at its template value."""
    p = SimpleNamespace(view=_View({"CD38": cd38, "CD138": cd138}), masks={}, template=SimpleNamespace(source="test"))
    given = {"CD138": (0.45, None)}
    rule = BoundRule("valley", window=(0.6, 0.8), given=given,
                     fallback=BoundRule("above_negative", window=(0.6, 0.8), given=given))
    return place_bound(p, "PC", "CD38", "min", rule, np.ones(cd38.size, bool),
                       {"CD38": (None, None), "CD138": (0.45, None)})


def test_cd38_dim_clone_without_cd38_negative_cd138_events():
    """The CD138+ events hold no CD38-negative cell at all: a CD38-dim clone (0.49) and a few
    bright normal PCs (0.84). The negative population comes from the parent (every nucleated cell,
    CD38-negative at 0.33), so the cut goes below the clone, not between clone and normal PCs."""
    rng = np.random.default_rng(3)
    n_neg, n_clone, n_norm = 20000, 8000, 300
    cd38 = np.concatenate([rng.normal(0.33, 0.06, n_neg), rng.normal(0.49, 0.04, n_clone),
                           rng.normal(0.84, 0.03, n_norm)]).astype(np.float32)
    cd138 = np.concatenate([rng.normal(0.2, 0.07, n_neg), rng.normal(0.74, 0.04, n_clone),
                            rng.normal(0.69, 0.04, n_norm)]).astype(np.float32)
    placed = _place_pc_cd38(cd38, cd138)
    clone = cd38[n_neg:n_neg + n_clone]
    assert float(np.mean(clone >= placed.value)) > 0.95, placed
    assert placed.evidence.fallback and "above_negative" in placed.evidence.fallback
    # The candidates hold no negative cell: the one-sided valley (the rise from the cut to the
    # clone) is the evidence, and it is deep, so the corrected cut is reported as sure.
    assert placed.evidence.sure and placed.evidence.valley_depth >= 0.5, placed.evidence


def test_clone_merging_into_the_negative_population_stays_unsure():
    """A CD38-dim clone that reaches into the CD38-negative population (no gap between them on
    the candidates' axis): the above_negative cut has nothing to sit in, and must stay unsure."""
    rng = np.random.default_rng(4)
    n_neg, n_clone = 20000, 8000
    cd38 = np.concatenate([rng.normal(0.33, 0.06, n_neg), rng.normal(0.40, 0.08, n_clone)]).astype(np.float32)
    cd138 = np.concatenate([rng.normal(0.2, 0.07, n_neg), rng.normal(0.74, 0.04, n_clone)]).astype(np.float32)
    placed = _place_pc_cd38(cd38, cd138)
    clone = cd38[n_neg:]
    assert float(np.mean(clone >= placed.value)) > 0.95 or not placed.evidence.sure, placed
    assert not placed.evidence.sure, placed.evidence


def test_generic_fallback_far_from_the_window_is_not_sure():
    """Mast cells (CD117-bright, rare) expected in [0.68, 0.82]; a large CD117-dim population (a
    CD117+ clone) at 0.66 fills the window's low end. The generic fallback finds the valley between
    the negatives and the dim population, far below the window: it separates other populations than
    the template's, so the bound must not be reported as sure."""
    rng = np.random.default_rng(5)
    v = np.concatenate([rng.normal(0.14, 0.05, 12000), rng.normal(0.66, 0.04, 8000),
                        rng.normal(0.8, 0.02, 5)]).astype(np.float32)
    placed = _place(v, window=(0.68, 0.82))
    assert not placed.evidence.sure, placed
    assert placed.evidence.reason and "not taken" in placed.evidence.fallback
    assert placed.value >= 0.68, placed  # the dim population is not counted in: the window's cut stands


def _mrd_marrow(n_clone: int, n_tail: int, seed: int = 6):
    """An MRD marrow's PC gate candidates: CD38-negative cells (0.33), bright normal PCs (0.84,
    CD138 0.70), a rare CD38-dim clone (0.49, CD138 0.75) and a CD138-dim tail of another lineage
    (eosinophils: CD38 0.45, CD138 just above the gate's CD138 cut)."""
    rng = np.random.default_rng(seed)
    n_neg, n_norm = 200000, 300
    cd38 = np.concatenate([rng.normal(0.33, 0.05, n_neg), rng.normal(0.84, 0.03, n_norm),
                           rng.normal(0.49, 0.04, n_clone), rng.normal(0.45, 0.04, n_tail)]).astype(np.float32)
    cd138 = np.concatenate([rng.normal(0.2, 0.06, n_neg), rng.normal(0.70, 0.05, n_norm),
                            rng.normal(0.75, 0.04, n_clone), rng.normal(0.49, 0.02, n_tail)]).astype(np.float32)
    placed = _place_pc_cd38(cd38, cd138)
    return placed, cd38[n_neg + n_norm:n_neg + n_norm + n_clone]


def test_rare_cd38_dim_clone_in_an_mrd_marrow_is_never_left_out_silently():
    """150 CD38-dim clone cells among 200,000: too few for a density mode, so the valley in the
    window looks clean. The clone is the MRD read-out: either the cut keeps it, or it is unsure."""
    placed, clone = _mrd_marrow(150, 0)
    kept = float(np.mean(clone >= placed.value))
    assert kept > 0.95 or not placed.evidence.sure, placed
    assert kept > 0.95 and placed.evidence.fallback, placed  # no other lineage in the way: found


def test_lowered_cut_taking_in_another_lineage_stays_unsure():
    """The same clone beside 400 CD138-dim cells of another lineage at the same CD38: a rectangle
    cannot keep the clone without them, so the placement is kept unsure (flagged for review)."""
    placed, _clone = _mrd_marrow(150, 400)
    assert not placed.evidence.sure and "cannot keep" in placed.evidence.reason, placed.evidence


def test_no_clone_no_flag():
    """An MRD-negative marrow, with or without the CD138-dim tail: the valley stands, sure."""
    for tail in (0, 400):
        placed, _ = _mrd_marrow(0, tail)
        assert placed.evidence.sure and placed.evidence.fallback is None and placed.value > 0.55, (tail, placed)


def test_cd138_cut_within_the_gate_leaves_the_other_lineage_out():
    """The PC gate's second bound, CD138.min ``within_gate``: placed among the events above the
    (lowered) CD38 cut, it separates the CD138-bright clone and normal PCs from the CD138-dim tail
    of the other lineage, and the CD38 bound's verdict, re-checked on the final gate, is sure."""
    rng = np.random.default_rng(7)
    n_neg, n_norm, n_clone, n_tail = 200000, 300, 150, 400
    cd38 = np.concatenate([rng.normal(0.33, 0.05, n_neg), rng.normal(0.84, 0.03, n_norm),
                           rng.normal(0.49, 0.04, n_clone), rng.normal(0.45, 0.04, n_tail)]).astype(np.float32)
    cd138 = np.concatenate([rng.normal(0.2, 0.06, n_neg), rng.normal(0.70, 0.05, n_norm),
                            rng.normal(0.75, 0.04, n_clone), rng.normal(0.40, 0.05, n_tail)]).astype(np.float32)
    p = SimpleNamespace(view=_View({"CD38": cd38, "CD138": cd138}), masks={}, template=SimpleNamespace(source="test"))
    given = {"CD138": (0.45, None)}
    everything = np.ones(cd38.size, bool)
    bounds = {"CD38": (None, None), "CD138": (0.45, None)}  # the template's CD138 value before placement
    cd38_rule = BoundRule("valley", window=(0.6, 0.8), given=given,
                          fallback=BoundRule("above_negative", window=(0.6, 0.8), given=given))
    placed38 = place_bound(p, "PC", "CD38", "min", cd38_rule, everything, bounds)
    assert placed38.recheck is not None and not placed38.evidence.sure  # the tail is in with CD138 >= 0.45
    bounds["CD38"] = (placed38.value, None)
    placed138 = place_bound(p, "PC", "CD138", "min", BoundRule("valley", window=(0.35, 0.6), within_gate=True),
                            everything, bounds)
    bounds["CD138"] = (placed138.value, None)
    pc = (cd38 >= bounds["CD38"][0]) & (cd138 >= bounds["CD138"][0])
    clone = slice(n_neg + n_norm, n_neg + n_norm + n_clone)
    assert float(np.mean(pc[clone])) > 0.95 and float(np.mean(pc[n_neg:n_neg + n_norm])) > 0.95
    assert int(pc[n_neg + n_norm + n_clone:].sum()) < 20, placed138
    assert placed38.recheck(bounds).sure, placed38.recheck(bounds)


def _lymphocyte_fsc(mode: float, n_tail: int, seed: int = 4) -> np.ndarray:
    """Low-SSC events on FSC: lymphocytes at ``mode`` (SD 0.02) and ``n_tail`` larger cells thinning
    out above them (an exponential tail, no peak)."""
    rng = np.random.default_rng(seed)
    return np.concatenate([rng.normal(mode, 0.02, 5000), mode + rng.exponential(0.1, n_tail)])


def _place_lymphocytes_fsc_max(values, window=(0.24, 0.34)):
    p = SimpleNamespace(view=_View({"FSC-A": values.astype(np.float32)}), masks={},
                        template=SimpleNamespace(source="test"))
    rule = BoundRule("valley", window=window, fallback=BoundRule("tail", window=window, k=4.0))
    return place_bound(p, "Lymphocytes", "FSC-A", "max", rule, np.ones(values.size, bool), {"FSC-A": (None, None)})


def test_thin_tail_above_a_population_is_cut_at_its_upper_end_and_sure():
    """Lymphodepleted blood: few low-SSC cells above the lymphocytes, a thin tail with no monocyte
    peak, so the window's density minimum is its far edge (unsure). The tail fallback cuts at the
    lymphocytes' upper end (mode + 4 SDs) and is sure: past the population, nothing between."""
    v = _lymphocyte_fsc(0.20, 600)
    placed = _place_lymphocytes_fsc_max(v)
    ev = placed.evidence
    assert ev.sure, ev
    assert abs(placed.value - (0.20 + 4 * 0.02)) < 0.015, placed
    assert ev.fallback and ev.fallback.startswith("tail:") and "uncertain" in ev.fallback
    assert float(np.mean(v[:5000] < placed.value)) > 0.99
    assert ev.density_ratio is not None and ev.density_ratio <= 0.05


def test_tail_cut_outside_the_window_is_never_a_sure_number():
    """Lymphocytes shifted up (another instrument's FSC gain): their upper end lies beyond the
    window, so the tail cut is clipped and not taken; the bound stays unsure with both reasons."""
    v = _lymphocyte_fsc(0.30, 600)
    placed = _place_lymphocytes_fsc_max(v)
    assert not placed.evidence.sure
    assert "clipped" in placed.evidence.reason and "not taken" in placed.evidence.fallback


def test_tail_cut_past_another_population_is_unsure():
    """A second population merging into the lymphocytes' upper side (a shoulder, not a resolved
    peak) widens what looks like their tail: a cut past it would count those cells as
    lymphocytes, so the tail cut is unsure. A clean population's own tail cut is sure."""
    from mrdflow.gating._bounds import _tail_value
    from mrdflow.gating._evidence import tail_evidence

    rng = np.random.default_rng(9)
    clean = rng.normal(0.20, 0.03, 5000)
    merged = np.concatenate([clean, rng.normal(0.27, 0.02, 2500)])
    for v, sure in ((clean, True), (merged, False)):
        t, _ = _tail_value(v, 4.0)
        ev = tail_evidence(v, t, (0.24, 0.40), clipped=False)
        assert ev.sure is sure, (ev, t)
    assert "merges into its upper side" in ev.reason

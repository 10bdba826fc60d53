"""Gating plots: one PNG per step of a really gated (simulated) tube, deterministic, no figures left."""
from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import numpy as np
import pytest

import mrdflow.demo._simulate as sim
from mrdflow.gating import TubeView, compensation_for, gate_tube, load_template
from mrdflow.io import read_fcs
from mrdflow.panels import load_panels, resolve_panel
from mrdflow.sample._plot_panels import density2d
from mrdflow.sample._plots import plot_file_name, plot_gating

REPO = Path(__file__).resolve().parents[2]
TINY_DESIGN = REPO / "config/test/design.yaml"
TINY_SAMPLES = REPO / "config/test/samples.tsv"
PANELS = REPO / "resources/panels"
GATING = REPO / "resources/gating"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
TRANSFORMS = {
    "fluorescence": {"type": "logicle", "t": 262144, "w": 0.5, "m": 4.5, "a": 0.0},
    "scatter": {"type": "linear", "t": 262144},
}
STEM = "PT08_BM_baseline_ngf1"


@pytest.fixture(scope="module")
def gated(tmp_path_factory):
    """A small NGF tube 1 (PT08 baseline BM, 20 000 events, a clog planted so the time QC
    excludes a segment), gated with the shipped template."""
    out = tmp_path_factory.mktemp("sim")
    design = sim.load_design(TINY_DESIGN)
    design["clog_files"] = {**(design.get("clog_files") or {}), STEM: {"start": 0.45, "length": 0.12}}
    row = next(r for r in sim.read_samples_tsv(TINY_SAMPLES) if Path(r["fcs"]).stem == STEM)
    sim.simulate_file(row, design, out, seed=596)
    d = read_fcs(out / row["fcs"])
    resolved = resolve_panel(load_panels(PANELS)["ngf_tube1"], d.pnn, d.pns)
    view = TubeView(d, resolved, compensation_for("fcs", d.metadata), TRANSFORMS)
    return gate_tube(load_template(GATING, "ngf_tube1"), view)


def _plot(g, outdir, **kw):
    return plot_gating(g, outdir, title="PT08_BM_baseline · ngf_tube1", **kw)


@pytest.fixture(scope="module")
def plotted(gated, tmp_path_factory):
    return _plot(gated, tmp_path_factory.mktemp("plots"))


def _some_steps(g, ids):
    return dataclasses.replace(g, steps=[s for s in g.steps if s.gate_id in ids])


def test_one_png_per_step_named_in_order(gated, plotted):
    ids = [s.gate_id for s in gated.steps]
    # ngf_tube1 has no boolean gates besides the time QC, so every step has a plot
    assert [p.name for p in plotted] == [f"{i:02d}_{gid}.png" for i, gid in enumerate(ids, 1)]
    assert sorted(plotted[0].parent.iterdir()) == sorted(plotted)  # no temporary files left behind
    for p in plotted:
        data = p.read_bytes()
        assert data[:8] == PNG_MAGIC, p
        assert len(data) > 15_000, p  # a rendered density plot, not an empty canvas
    # the planted clog gives a time-QC segment gate, drawn with its own plot
    assert any(re.fullmatch(r"\d\d_TimeOK_bad\d+\.png", p.name) for p in plotted)


def test_deterministic_bytes(gated, plotted, tmp_path):
    again = _plot(gated, tmp_path)
    assert [p.name for p in again] == [p.name for p in plotted]
    for pa, pb in zip(plotted, again):
        assert pa.read_bytes() == pb.read_bytes(), pa.name
        assert b"Software" not in pa.read_bytes()[:4096]  # no version / tool stamp


def test_a_plot_does_not_depend_on_the_plots_before_it(gated, plotted, tmp_path):
    """Figures are reused between the plots of one call (one per layout): every gate's plot drawn
    alone is byte-identical to the same plot drawn after the others (time-QC and boolean plots
    read other steps and are left out)."""
    full = {p.name.split("_", 1)[1]: p.read_bytes() for p in plotted}
    alone = [s for s in gated.steps if s.kind in ("rect", "polygon") and "Time" not in s.dims]
    assert len(alone) >= 5
    for step in alone:
        (path,) = _plot(_some_steps(gated, {step.gate_id}), tmp_path / step.gate_id)
        assert path.read_bytes() == full[f"{step.gate_id}.png"], step.gate_id


def test_subsample_is_seeded(gated, plotted, tmp_path):
    g = _some_steps(gated, {"Singlets", "Nucleated"})
    sub1 = _plot(g, tmp_path / "s1", max_events=2_000)
    sub2 = _plot(g, tmp_path / "s2", max_events=2_000)
    assert [p.read_bytes() for p in sub1] == [p.read_bytes() for p in sub2]
    full = {p.name.split("_", 1)[1]: p.read_bytes() for p in plotted}
    assert [p.name for p in sub1] == ["01_Singlets.png", "02_Nucleated.png"]  # NN: order in steps
    assert all(full[p.name.split("_", 1)[1]] != p.read_bytes() for p in sub1)  # fewer events: another picture


def test_no_open_figures_and_atomic_overwrite(gated, tmp_path):
    import matplotlib.pyplot as plt

    g = _some_steps(gated, {"Nucleated", "PC"})
    first = _plot(g, tmp_path)
    assert plt.get_fignums() == []
    first[0].write_bytes(b"stale")
    again = _plot(g, tmp_path)
    assert again == first
    assert again[0].read_bytes()[:8] == PNG_MAGIC
    assert sorted(tmp_path.iterdir()) == sorted(first)  # no .part files
    assert plt.get_fignums() == []


def test_density2d_matches_histogram2d():
    rng = np.random.default_rng(1)
    x = rng.uniform(-0.2, 1.2, 20_000).astype(np.float32)
    y = rng.normal(0.5, 0.3, 20_000).astype(np.float32)
    lim = (-0.05, 1.05)
    H = density2d(x, y, lim, lim, 64, 32)
    assert H.shape == (32, 64) and H.sum() == x.size  # out-of-range events piled in edge bins
    xc, yc = np.clip(x, -0.0499, 1.0499), np.clip(y, -0.0499, 1.0499)
    ref, _, _ = np.histogram2d(xc, yc, bins=(64, 32), range=(lim, lim))
    # equal up to values sitting exactly on a bin edge (float rounding)
    assert np.abs(H - ref.T).sum() <= 0.001 * x.size


def test_file_names():
    assert plot_file_name(3, "PC") == "03_PC.png"
    assert plot_file_name(7, "NK bright/x", 120) == "007_NK_bright_x.png"


def test_empty_parent_still_plots(gated, tmp_path):
    from mrdflow.gating import TubeGating

    class NoEvents(TubeGating):
        def mask(self, gate_id):
            return np.zeros(self.view.n, bool)

    g = NoEvents(**{f.name: getattr(gated, f.name) for f in dataclasses.fields(gated)})
    g.steps = [dataclasses.replace(s, count=0, parent_count=0) for s in gated.steps
               if s.gate_id in ("Nucleated", "PC")]
    paths = _plot(g, tmp_path)
    assert [p.name for p in paths] == ["01_Nucleated.png", "02_PC.png"]
    assert all(p.read_bytes()[:8] == PNG_MAGIC for p in paths)


def test_an_unsure_gate_says_so_on_its_plot():
    from mrdflow.gating import GateStep
    from mrdflow.sample._plot_panels import _headline, _rect_caption

    step = GateStep("PC", "Nucleated", "rect", ("CD38", "CD138"), bounds={"CD38": (0.8, None)},
                    how={"CD38.min": "valley 0.800 in [0.60, 0.80]"}, count=10)
    assert "UNSURE" not in _headline(step, 100) and not _rect_caption(step, ("CD38", "CD138"))[0].startswith("Review")
    step.review = "PC: CD38.min 0.800 on the edge of its search window [0.60, 0.80]"
    assert "UNSURE" in _headline(step, 100)
    assert _rect_caption(step, ("CD38", "CD138"))[0] == f"Review needed: {step.review}"

"""NK cells/µL from counting beads in the NK tube (panel pb_nk_beads: pb_nk plus beads on APC-A),
and NKG2A % without a count, with the reason, when the tube has no beads."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml

import mrdflow.demo._simulate as sim
from mrdflow.gating import gate_tube, load_template, open_tube
from mrdflow.io import read_fcs, write_fcs
from mrdflow.panels import load_panels
from mrdflow.sample import nk_metrics

REPO = Path(__file__).resolve().parents[2]
TRANSFORMS = yaml.safe_load((REPO / "config/test/config.yaml").read_text())["panels"]["pb_nk"]["transform"]
PANELS = load_panels(REPO / "resources/panels")
N_BEADS, BEADS_PER_TUBE, VOLUME = 3000, 50000.0, 50.0


def _with_beads(src: Path, dst: Path) -> None:
    """The simulated NK tube plus an APC-A channel: cells dim on it, counting beads bright (small,
    uniform scatter, spread over the acquisition)."""
    d = read_fcs(src)
    rng = np.random.default_rng(7)
    ev = np.asarray(d.channel_values, dtype=np.float32)
    cells_apc = rng.normal(150.0, 80.0, len(ev)).astype(np.float32)
    beads = np.empty((N_BEADS, ev.shape[1]), np.float32)
    for j, name in enumerate(d.pnn):
        col = ev[:, j]
        if name == "Time":
            beads[:, j] = rng.uniform(col.min(), col.max(), N_BEADS)
        elif name.startswith(("FSC", "SSC")):
            beads[:, j] = rng.normal(0.11 * 262144 if name.startswith("FSC") else 0.02 * 262144, 600.0, N_BEADS)
        else:
            beads[:, j] = rng.normal(3000.0, 300.0, N_BEADS)
    data = np.vstack([np.column_stack([ev, cells_apc]), np.column_stack([beads, rng.normal(150000, 8000, N_BEADS)])])
    t = list(d.pnn).index("Time")
    data = data[np.argsort(data[:, t], kind="stable")]
    pns = [*(d.pns or [None] * len(d.pnn)), "Beads"]
    meta = {k: v for k, v in d.metadata.items() if k.upper().startswith("$SPILL") or k.upper() in ("$CYT", "$DATE")}
    write_fcs(dst, data, [*d.pnn, "APC-A"], pns, metadata=meta)


@pytest.fixture(scope="module")
def tubes(tmp_path_factory):
    out = tmp_path_factory.mktemp("nk_count")
    sim.simulate_cohort(REPO / "config/test/samples.tsv", REPO / "config/test/design.yaml", out, seed=596,
                        only=["PT01_PB_baseline_nk"])
    plain = out / "PT01" / "PT01_PB_baseline_nk.fcs"
    beads = out / "beads.fcs"
    _with_beads(plain, beads)
    g0 = gate_tube(load_template(REPO / "resources/gating", "pb_nk"),
                   open_tube(plain, PANELS["pb_nk"], TRANSFORMS).view())
    g1 = gate_tube(load_template(REPO / "resources/gating", "pb_nk_beads"),
                   open_tube(beads, PANELS["pb_nk_beads"], TRANSFORMS).view())
    return g0, g1


def test_nk_cells_per_ul_from_the_beads(tubes):
    g0, g1 = tubes
    assert abs(g1.count("Beads") - N_BEADS) <= 0.01 * N_BEADS
    m = nk_metrics(g1, None, BEADS_PER_TUBE, VOLUME)
    assert m.bead_count == g1.count("Beads") and m.count_reason == ""
    assert m.cells_per_ul == pytest.approx(m.nk_count / m.bead_count * BEADS_PER_TUBE / VOLUME)
    assert m.cells_per_ul_ci95_low < m.cells_per_ul < m.cells_per_ul_ci95_high
    # the beads are out of the cells: the NK read-outs are the bead-free tube's
    plain = nk_metrics(g0)
    assert abs(m.nk_count - plain.nk_count) <= max(3, 0.01 * plain.nk_count)
    assert m.nkg2a_pct == pytest.approx(plain.nkg2a_pct, abs=0.5)
    assert abs(g1.count("Cells") - g0.count("Cells")) <= 0.005 * g0.count("Cells")


def test_no_count_says_why(tubes):
    g0, g1 = tubes
    plain = nk_metrics(g0, None, BEADS_PER_TUBE, VOLUME)
    assert plain.cells_per_ul is None and plain.bead_count is None
    assert "no counting beads" in plain.count_reason and "pb_nk" in plain.count_reason
    assert plain.nkg2a_pct is not None
    unsheeted = nk_metrics(g1)
    assert unsheeted.cells_per_ul is None and "not in the sample sheet" in unsheeted.count_reason

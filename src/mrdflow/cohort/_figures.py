"""Cohort figures for the trial report: swimmer plot, CAR-T kinetics, each patient's course over time,
NKG2A vs exposure, week-4 MRD.

Every figure function takes the cohort tables (:mod:`mrdflow.cohort`) and an output *stem*; it writes
``<stem>.png`` (200 dpi) and ``<stem>.svg`` and returns both paths. Figures are drawn on Agg
figures that pyplot never sees, written atomically, and carry no date or version text, so the same
tables give byte-identical files. SVG text stays text (``svg.fonttype = "none"``), so captions can
be searched and edited. :func:`write_cohort_figures` draws them all from the cohort TSV files (rule
``cohort_plots``).

Colours are fixed per category, whatever the data holds: best response by :data:`RESPONSE_COLORS`
(greens for sCR/CR, blue VGPR, light blue PR, greys MR/SD, red PD) and dose level by
:func:`dose_color` (Okabe–Ito colours for the usual dose ladder). Response is also written out
where it matters (bar ends, legends), so the figures do not rely on colour alone. Dose levels are
labelled by :func:`mrdflow.formatting.dose_label`, as in the tables.

Missing data never raises: rows without the value a figure needs are left out (and counted where it
matters); a figure with nothing to show says "no data".

One module per figure (``_fig_swimmer``, ``_fig_kinetics``, ``_fig_over_time``, ``_fig_nkg2a``,
``_fig_mrd``); what they share (style, colours, saving, legends) is in ``_plotkit``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pandas as pd

from mrdflow.cohort._fig_kinetics import kinetics_plot
from mrdflow.cohort._fig_mrd import mrd_plot
from mrdflow.cohort._fig_nkg2a import nkg2a_auc_plot
from mrdflow.cohort._fig_over_time import over_time_plot
from mrdflow.cohort._fig_swimmer import swimmer_plot
from mrdflow.cohort._outputs import COHORT_FIGURES, FigureFiles, FigureInputs
from mrdflow.cohort._plotkit import DOSE_COLORS, RESPONSE_COLORS, dose_color
from mrdflow.cohort._tables import read_tsv

__all__ = ["RESPONSE_COLORS", "DOSE_COLORS", "dose_color", "swimmer_plot", "kinetics_plot", "over_time_plot",
           "nkg2a_auc_plot", "mrd_plot", "nkg2a_auc_association", "write_cohort_figures"]


def nkg2a_auc_association(assoc: pd.DataFrame) -> dict | None:
    """The Spearman row of baseline NKG2A % vs CAR-T AUC0–28, for the figure caption."""
    hit = assoc[(assoc["x"] == "baseline_nkg2a_pct") & (assoc["y"] == "cart_auc_0_28") & (assoc["test"] == "spearman")]
    if hit.empty:
        return None
    r = hit.iloc[0]
    return {"rho": r["statistic"], "p_value": r["p_value"], "p_method": r["p_method"], "n": int(r["n"]),
            "ci_low": r["ci_low"], "ci_high": r["ci_high"]}


def _stems(out: FigureFiles) -> dict[str, Path]:
    """Figure stem -> the path stem its PNG and SVG are written to (``out`` names both for each of
    :data:`COHORT_FIGURES`, side by side)."""
    png = {Path(f).stem: Path(f) for f in out.png}
    svg = {Path(f).stem: Path(f) for f in out.svg}
    stems = {}
    for stem in COHORT_FIGURES:
        if stem not in png or svg.get(stem) != png[stem].with_suffix(".svg"):
            raise ValueError(f"cohort figure {stem!r}: expected {stem}.png and {stem}.svg side by side among the "
                             f"outputs, got png {sorted(map(str, png.values()))}, svg {sorted(map(str, svg.values()))}")
        stems[stem] = png[stem].with_suffix("")
    return stems


def write_cohort_figures(inputs: FigureInputs, out: FigureFiles, *, lloq: float | None = None) -> list[Path]:
    """Every cohort figure (:data:`COHORT_FIGURES`) as the PNG and SVG that ``out`` names, drawn from
    the cohort tables ``inputs`` names; ``lloq``: the CAR-T assay LLOQ (cells/µL) drawn on the kinetics."""
    patients, kin, mrd = read_tsv(inputs.patients), read_tsv(inputs.kinetics), read_tsv(inputs.mrd)
    nk = read_tsv(inputs.nk)
    assoc = nkg2a_auc_association(read_tsv(inputs.associations))
    draw: dict[str, Callable[[Path], list[Path]]] = {
        "swimmer": lambda stem: swimmer_plot(patients, mrd, stem),
        "kinetics": lambda stem: kinetics_plot(kin, patients, stem, lloq=lloq),
        "over_time": lambda stem: over_time_plot(patients, kin, nk, mrd, stem, lloq=lloq),
        "nkg2a_auc": lambda stem: nkg2a_auc_plot(patients, stem, assoc=assoc),
        "mrd": lambda stem: mrd_plot(mrd, patients, stem),
    }
    written: list[Path] = []
    for stem, path in _stems(out).items():
        written += draw[stem](path)
    return written

"""The cohort report: one self-contained HTML file (``results/report.html``).

Everything the reader needs is inside the file: the CSS is inline, the cohort figures are embedded
as base64 PNG data URIs, there is no JavaScript and no external URL. Only the per-sample gating
plots (hundreds of files) are linked, relative to the report's own folder, so they open offline
when the report stays next to ``samples/``.

The report shows numbers as the cohort tables give them (``results/cohort/*.tsv``); it never
recomputes statistics from raw data. It prints pseudonymous IDs only: of the FCS TEXT keywords only
the inventory's allow-listed ``keywords`` column appears, and absolute paths in any text are cut
to their file name. The same inputs give a byte-identical file (no clock, sorted listings).

The report reads exactly the files its rule names (:class:`mrdflow.cohort.ReportInputs`). Its parts:
``_report_data`` (the inputs, read once), ``_report_html`` (HTML and text pieces),
``_report_sections`` (the read-outs), ``_report_over_time`` (each patient's MRD and NK course),
``_report_audit`` (QC, gating plots, provenance) and ``_report_review`` (the FlowJo review: each
sample's state, the gates reviewers changed).
"""

from __future__ import annotations

import html
import importlib.metadata
from collections.abc import Mapping
from pathlib import Path

from mrdflow.atomic import atomic_open
from mrdflow.cohort._outputs import ReportInputs
from mrdflow.cohort._report_audit import SOFTWARE, _sec_gating, _sec_provenance, _sec_qc
from mrdflow.cohort._report_data import ReportData
from mrdflow.cohort._report_html import _CSS
from mrdflow.cohort._report_over_time import _sec_over_time
from mrdflow.cohort._report_review import _sec_flowjo_review
from mrdflow.cohort._report_sections import (
    FIGURES,
    _figure,
    _sec_associations,
    _sec_figures,
    _sec_kinetics,
    _sec_mrd,
    _sec_nk,
    _sec_response,
    _sec_summary,
    _sec_table1,
)
from mrdflow.formatting import finite_float

__all__ = ["FIGURES", "SECTIONS", "SOFTWARE", "build_report"]

#: Report sections in order: (id, heading).
SECTIONS = (
    ("summary", "Study summary"),
    ("table1", "Table 1. Patient characteristics"),
    ("response", "Response"),
    ("mrd", "Measurable residual disease (MRD)"),
    ("nk", "NK cells and NKG2A at baseline"),
    ("kinetics", "CAR-T kinetics"),
    ("over_time", "Over time"),
    ("associations", "Exploratory associations"),
    ("figures", "Figures"),
    ("qc", "Quality control and missing read-outs"),
    ("review", "Gate review in FlowJo"),
    ("gating", "Per-sample gating plots"),
    ("provenance", "Provenance"),
)

# ---------------------------------------------------------------------------------------------
# The report
# ---------------------------------------------------------------------------------------------

def _required_sensitivity(config: Mapping) -> float | None:
    mrd = config.get("mrd") if isinstance(config, Mapping) else None
    v = mrd.get("required_sensitivity") if isinstance(mrd, Mapping) else None
    return finite_float(v) if v is not None else 1e-5


def build_report(inputs: ReportInputs, out_html: str | Path, *, config: Mapping,
                 title: str = "mrdflow cohort report") -> Path:
    """Write the self-contained cohort report (see the module docstring) to ``out_html`` and return its path.

    ``inputs``: the files rule ``report`` names (cohort tables, figure PNGs, the inventory, the sample
    and clinical sheets, the samples' gating-plot folders); ``config``: the validated config, shown in
    the provenance. Missing tables or figures give a visible note, not an exception.
    """
    out_html = Path(out_html)
    inp = ReportData(inputs, out_html.parent)
    figs = {stem: _figure(inp, stem, t, cap, i + 1) for i, (stem, t, cap) in enumerate(FIGURES)}
    bodies = {
        "summary": _sec_summary(inp),
        "table1": _sec_table1(inp),
        "response": _sec_response(inp),
        "mrd": _sec_mrd(inp, _required_sensitivity(config)),
        "nk": _sec_nk(inp),
        "kinetics": _sec_kinetics(inp, figs["kinetics"]),
        "over_time": _sec_over_time(inp, figs["over_time"], _required_sensitivity(config)),
        "associations": _sec_associations(inp),
        "figures": _sec_figures(figs),
        "qc": _sec_qc(inp),
        "review": _sec_flowjo_review(inp),
        "gating": _sec_gating(inp, out_html.parent),
        "provenance": _sec_provenance(inp, config, [("Sample sheet", Path(inputs.samples)),
                                                     ("Clinical sheet", Path(inputs.clinical))]),
    }
    try:
        version = importlib.metadata.version("mrdflow")
    except importlib.metadata.PackageNotFoundError:
        version = "unknown"
    nav = "".join(f'<li><a href="#{sid}">{html.escape(head)}</a></li>' for sid, head in SECTIONS)
    parts = ["<!DOCTYPE html>", '<html lang="en">', "<head>", '<meta charset="utf-8">',
             '<meta name="viewport" content="width=device-width, initial-scale=1">',
             f"<title>{html.escape(title)}</title>", f"<style>\n{_CSS}\n</style>", "</head>", "<body>",
             f"<h1>{html.escape(title)}</h1>",
             '<p class="lead">Flow-cytometry MRD, NK/NKG2A and CAR-T kinetics read-outs of the cohort. '
             "Pseudonymous patient and sample IDs only.</p>",
             f"<nav><ol>{nav}</ol></nav>"]
    for sid, head in SECTIONS:
        parts.append(f'<section id="{sid}">\n<h2>{html.escape(head)}</h2>\n{bodies[sid]}\n</section>')
    parts += [f"<footer>Generated by mrdflow {html.escape(version)} from the tables in the results folder. "
              "Self-contained: no scripts, no external resources.</footer>", "</body>", "</html>", ""]
    with atomic_open(out_html, "w", encoding="utf-8", newline="\n") as fh:
        fh.write("\n".join(parts))
    return out_html

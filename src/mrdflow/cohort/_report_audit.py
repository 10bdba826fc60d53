"""The cohort report's audit sections (:mod:`mrdflow.cohort._report`): quality control and missing
read-outs, links to the per-sample gating plots, and provenance (software, sheets, configuration,
input FCS files with checksums)."""

from __future__ import annotations

import html
import importlib.metadata
import os
import platform
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from mrdflow.cohort._report_data import ReportData
from mrdflow.cohort._report_html import (
    Raw,
    _file_label,
    _fixed,
    _href,
    _not_available,
    _scrub,
    _sha256,
    _sorted,
    _status,
    _table,
    _text,
    _truthy,
)
from mrdflow.formatting import NA, finite_float, is_missing

#: Distributions whose versions the provenance lists (importlib.metadata names).
SOFTWARE = ("mrdflow", "numpy", "pandas", "flowkit", "snakemake", "scikit-learn", "dask", "matplotlib")

_QC_NAME = re.compile(r"qc|flag|removed|failed|hemodilution$", re.I)
_QC_SKIP = {"sample_id", "patient_id", "specimen", "visit", "day", "infusion", "status", "errors"}
#: Sample statuses with every tube analysed (``review``: read-outs on unsure gates, listed apart).
_NOT_FAILED = ("ok", "review")


def _sec_qc(inp: ReportData) -> str:
    out = []
    sm = inp["sample_metrics"]
    out.append("<h3>Failed and partial samples</h3>")
    if sm is None:
        out.append(_not_available(inp.label("sample_metrics")))
    else:
        sm = _sorted(sm, ["sample_id"])
        status = sm["status"].fillna(NA).astype(str) if "status" in sm.columns else None
        bad = sm[~status.isin(_NOT_FAILED)] if status is not None else sm.iloc[0:0]
        if bad.empty:
            out.append(f"<p>All {len(sm)} samples were analysed without errors.</p>")
        else:
            cols = [c for c in ("sample_id", "patient_id", "specimen", "visit", "day", "status", "errors")
                    if c in sm.columns]
            rows = [[_status(r.get(c)) if c == "status" else r.get(c) for c in cols] for r in bad.to_dict("records")]
            out.append(f"<p>{len(bad)} of {len(sm)} samples failed or were analysed in part (a tube could not be "
                       "read or gated; the other tubes went on).</p>")
            out.append(_table([c.replace("_", " ").capitalize() for c in cols], rows))
        qc_cols = [c for c in sm.columns if c not in _QC_SKIP and _QC_NAME.search(c)]
        flagged = sm[[any(_truthy(r[c]) for c in qc_cols) for r in sm.to_dict("records")]] if qc_cols else sm.iloc[0:0]
        shown = [c for c in qc_cols if any(_truthy(v) for v in flagged[c])] if not flagged.empty else []
        out.append("<h3>QC flags</h3>")
        if flagged.empty:
            out.append("<p>No sample carries a QC flag"
                       + (f" (columns checked: {html.escape(', '.join(qc_cols))})" if qc_cols else "") + ".</p>")
        else:
            rows = []
            for r in flagged.to_dict("records"):
                rows.append([r.get("sample_id"), r.get("status")]
                            + [_fixed(1)(r[c]) if "pct" in c and finite_float(r[c]) is not None else r[c]
                               for c in shown])
            out.append(f"<p>{len(flagged)} of {len(sm)} samples carry at least one QC flag (flow-rate/time "
                       "anomalies removed, failed tubes, hemodilution).</p>")
            out.append(_table(["Sample", "Status"] + shown, rows))
    out.append(_sec_review(inp))
    out.append("<h3>Missing read-outs per patient</h3>")
    p = inp["patients"]
    if p is None:
        out.append(_not_available(inp.label("patients")))
    elif "missing_readouts" not in p.columns:
        out.append("<p>The patient table has no missing_readouts column.</p>")
    else:
        p = _sorted(p, ["patient_id"])
        rows = []
        for r in p.to_dict("records"):
            v = r.get("missing_readouts")
            if _truthy(v):
                items = [s.strip() for s in str(v).split(" | ") if s.strip()]
                rows.append([r.get("patient_id"),
                             Raw("<ul>" + "".join(f"<li>{html.escape(_scrub(s))}</li>" for s in items) + "</ul>")])
        if rows:
            out.append("<p>Read-outs a patient lacks, and the sample behind each gap (a failed sample leaves "
                       "its read-out empty rather than stopping the cohort):</p>")
            out.append(_table(["Patient", "Missing read-outs (why)"], rows))
        else:
            out.append("<p>Every patient has every expected read-out.</p>")
    inv = inp["inventory"]
    if inv is not None and "status" in inv.columns:
        k = int((inv["status"].fillna(NA).astype(str) != "ok").sum())
        if k:
            out.append(f'<p>{k} input file(s) were missing or unreadable: see '
                       '<a href="#failed-files">Failed or unreadable files</a>.</p>')
    return "\n".join(out)


def _sec_review(inp: ReportData) -> str:
    """Every sample with read-outs on unsure gates, the read-outs and why, and a link to the gating
    plot of each unsure gate (``<sample>/plots/<tube>/<NN>_<gate>.png``)."""
    out = ["<h3>Read-outs to review (unsure gates)</h3>"]
    sm = inp["sample_metrics"]
    if sm is None:
        return "\n".join(out)
    if "review_needed" not in sm.columns:
        out.append("<p>The sample table has no review_needed column.</p>")
        return "\n".join(out)
    sm = _sorted(sm, ["sample_id"])
    flagged = [r for r in sm.to_dict("records") if _truthy(r.get("review_needed"))]
    if not flagged:
        out.append("<p>Every gate was placed surely: no read-out needs review.</p>")
        return "\n".join(out)
    folders = {_plots_sample(d): Path(d) for d in inp.inputs.plots}
    base = Path(os.path.abspath(inp.out_dir))
    rows = []
    for r in flagged:
        items = [s.strip() for s in str(r["review_needed"]).split(" | ") if s.strip()]
        plots = [_gate_plot_link(folders.get(_text(r.get("sample_id"))), tube_gate, base)
                 for tube_gate in _text(r.get("gate_review")).split(";") if tube_gate]
        rows.append([r.get("sample_id"), _status(r.get("status")),
                     Raw("<ul>" + "".join(f"<li>{html.escape(_scrub(s))}</li>" for s in items) + "</ul>"),
                     Raw("<br>".join(plots)) if plots else None])
    out.append(f"<p>{len(flagged)} of {len(sm)} samples have read-outs resting on a gate whose placement was "
               "unsure (a bound on its search window's edge, a cut through a dense population, or a population "
               "missing). Their values are reported and marked; check the gate's plot before using them.</p>")
    out.append(_table(["Sample", "Status", "Read-outs to review (tube, gate: why)", "Gating plot"], rows))
    return "\n".join(out)


def _plots_sample(folder) -> str:
    """The sample whose plots a folder holds: ``<sample>/plots``, or ``<sample>/reviewed/plots``
    for a sample gated with a reviewer's gates (mrdflow.review)."""
    from mrdflow.sample import REVIEWED_DIR

    parent = Path(folder).parent
    return parent.parent.name if parent.name == REVIEWED_DIR else parent.name


def _gate_plot_link(folder: Path | None, tube_gate: str, base: Path) -> str:
    """A link to the plot of ``tube:gate`` in a sample's plots folder (HTML), or the gate's name
    with 'no plot' when the folder has none."""
    from mrdflow.sample import plot_file_name

    tube, _, gate = tube_gate.rpartition(":")
    label = html.escape(f"{tube} {gate}")
    suffix = plot_file_name(0, gate)[2:]  # "_<gate>.png": the step number before it is the tube's own
    hits = sorted(p for p in (folder / tube).glob("*" + suffix) if p.name[:-len(suffix)].isdigit()) \
        if folder is not None and (folder / tube).is_dir() else []
    if not hits:
        return f'{label} <span class="na">(no plot)</span>'
    return f'<a href="{html.escape(_href(Path(os.path.abspath(hits[0])), base))}">{label}</a>'


def _sec_gating(inp: ReportData, out_dir: Path) -> str:
    """Links to every sample's gating plots: the report's ``plots`` inputs (a sample's plots folder,
    ``<sample>/plots``, is named after its sample) and the samples of the sample table."""
    folders = {_plots_sample(d): Path(d) for d in inp.inputs.plots}
    ids = set(folders)
    sm = inp["sample_metrics"]
    if sm is not None and "sample_id" in sm.columns:
        ids |= {str(s) for s in sm["sample_id"].dropna()}
    if not ids:
        return "<p>No samples found.</p>"
    base = Path(os.path.abspath(out_dir))  # not resolve(): a symlinked samples/ keeps its links
    blocks = []
    total = 0
    for sid in sorted(ids):
        pdir = folders.get(sid)
        pngs = (sorted(pdir.rglob("*.png"), key=lambda f: f.relative_to(pdir).as_posix())
                if pdir is not None and pdir.is_dir() else [])
        total += len(pngs)
        if not pngs:
            blocks.append(f'<details><summary>{html.escape(sid)} <span class="na">(no plots)</span></summary>'
                          "</details>")
            continue
        items = "".join(f'<li><a href="{html.escape(_href(Path(os.path.abspath(f)), base))}">'
                        f"{html.escape(f.relative_to(pdir).as_posix())}</a></li>" for f in pngs)
        blocks.append(f"<details><summary>{html.escape(sid)} ({len(pngs)} plots)</summary><ul>{items}</ul></details>")
    return (f'<p class="note">{total} gating plots of {len(ids)} samples, linked (not embedded) relative to this '
            "report: keep the report next to the <code>samples/</code> folder to open them offline.</p>\n"
            + '<div class="gating">' + "\n".join(blocks) + "</div>")


def _plain(obj: Any) -> Any:
    """The config as plain YAML-able data (absolute paths cut to their file name)."""
    if isinstance(obj, Mapping):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    if isinstance(obj, (bool, int, float)) or obj is None:
        return obj
    return _scrub(str(obj))


def _versions() -> list[tuple[str, str]]:
    rows = [("python", platform.python_version())]
    for name in SOFTWARE:
        try:
            rows.append((name, importlib.metadata.version(name)))
        except importlib.metadata.PackageNotFoundError:
            rows.append((name, "not installed"))
    return rows


def _sec_provenance(inp: ReportData, config: Mapping, sheets: Sequence[tuple[str, Path]]) -> str:
    out = ["<h3>Software</h3>", _table(["Package", "Version"], _versions())]
    out.append("<h3>Sample and clinical sheets</h3>")
    rows = []
    for what, path in sheets:
        p = Path(path)
        rows.append([what, p.name, Raw(f'<span class="mono">{_sha256(p)}</span>') if p.is_file() else "file not found"])
    out.append(_table(["Sheet", "File", "SHA-256"], rows))
    out.append("<h3>Configuration</h3>")
    out.append("<pre>" + html.escape(yaml.safe_dump(_plain(config), sort_keys=True, allow_unicode=True,
                                                      default_flow_style=None, width=100)) + "</pre>")
    inv = inp["inventory"]
    out.append("<h3>Input FCS files</h3>")
    if inv is None:
        out.append(_not_available(inp.label("inventory")))
    else:
        inv = _sorted(inv, ["sample_id", "tube", "path"])
        recs = inv.to_dict("records")
        for r in recs:
            r["file"] = _file_label(_text(r.get("path"))) if not is_missing(r.get("path")) else None
        out.append('<h4 id="failed-files">Failed or unreadable files</h4>')
        bad = [r for r in recs if _text(r.get("status")) != "ok"] if "status" in inv.columns else []
        if not bad:
            out.append("<p>None: every file of the sample sheet was found and read.</p>")
        else:
            out.append(_table(["Sample", "Tube", "File (in data folder)", "Status", "Error"],
                              [[r.get("sample_id"), r.get("tube"), r["file"], _status(r.get("status")), r.get("error")]
                               for r in bad]))
        spec = [c for c in ("sample_id", "tube", "file", "size_bytes", "events", "fcs_version", "acquisition_date",
                            "status", "sha256") if c == "file" or c in inv.columns]
        heads = {"sample_id": "Sample", "tube": "Tube", "file": "File (in data folder)", "size_bytes": "Bytes",
                 "events": "Events", "fcs_version": "FCS", "acquisition_date": "Acquired", "status": "Status",
                 "sha256": "SHA-256"}
        rows = []
        for r in recs:
            row = [_status(r.get(c)) if c == "status" else r.get(c) for c in spec]
            if "sha256" in spec and _truthy(r.get("sha256")):
                row[spec.index("sha256")] = Raw(f'<span class="sha">{html.escape(_text(r.get("sha256")))}</span>')
            rows.append(row)
        out.append(f"<h4>Checksums ({len(recs)} files)</h4>")
        out.append(_table([heads[c] for c in spec], rows, cls="fcs",
                          num=[i for i, c in enumerate(spec) if c in ("size_bytes", "events")]))
        if "keywords" in inv.columns or "cytometer" in inv.columns:
            rows = [[r["file"], r.get("cytometer"),
                     Raw(f'<span class="mono">{html.escape(_text(r.get("keywords")))}</span>')
                     if _truthy(r.get("keywords")) else None] for r in recs]
            out.append("<details><summary>Allow-listed FCS TEXT keywords per file</summary>"
                       + _table(["File", "Cytometer", "Keywords (allow-list in config inventory.keywords)"], rows)
                       + "</details>")
    return "\n".join(out)

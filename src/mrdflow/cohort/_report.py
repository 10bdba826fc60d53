"""The cohort report: one self-contained HTML file (``results/report.html``).

Everything the reader needs is inside the file: the CSS is inline, the cohort figures are embedded
as base64 PNG data URIs, there is no JavaScript and no external URL. Only the per-sample gating
plots (hundreds of files) are linked, relative to the report's own folder, so they open offline
when the report stays next to ``samples/``.

The report shows numbers as the cohort tables give them (``results/cohort/*.tsv``); it never
recomputes statistics from raw data. It prints pseudonymous IDs only: of the FCS TEXT keywords only
the inventory's allow-listed ``keywords`` column appears, and absolute paths in any text are cut
to their file name. The same inputs give a byte-identical file (no clock, sorted listings).
"""

from __future__ import annotations

import base64
import hashlib
import html
import importlib.metadata
import math
import os
import platform
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import quote

import numpy as np
import pandas as pd
import yaml

from mrdflow.atomic import atomic_open
from mrdflow.cohort._tables import dose_label, read_tsv, table1_html

__all__ = ["FIGURES", "SECTIONS", "SOFTWARE", "build_report"]

#: Report sections in order: (id, heading).
SECTIONS = (
    ("summary", "Study summary"),
    ("table1", "Table 1. Patient characteristics"),
    ("response", "Response"),
    ("mrd", "Measurable residual disease (MRD)"),
    ("nk", "NK cells and NKG2A at baseline"),
    ("kinetics", "CAR-T kinetics"),
    ("associations", "Exploratory associations"),
    ("figures", "Figures"),
    ("qc", "Quality control and missing read-outs"),
    ("gating", "Per-sample gating plots"),
    ("provenance", "Provenance"),
)

#: Distributions whose versions the provenance lists (importlib.metadata names).
SOFTWARE = ("mrdflow", "numpy", "pandas", "flowkit", "snakemake", "scikit-learn", "dask", "matplotlib")

#: Cohort figures: (file stem, title, caption).
FIGURES = (
    ("swimmer", "Follow-up and response by patient",
     "One bar per patient over follow-up (months since the first CAR-T infusion), longest on top, coloured by "
     "best response. Markers show marrow MRD results after infusion, a second infusion and progression; an "
     "arrow marks a response that is still ongoing."),
    ("kinetics", "CAR-T expansion and persistence in blood",
     "CAR-T cells per µL (log scale) against days since each infusion, one line per patient and infusion "
     "(second infusion dashed), coloured by dose level; bars are 95% confidence intervals. Samples with no "
     "CAR-T cells are open triangles below the LLOQ (dotted line). Cmax, Tmax, AUC0–28 and persistence per "
     "patient are in the table above."),
    ("nkg2a_auc", "Baseline NKG2A on NK cells versus CAR-T exposure",
     "Baseline NKG2A+ % of NK cells (blood) against CAR-T AUC0–28 after the first infusion, one labelled point "
     "per patient coloured by best response, with the Spearman correlation, its confidence interval, p and n. "
     "Exploratory: with so few patients one point can drive the correlation."),
    ("mrd", "Week-4 bone-marrow MRD",
     "Week-4 marrow MRD per patient (log scale): a filled circle is a positive call at its MRD level, a "
     "downward triangle a negative call at the sensitivity reached, a grey cross a sample that is not "
     "evaluable (reason in short). The dashed line is the 10^-5 threshold (IMWG); colour is best response."),
)

_CSS = """
body{font-family:-apple-system,"Segoe UI",Helvetica,Arial,sans-serif;font-size:14px;line-height:1.45;color:#222;
max-width:1100px;margin:0 auto;padding:16px 24px 48px;background:#fff}
h1{font-size:24px;margin:8px 0 4px}h2{font-size:19px;border-bottom:2px solid #345;padding-bottom:3px;margin-top:32px}
h3{font-size:15px;margin:18px 0 6px}p.lead{color:#555;margin-top:0}.note{color:#555;font-size:13px}
nav ol{columns:3;font-size:13px;margin:8px 0}nav a,a{color:#1a4f8b}
table{border-collapse:collapse;margin:8px 0 14px;font-size:12.5px}
th,td{border:1px solid #aaa;padding:3px 7px;text-align:left;vertical-align:top}
th{background:#e9edf2;font-weight:600}tbody tr:nth-child(even){background:#f7f8fa}
td.num{text-align:right;font-variant-numeric:tabular-nums}.na{color:#999}
table.table1 caption{text-align:left;font-weight:600;padding-bottom:4px}
table.table1 tr.head td{font-weight:600;background:#f0f2f5}table.table1 td.cat{padding-left:22px}
.src{color:#777;font-size:11px}
table.kv th{width:320px}.status-failed{color:#b00020;font-weight:600}.status-partial{color:#a15c00;font-weight:600}
.mrd-positive{color:#b00020;font-weight:600}.mrd-negative{color:#1b6e2e;font-weight:600}
figure{margin:12px 0 22px;page-break-inside:avoid}figure img{max-width:100%;height:auto;border:1px solid #ddd}
figcaption{font-size:13px;color:#333;margin-top:4px}
.missing{border:1px dashed #b00020;color:#b00020;padding:10px;margin:10px 0}
pre{background:#f5f5f5;border:1px solid #ddd;padding:8px;font-size:12px;overflow-x:auto;white-space:pre-wrap}
details{margin:2px 0;break-inside:avoid}summary{cursor:pointer}
details ul{font-size:12px;margin:4px 0 8px;padding-left:20px}
div.gating{columns:3 280px;column-gap:24px}
code,.mono{font-family:Menlo,Consolas,monospace;font-size:11.5px;word-break:break-all}
.sha{font-family:Menlo,Consolas,monospace;font-size:9.5px;white-space:nowrap}
table.fcs{font-size:11px}table.fcs td{white-space:nowrap;padding:2px 5px}h4{font-size:14px;margin:14px 0 4px}
footer{margin-top:40px;color:#777;font-size:12px;border-top:1px solid #ccc;padding-top:6px}
@media print{body{max-width:none;padding:0;font-size:11px}nav{display:none}h2{page-break-after:avoid}}
""".strip()

_NA = '<span class="na">NA</span>'


class Raw(str):
    """Text that is already HTML (escaped by the code that made it)."""


# ---------------------------------------------------------------------------------------------
# Text and numbers
# ---------------------------------------------------------------------------------------------

# An absolute POSIX/home path (at the start or after a space, quote, bracket, '=', ':' or ',') or a
# Windows drive path; the last component is kept.
_POSIX_PATH = re.compile(r"""(?<![^\s"'(\[=:,;])~?/(?:[^\s/"'<>|;,()\[\]]+/)+([^\s/"'<>|;,()\[\]]+)""")
_WIN_PATH = re.compile(r"""\b[A-Za-z]:[\\/](?:[^\s\\/"'<>|;,()]+[\\/])*([^\s\\/"'<>|;,()]+)""")


def _scrub(text: str) -> str:
    """Absolute paths in ``text`` cut to their file name (site folders may carry names)."""
    return _WIN_PATH.sub(r"\1", _POSIX_PATH.sub(r"\1", text))


def _file_label(path: str) -> str:
    """A file path as the report may show it: relative paths as given, absolute ones by name."""
    if path.startswith(("/", "~", "\\")) or re.match(r"[A-Za-z]:[\\/]", path):
        return re.split(r"[\\/]", path)[-1]
    return _scrub(path)


def _isna(v: Any) -> bool:
    if v is None:
        return True
    try:
        return bool(pd.isna(v))
    except (TypeError, ValueError):
        return False


def _float(v: Any) -> float | None:
    if _isna(v) or isinstance(v, (bool, np.bool_)):
        return None
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def _text(v: Any) -> str:
    """A cell value as plain text (before escaping): integral floats without '.0', booleans as
    yes/no, other floats to 4 significant digits, absolute paths cut to their file name."""
    if _isna(v):
        return "NA"
    if isinstance(v, (bool, np.bool_)):
        return "yes" if v else "no"
    if isinstance(v, (int, np.integer)):
        return str(int(v))
    f = _float(v)
    if f is not None and not isinstance(v, str):
        return str(int(f)) if f == round(f) and abs(f) < 1e15 else f"{f:.4g}"
    return _scrub(str(v))


def _h(v: Any) -> str:
    """A value as HTML: Raw as is, NA greyed, anything else escaped text."""
    if isinstance(v, Raw):
        return str(v)
    if _isna(v):
        return _NA
    return html.escape(_text(v))


def _fixed(dp: int, suffix: str = "") -> Callable[[Any], Any]:
    def fmt(v: Any) -> Any:
        f = _float(v)
        return None if f is None else f"{f:.{dp}f}{suffix}"
    return fmt


def _sci(v: Any) -> Any:
    """8.7e-06 style; an exact zero as 0."""
    f = _float(v)
    if f is None:
        return None
    return "0" if f == 0 else f"{f:.1e}"


def _int(v: Any) -> Any:
    f = _float(v)
    return None if f is None else f"{int(round(f)):d}"


def _p(v: Any) -> str:
    f = _float(v)
    if f is None:
        return "NA"
    return f"{f:.1e}" if f < 0.001 else f"{f:.3f}"


def _power_label(x: float) -> str:
    e = math.log10(x) if x > 0 else float("nan")
    return f"10^{int(round(e))}" if math.isfinite(e) and abs(e - round(e)) < 1e-9 else f"{x:.0e}"


# ---------------------------------------------------------------------------------------------
# HTML pieces
# ---------------------------------------------------------------------------------------------

def _table(headers: Sequence[str], rows: Iterable[Sequence[Any]], *, num: Sequence[int] = (), cls: str = "") -> str:
    """An HTML table; ``num``: column indices set right-aligned."""
    numset = set(num)
    attr = f' class="{html.escape(cls)}"' if cls else ""
    out = [f"<table{attr}><thead><tr>"
           + "".join(f"<th>{html.escape(h)}</th>" for h in headers) + "</tr></thead><tbody>"]
    n = 0
    for r in rows:
        n += 1
        out.append("<tr>" + "".join(f'<td class="num">{_h(v)}</td>' if i in numset else f"<td>{_h(v)}</td>"
                                    for i, v in enumerate(r)) + "</tr>")
    if not n:
        out.append(f'<tr><td colspan="{len(headers)}" class="na">no rows</td></tr>')
    out.append("</tbody></table>")
    return "\n".join(out)


def _missing(what: str) -> str:
    return f'<div class="missing">{html.escape(what)}</div>'


def _col(df: pd.DataFrame, row: Mapping, name: str, fmt: Callable[[Any], Any] | None = None) -> Any:
    if name not in df.columns:
        return None
    v = row.get(name)
    return fmt(v) if fmt is not None and not _isna(v) else v


def _sorted(df: pd.DataFrame, keys: Sequence[str]) -> pd.DataFrame:
    keys = [k for k in keys if k in df.columns]
    return df.sort_values(keys, kind="stable", na_position="last").reset_index(drop=True) if keys else df


def _status(v: Any, prefix: str = "status") -> Raw | Any:
    if _isna(v):
        return v
    s = _text(v)
    return Raw(f'<span class="{prefix}-{html.escape(re.sub(r"[^a-z_]", "", s.lower()))}">'
               f'{html.escape(s.replace("_", " "))}</span>')


# ---------------------------------------------------------------------------------------------
# Inputs
# ---------------------------------------------------------------------------------------------

class _Inputs:
    """The cohort tables (None where a file is missing), read once."""

    NAMES = ("patients", "table1", "response_summary", "associations", "mrd", "kinetics", "sample_metrics")

    def __init__(self, results_dir: Path, inventory_tsv: Path):
        self.results_dir = results_dir
        self.missing: list[str] = []
        self.tables: dict[str, pd.DataFrame | None] = {}
        for name in self.NAMES:
            self.tables[name] = self._read(results_dir / "cohort" / f"{name}.tsv", f"cohort/{name}.tsv")
        self.tables["inventory"] = self._read(inventory_tsv, Path(inventory_tsv).name)

    def _read(self, path: Path, label: str) -> pd.DataFrame | None:
        if not Path(path).is_file():
            self.missing.append(label)
            return None
        return read_tsv(path)

    def __getitem__(self, name: str) -> pd.DataFrame | None:
        return self.tables[name]


def _not_available(label: str) -> str:
    return _missing(f"Not available: {label} was not found.")


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


# ---------------------------------------------------------------------------------------------
# Sections
# ---------------------------------------------------------------------------------------------

def _overall(resp: pd.DataFrame | None) -> dict:
    if resp is None or resp.empty:
        return {}
    if "group_by" in resp.columns:
        hit = resp[resp["group_by"] == "overall"]
        if not hit.empty:
            return hit.iloc[0].to_dict()
    return resp.iloc[0].to_dict()


def _table1_value(t1: pd.DataFrame | None, needle: str) -> Any:
    if t1 is None or "characteristic" not in t1.columns:
        return None
    hit = t1[t1["characteristic"].astype(str).str.lower().str.contains(needle, regex=False)]
    return hit.iloc[0]["value"] if not hit.empty and "value" in hit.columns else None


def _nkg2a_auc(assoc: pd.DataFrame | None) -> dict | None:
    if assoc is None or not {"x", "y", "test"} <= set(assoc.columns):
        return None
    hit = assoc[(assoc["x"] == "baseline_nkg2a_pct") & (assoc["y"] == "cart_auc_0_28")]
    return hit.iloc[0].to_dict() if not hit.empty else None


def _sec_summary(inp: _Inputs) -> str:
    o = _overall(inp["response_summary"])
    t1 = inp["table1"]
    rows: list[tuple[str, Any]] = []
    rows.append(("Patients", o.get("n") if o else (len(inp["patients"]) if inp["patients"] is not None else None)))
    rows.append(("Overall response rate (≥ PR)", o.get("orr")))
    rows.append(("Complete response rate (CR + sCR)", o.get("cr_rate")))
    if o.get("vgpr_or_better_n") is not None and not _isna(o.get("vgpr_or_better_n")):
        pct = _float(o.get("vgpr_or_better_pct"))
        rows.append(("VGPR or better", f"{_text(o['vgpr_or_better_n'])}/{_text(o.get('n'))}"
                     + (f" ({pct:.1f}%)" if pct is not None else "")))
    mrd = o.get("mrd_negative")
    if not _isna(mrd) and not _isna(o.get("mrd_evaluable_n")):
        mrd = f"{_text(mrd)} of {_text(o['mrd_evaluable_n'])} evaluable"
    rows.append(("Week-4 marrow MRD-negative (among evaluable)", mrd))
    rows.append(("Baseline marrow plasma cells, % of nucleated, median (range)", _table1_value(t1, "plasma cells")))
    rows.append(("Baseline NKG2A+ % of NK cells, median (range)", _table1_value(t1, "nkg2a")))
    a = _nkg2a_auc(inp["associations"])
    if a is not None:
        stat = _float(a.get("statistic"))
        rows.append(("Baseline NKG2A % vs CAR-T AUC0–28 (exploratory)",
                     f"{'statistic' if _isna(a.get('statistic_name')) else _text(a.get('statistic_name'))} = "
                     + (f"{stat:.2f}" if stat is not None else "NA")
                     + f", p = {_p(a.get('p_value'))} (n = {_text(a.get('n'))})"))
    sm = inp["sample_metrics"]
    if sm is not None and "status" in sm.columns:
        counts = sm["status"].fillna("NA").astype(str).value_counts()
        detail = ", ".join(f"{k} {int(counts[k])}" for k in sorted(counts.index))
        rows.append(("Samples analysed", f"{len(sm)} ({detail})"))
    inv = inp["inventory"]
    if inv is not None and "status" in inv.columns:
        bad = int((inv["status"].fillna("NA").astype(str) != "ok").sum())
        rows.append(("Input FCS files", f"{len(inv)} ({bad} missing, unreadable or not matching the panel)"))
    body = "\n".join(f"<tr><th>{html.escape(k)}</th><td>{_h(v)}</td></tr>" for k, v in rows)
    out = [f'<table class="kv"><tbody>\n{body}\n</tbody></table>',
           '<p class="note">All numbers are taken from the cohort tables (results/cohort/*.tsv). Response '
           "rates are of all patients; the MRD-negative rate is of patients with an evaluable week-4 "
           "marrow. The cohort is small: read every rate with its denominator.</p>"]
    if inp.missing:
        out.append(_missing("Input tables not found: " + ", ".join(sorted(inp.missing))))
    return "\n".join(out)


def _sec_table1(inp: _Inputs) -> str:
    t1 = inp["table1"]
    if t1 is None:
        return _not_available("cohort/table1.tsv")
    return table1_html(t1) + ('\n<p class="note">Median (range) for continuous variables, n (%) of all patients '
                              "for categories; rows marked (flow) are measured from the FCS files.</p>")


_RESPONSE_COLS = (
    ("group_by", "Grouped by", None), ("group", "Group", None), ("n", "n", None), ("orr", "ORR (≥ PR)", None),
    ("cr_rate", "CR rate", None), ("vgpr_or_better_n", "≥ VGPR, n", None),
    ("mrd_negative", "MRD-negative / evaluable", None), ("mrd_evaluable_n", "MRD evaluable, n", None),
    ("mrd_not_evaluable_n", "MRD not evaluable, n", None),
)
_RESPONSES = ("sCR", "CR", "VGPR", "PR", "MR", "SD", "PD")


def _sec_response(inp: _Inputs) -> str:
    out = []
    resp = inp["response_summary"]
    if resp is None:
        out.append(_not_available("cohort/response_summary.tsv"))
    else:
        cols = [c for c in _RESPONSE_COLS if c[0] in resp.columns]
        cols += [(f"n_{r}", r, None) for r in _RESPONSES if f"n_{r}" in resp.columns]
        rows = [[r.get(c) for c, _, _ in cols] for r in resp.to_dict("records")]
        out.append("<h3>Response summary</h3>")
        out.append(_table([h for _, h, _ in cols], rows, num=[i for i, (c, _, _) in enumerate(cols)
                                                              if c == "n" or c.endswith("_n") or c.startswith("n_")]))
        out.append('<p class="note">ORR: best response PR or better. CR rate: CR or sCR. MRD: week-4 marrow; '
                   "not-evaluable and missing calls are left out of the denominator.</p>")
    p = inp["patients"]
    if p is None:
        out.append(_not_available("cohort/patients.tsv"))
        return "\n".join(out)
    p = _sorted(p, ["patient_id"])
    spec = [("patient_id", "Patient", None), ("age", "Age", _int), ("sex", "Sex", None), ("ig_type", "Ig type", None),
            ("light_chain", "Light chain", None), ("riss", "R-ISS", None), ("lymphodepletion", "Lymphodepletion", None),
            ("dose_level", "CAR-T dose (cells)", None), ("best_response", "Best response", None),
            ("follow_up_months", "Follow-up (months)", _fixed(1)),
            ("baseline_pc_pct", "Baseline PC % of nucleated", _fixed(2)),
            ("baseline_aberrant_pc_pct", "Baseline aberrant PC %", _fixed(2)),
            ("w4_mrd_status", "Week-4 MRD", None)]
    spec = [s for s in spec if s[0] in p.columns]
    rows = []
    for r in p.to_dict("records"):
        rows.append([_status(r.get(c), "mrd") if c == "w4_mrd_status" else _col(p, r, c, f) for c, _, f in spec])
    out.append("<h3>Per patient</h3>")
    out.append(_table([h for _, h, _ in spec], rows, num=[i for i, s in enumerate(spec) if s[2] is not None]))
    return "\n".join(out)


def _sensitivity(v: Any, required: float | None) -> Any:
    f = _float(v)
    if f is None:
        return None
    s = f"{f:.1e}"
    if required:
        reached = f <= required * (1 + 1e-9)
        s += f" ({_power_label(required)} {'reached' if reached else 'not reached'})"
    return s


def _sec_mrd(inp: _Inputs, required: float | None) -> str:
    m = inp["mrd"]
    if m is None:
        return _not_available("cohort/mrd.tsv")
    m = _sorted(m, ["patient_id", "infusion", "day", "sample_id"])
    spec = [("patient_id", "Patient"), ("sample_id", "Sample"), ("visit", "Visit"), ("day", "Day"),
            ("mrd_status", "Status"), ("mrd_level", "MRD level (fraction)"), ("sensitivity", "Sensitivity"),
            ("n_nucleated", "Nucleated cells"), ("n_aberrant_pc", "Aberrant PCs"), ("hemodilution", "Hemodilution"),
            ("pc_pct", "PC % of nucleated"), ("reason", "Reason")]
    spec = [s for s in spec if s[0] in m.columns]
    fmts: dict[str, Callable[[Any], Any]] = {"mrd_level": _sci, "sensitivity": lambda v: _sensitivity(v, required),
                                             "n_nucleated": _int, "n_aberrant_pc": _int, "pc_pct": _fixed(2)}
    rows = []
    for r in m.to_dict("records"):
        row = [_status(r.get(c), "mrd") if c == "mrd_status" else _col(m, r, c, fmts.get(c)) for c, _ in spec]
        if "mrd_level" in m.columns and _isna(r.get("mrd_level")) and r.get("mrd_status") == "negative":
            row[[c for c, _ in spec].index("mrd_level")] = Raw('<span class="na">&lt; LOD</span>')
        rows.append(row)
    req = f" (required: {_power_label(required)}, i.e. enough nucleated cells to see the LOD count of " \
          "aberrant events at that level)" if required else ""
    numeric = ("day", "mrd_level", "n_nucleated", "n_aberrant_pc", "pc_pct")
    return (_table([h for _, h in spec], rows, num=[i for i, (c, _) in enumerate(spec) if c in numeric])
            + f'\n<p class="note">MRD level: aberrant plasma cells / nucleated cells (both NGF tubes pooled). '
              f"Sensitivity: the lowest level the sample could detect{html.escape(req)}. A sample that does not "
              "reach it, or is hemodiluted, is not evaluable; the reason column says why.</p>")


def _sec_nk(inp: _Inputs) -> str:
    p = inp["patients"]
    if p is None:
        return _not_available("cohort/patients.tsv")
    p = _sorted(p, ["patient_id"])
    spec = [("patient_id", "Patient", None), ("baseline_nk_pct_lymph", "NK % of lymphocytes", _fixed(2)),
            ("baseline_nk_bright_pct", "CD56bright % of NK", _fixed(2)),
            ("baseline_nkg2a_pct", "NKG2A+ % of NK", _fixed(2)),
            ("baseline_nkg2a_pct_bright", "NKG2A+ % of CD56bright", _fixed(2)),
            ("baseline_nkg2a_pct_dim", "NKG2A+ % of CD56dim", _fixed(2)),
            ("baseline_nkg2a_median", "NKG2A median (channel units)", _fixed(1)),
            ("baseline_nkg2a_threshold_source", "NKG2A threshold from", None)]
    spec = [s for s in spec if s[0] in p.columns]
    rows = [[_col(p, r, c, f) for c, _, f in spec] for r in p.to_dict("records")]
    return (_table([h for _, h, _ in spec], rows, num=[i for i, s in enumerate(spec) if s[2] is not None])
            + '\n<p class="note">Baseline peripheral blood (NK tube). The NKG2A+ threshold comes from the '
              "patient's FMO tube where there is one, otherwise from the stained tube's own distribution "
              "(threshold source).</p>")


def _infusions(p: pd.DataFrame) -> list[tuple[int, str]]:
    out = []
    for c in p.columns:
        m = re.fullmatch(r"cart_cmax(?:_i(\d+))?", c)
        if m:
            k = int(m.group(1) or 1)
            out.append((k, "" if k == 1 else f"_i{k}"))
    return sorted(out)


def _figure(results_dir: Path, stem: str, title: str, caption: str, number: int) -> str:
    path = results_dir / "cohort" / "plots" / f"{stem}.png"
    head = f"Figure {number}. {title}."
    if not path.is_file():
        return (f'<figure id="fig-{stem}">' + _missing(f"{head} Figure not available: cohort/plots/{stem}.png "
                                                        "was not found.") + "</figure>")
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return (f'<figure id="fig-{stem}"><img alt="{html.escape(title)}" src="data:image/png;base64,{data}">'
            f"<figcaption><b>{html.escape(head)}</b> {html.escape(caption)}</figcaption></figure>")


def _dose(cells: Any) -> Any:
    f = _float(cells)
    return dose_label(f) if f is not None and f > 0 else None


def _sec_kinetics(inp: _Inputs, fig_html: str) -> str:
    out = []
    p = inp["patients"]
    if p is None:
        out.append(_not_available("cohort/patients.tsv"))
    else:
        p = _sorted(p, ["patient_id"])
        infs = _infusions(p)
        spec = [("cart_cmax", "Cmax (cells/µL)", _fixed(1)), ("cart_tmax_day", "Tmax (day)", _int),
                ("cart_auc_0_28", "AUC0–28 (cells/µL × day)", _fixed(0)),
                ("cart_persistence_day", "Persistence (last day ≥ LLOQ)", _int),
                ("cart_car_pct_cd3_peak", "CAR+ % of CD3 at peak", _fixed(1)),
                ("cart_n_samples", "Samples", _int)]
        rows = []
        for r in p.to_dict("records"):
            for k, sfx in infs:
                vals = [_col(p, r, c + sfx, f) for c, _, f in spec]
                if k > 1 and all(_isna(v) for v in vals):
                    continue
                dose = r.get("dose_level") if k == 1 else _dose(r.get(f"infusion{k}_dose_cells"))
                rows.append([r.get("patient_id"), k, dose, *vals])
        headers = ["Patient", "Infusion", "Dose (cells)"] + [h for _, h, _ in spec]
        out.append(_table(headers, rows, num=list(range(3, len(headers))) + [1]))
        out.append('<p class="note">Per patient and infusion, from blood CAR-T counts (bead-based cells/µL). '
                   "AUC0–28 by the trapezoid rule over days 0–28; persistence is the last day at or above the "
                   "assay LLOQ. A second infusion has its own row, with its own dose.</p>")
    out.append(fig_html)
    kin = inp["kinetics"]
    if kin is None:
        out.append(_not_available("cohort/kinetics.tsv"))
    else:
        kin = _sorted(kin, ["patient_id", "infusion", "day", "sample_id"])
        rows = []
        for r in kin.to_dict("records"):
            lo, hi = _float(r.get("cells_per_ul_ci95_low")), _float(r.get("cells_per_ul_ci95_high"))
            ci = f"{lo:.1f}–{hi:.1f}" if lo is not None and hi is not None else None
            rows.append([r.get("patient_id"), r.get("infusion"), r.get("day"), r.get("sample_id"),
                         _col(kin, r, "cells_per_ul", _fixed(1)), ci, _col(kin, r, "car_pct_cd3", _fixed(1))])
        out.append(f"<details><summary>Every CAR-T sample ({len(rows)} rows)</summary>"
                   + _table(["Patient", "Infusion", "Day", "Sample", "CAR-T cells/µL", "95% CI (Poisson)",
                             "CAR+ % of CD3"], rows, num=[1, 2, 4, 6]) + "</details>")
    return "\n".join(out)


def _sec_associations(inp: _Inputs) -> str:
    a = inp["associations"]
    head = ('<p class="note"><b>Exploratory.</b> The cohort is tiny, so these associations describe the data '
            "and test nothing: they were not powered, are not corrected for multiple comparisons, and every "
            "p-value is shown with the n it rests on. Effects come with their confidence interval.</p>")
    if a is None:
        return head + _not_available("cohort/associations.tsv")
    rows = []
    for r in a.to_dict("records"):
        label = f"{_text(r.get('x'))} vs {_text(r.get('y'))}"
        note = [_text(r.get(c)) for c in ("note", "label") if c in a.columns and _truthy(r.get(c))
                and _text(r.get(c)).lower() != "exploratory"]  # stats tags every row "exploratory"
        n = _text(r.get("n"))
        stat = _float(r.get("statistic"))
        stat_name = "statistic" if _isna(r.get("statistic_name")) else _text(r.get("statistic_name"))
        stat_s = None if stat is None else f"{stat_name} = {stat:.3g}"
        method = r.get("p_method")
        p_s = f"p = {_p(r.get('p_value'))} (n = {n}" + (f"; {_text(method)})" if not _isna(method) else ")")
        eff = _float(r.get("effect"))
        lo, hi = _float(r.get("ci_low")), _float(r.get("ci_high"))
        eff_s = None
        if eff is not None:
            name = r.get("effect_name")
            eff_s = (f"{_text(name)} = " if not _isna(name) else "") + f"{eff:.3g}"
            if lo is not None and hi is not None:
                eff_s += f" [95% CI {lo:.3g}, {hi:.3g}]"
            if not _isna(r.get("ci_method")):
                eff_s += f" ({_text(r.get('ci_method'))})"
        groups = r.get("n_groups") if "n_groups" in a.columns else None
        rows.append([label, r.get("test"), n, stat_s, p_s, eff_s, groups, "; ".join(note) or None])
    return head + _table(["Association", "Test", "n", "Statistic", "p (n; method)", "Effect (95% CI)",
                          "Groups", "Note"], rows, num=[2])


def _sec_figures(figs: Mapping[str, str]) -> str:
    out = []
    for stem, title, _ in FIGURES:
        if stem == "kinetics":
            out.append(f'<p class="note">Figure {_fig_number(stem)} ({html.escape(title)}) is shown in the '
                       '<a href="#fig-kinetics">CAR-T kinetics</a> section.</p>')
        else:
            out.append(figs[stem])
    return "\n".join(out)


def _fig_number(stem: str) -> int:
    return [f[0] for f in FIGURES].index(stem) + 1


def _truthy(v: Any) -> bool:
    if _isna(v):
        return False
    if isinstance(v, str):
        return v.strip().lower() not in ("", "false", "no", "0", "0.0", "none", "na")
    f = _float(v)
    return bool(v) if f is None else f != 0


_QC_NAME = re.compile(r"qc|flag|removed|failed|hemodilution$", re.I)
_QC_SKIP = {"sample_id", "patient_id", "specimen", "visit", "day", "infusion", "status", "errors"}


def _sec_qc(inp: _Inputs) -> str:
    out = []
    sm = inp["sample_metrics"]
    out.append("<h3>Failed and partial samples</h3>")
    if sm is None:
        out.append(_not_available("cohort/sample_metrics.tsv"))
    else:
        sm = _sorted(sm, ["sample_id"])
        bad = sm[sm["status"].fillna("NA").astype(str) != "ok"] if "status" in sm.columns else sm.iloc[0:0]
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
                            + [_fixed(1)(r[c]) if "pct" in c and _float(r[c]) is not None else r[c] for c in shown])
            out.append(f"<p>{len(flagged)} of {len(sm)} samples carry at least one QC flag (flow-rate/time "
                       "anomalies removed, failed tubes, hemodilution).</p>")
            out.append(_table(["Sample", "Status"] + shown, rows))
    out.append("<h3>Missing read-outs per patient</h3>")
    p = inp["patients"]
    if p is None:
        out.append(_not_available("cohort/patients.tsv"))
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
        k = int((inv["status"].fillna("NA").astype(str) != "ok").sum())
        if k:
            out.append(f'<p>{k} input file(s) were missing or unreadable: see '
                       '<a href="#failed-files">Failed or unreadable files</a>.</p>')
    return "\n".join(out)


def _href(target: Path, base: Path) -> str:
    rel = os.path.relpath(target, base).replace(os.sep, "/")
    return quote(rel, safe="/._-~")


def _sec_gating(inp: _Inputs, out_dir: Path) -> str:
    sdir = inp.results_dir / "samples"
    ids = set()
    if sdir.is_dir():
        ids |= {d.name for d in sdir.iterdir() if d.is_dir()}
    sm = inp["sample_metrics"]
    if sm is not None and "sample_id" in sm.columns:
        ids |= {str(s) for s in sm["sample_id"].dropna()}
    if not ids:
        return "<p>No samples found.</p>"
    base = Path(os.path.abspath(out_dir))  # not resolve(): a symlinked samples/ keeps its links
    blocks = []
    total = 0
    for sid in sorted(ids):
        pdir = sdir / sid / "plots"
        pngs = sorted(pdir.rglob("*.png"), key=lambda f: f.relative_to(pdir).as_posix()) if pdir.is_dir() else []
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


def _sec_provenance(inp: _Inputs, config: Mapping, sheets: Sequence[tuple[str, Path]]) -> str:
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
        out.append(_not_available("inventory.tsv"))
    else:
        inv = _sorted(inv, ["sample_id", "tube", "path"])
        recs = inv.to_dict("records")
        for r in recs:
            r["file"] = _file_label(_text(r.get("path"))) if not _isna(r.get("path")) else None
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


# ---------------------------------------------------------------------------------------------
# The report
# ---------------------------------------------------------------------------------------------

def _required_sensitivity(config: Mapping) -> float | None:
    mrd = config.get("mrd") if isinstance(config, Mapping) else None
    v = mrd.get("required_sensitivity") if isinstance(mrd, Mapping) else None
    return _float(v) if v is not None else 1e-5


def build_report(out_html: str | Path, *, results_dir: str | Path, inventory_tsv: str | Path, config: dict,
                 sample_sheet: str | Path, clinical_sheet: str | Path,
                 title: str = "mrdflow cohort report") -> Path:
    """Write the self-contained cohort report (see the module docstring) and return its path.

    ``results_dir``: the results folder (``cohort/*.tsv``, ``cohort/plots/*.png``,
    ``samples/<id>/plots``). Missing tables or figures give a visible note, not an exception.
    """
    out_html = Path(out_html)
    results_dir = Path(results_dir)
    inp = _Inputs(results_dir, Path(inventory_tsv))
    figs = {stem: _figure(results_dir, stem, t, cap, i + 1) for i, (stem, t, cap) in enumerate(FIGURES)}
    bodies = {
        "summary": _sec_summary(inp),
        "table1": _sec_table1(inp),
        "response": _sec_response(inp),
        "mrd": _sec_mrd(inp, _required_sensitivity(config)),
        "nk": _sec_nk(inp),
        "kinetics": _sec_kinetics(inp, figs["kinetics"]),
        "associations": _sec_associations(inp),
        "figures": _sec_figures(figs),
        "qc": _sec_qc(inp),
        "gating": _sec_gating(inp, out_html.parent),
        "provenance": _sec_provenance(inp, config, [("Sample sheet", Path(sample_sheet)),
                                                     ("Clinical sheet", Path(clinical_sheet))]),
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

"""HTML and text pieces of the cohort report (:mod:`mrdflow.cohort._report`): tables, notes, status
labels, and the privacy rule that cuts absolute paths to their file name. Numbers are written by
:mod:`mrdflow.formatting`."""

from __future__ import annotations

import functools
import hashlib
import html
import os
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pandas as pd

from mrdflow.formatting import NA, finite_float, fixed, is_missing, value_text

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
.status-review{color:#a15c00;font-weight:600}
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

_NA = f'<span class="na">{NA}</span>'


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


def _text(v: Any) -> str:
    """A cell value as plain text (before escaping), as :func:`mrdflow.formatting.value_text` writes
    it, with absolute paths cut to their file name."""
    return _scrub(value_text(v))


def _h(v: Any) -> str:
    """A value as HTML: Raw as is, NA greyed, anything else escaped text."""
    if isinstance(v, Raw):
        return str(v)
    if is_missing(v):
        return _NA
    return html.escape(_text(v))


def _fixed(dp: int) -> Callable[[Any], str | None]:
    """A column formatter: numbers with ``dp`` decimals (:func:`mrdflow.formatting.fixed`)."""
    return functools.partial(fixed, dp=dp)


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
    return fmt(v) if fmt is not None and not is_missing(v) else v


def _sorted(df: pd.DataFrame, keys: Sequence[str]) -> pd.DataFrame:
    keys = [k for k in keys if k in df.columns]
    return df.sort_values(keys, kind="stable", na_position="last").reset_index(drop=True) if keys else df


def _status(v: Any, prefix: str = "status") -> Raw | Any:
    if is_missing(v):
        return v
    s = _text(v)
    return Raw(f'<span class="{prefix}-{html.escape(re.sub(r"[^a-z_]", "", s.lower()))}">'
               f'{html.escape(s.replace("_", " "))}</span>')


def _not_available(label: str) -> str:
    return _missing(f"Not available: {label} was not found.")


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _truthy(v: Any) -> bool:
    if is_missing(v):
        return False
    if isinstance(v, str):
        return v.strip().lower() not in ("", "false", "no", "0", "0.0", "none", "na")
    f = finite_float(v)
    return bool(v) if f is None else f != 0


def _href(target: Path, base: Path) -> str:
    rel = os.path.relpath(target, base).replace(os.sep, "/")
    return quote(rel, safe="/._-~")

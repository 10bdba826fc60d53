"""How mrdflow writes values as text: doses, p-values, rates and percentages, numbers and missing values.

One module, so the tables, the figures and the report say the same thing the same way. Three
audiences, three registers:

- **Tables** (``results/*/*.tsv``): :func:`tsv_cell` (6 significant digits, :data:`NA` for missing).
  The TSV files are a contract: these functions keep their exact text.
- **The HTML report**: :func:`value_text`, :func:`fixed`, :func:`integer`, :func:`sci`, :func:`p_value`,
  :func:`power_of_ten` (missing values are :data:`NA`).
- **Figure labels**: :func:`sci_short`, :func:`p_relation`, :func:`dose_display`, :func:`unicode_minus`
  (missing values are :data:`NOT_AVAILABLE`, "n/a").

A dose is a number of CAR-T cells; its label (:func:`dose_label`, e.g. ``'3.0×10^8'``) is the one
text every stage uses for a dose level (tables, figure legends and colours, the report).

Light on purpose: pandas is imported only by :func:`is_missing`, when first called.
"""

from __future__ import annotations

import math
import re
from typing import Any

import numpy as np

__all__ = ["NA", "NOT_AVAILABLE", "is_missing", "finite_float", "tsv_cell", "value_text", "number", "fixed",
           "integer", "sci", "sci_short", "power_of_ten", "unicode_minus", "rate", "count_percent", "p_value",
           "p_relation", "dose_label", "dose_from_label", "dose_display"]

#: Text of a missing value in tables and in the report.
NA = "NA"
#: Text of a missing value in figure labels.
NOT_AVAILABLE = "n/a"


# ---------------------------------------------------------------------------------------------
# Missing values and numbers
# ---------------------------------------------------------------------------------------------

def is_missing(v: Any) -> bool:
    """True for None and for what pandas calls missing (NaN, ``pd.NA``, ``NaT``); False for anything
    pandas cannot judge as one value (a list, say)."""
    import pandas as pd

    if v is None:
        return True
    try:
        return bool(pd.isna(v))
    except (TypeError, ValueError):
        return False


def finite_float(v: Any) -> float | None:
    """``v`` as a finite float; None when missing, a boolean, not a number, or infinite."""
    if is_missing(v) or isinstance(v, (bool, np.bool_)):
        return None
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def tsv_cell(v: Any) -> str:
    """One TSV cell: :data:`NA` for None or NaN, floats to 6 significant digits (``inf`` stays: an odds
    ratio with a zero cell), anything else as text with tabs and newlines turned into spaces."""
    if v is None:
        return NA
    if isinstance(v, float):
        if math.isnan(v):
            return NA
        return f"{v:.6g}"
    return str(v).replace("\t", " ").replace("\n", " ")


def value_text(v: Any) -> str:
    """A value as the report prints it: :data:`NA` when missing, booleans as yes/no, integral numbers
    without '.0', other numbers to 4 significant digits, anything else as text."""
    if is_missing(v):
        return NA
    if isinstance(v, (bool, np.bool_)):
        return "yes" if v else "no"
    if isinstance(v, (int, np.integer)):
        return str(int(v))
    f = finite_float(v)
    if f is not None and not isinstance(v, str):
        return str(int(f)) if f == round(f) and abs(f) < 1e15 else f"{f:.4g}"
    return str(v)


def number(x: float, decimals: int | None = None) -> str:
    """``x`` with ``decimals`` decimals; with None, as the value needs it (63.5, 49, 4.5: one decimal
    unless the value is whole)."""
    if decimals is None:
        return f"{x:.1f}" if x != round(x) else f"{x:.0f}"
    return f"{x:.{decimals}f}"


def fixed(v: Any, dp: int, suffix: str = "") -> str | None:
    """A number with ``dp`` decimals (and ``suffix``); None when ``v`` is not a finite number."""
    f = finite_float(v)
    return None if f is None else f"{f:.{dp}f}{suffix}"


def integer(v: Any) -> str | None:
    """A number rounded to a whole one ('12'); None when ``v`` is not a finite number."""
    f = finite_float(v)
    return None if f is None else f"{int(round(f)):d}"


def sci(v: Any) -> str | None:
    """Scientific notation with one decimal, '8.7e-06' (an exact zero as '0'); None when ``v`` is not
    a finite number. For fractions such as an MRD level or a sensitivity."""
    f = finite_float(v)
    if f is None:
        return None
    return "0" if f == 0 else f"{f:.1e}"


def sci_short(v: float, digits: int = 2) -> str:
    """Short scientific notation for figure labels: 8.5e-06 -> '8.5e-6' (``digits`` significant
    digits); :data:`NOT_AVAILABLE` unless ``v`` is finite and positive."""
    if not math.isfinite(v) or v <= 0:
        return NOT_AVAILABLE
    mant, exp = f"{v:.{digits - 1}e}".split("e")
    return f"{mant}e{int(exp)}"


def power_of_ten(x: float) -> str:
    """'10^-5' when ``x`` is a power of ten, else '2e-05' style."""
    e = math.log10(x) if x > 0 else float("nan")
    return f"10^{int(round(e))}" if math.isfinite(e) and abs(e - round(e)) < 1e-9 else f"{x:.0e}"


def unicode_minus(s: str) -> str:
    """Hyphens as typographic minus signs ('−'), for figure text."""
    return s.replace("-", "−")


# ---------------------------------------------------------------------------------------------
# Rates and percentages
# ---------------------------------------------------------------------------------------------

def rate(k: int, n: int) -> str:
    """``k`` of ``n`` with the percentage: '2/3 (66.7%)'; '0/0' when ``n`` is 0."""
    return f"{k}/{n} ({100.0 * k / n:.1f}%)" if n else "0/0"


def count_percent(k: int, pct: float | None) -> str:
    """A count with its percentage as Table 1 writes it: '5 (62.5)'; the bare count when it is 0 or
    the percentage is unknown."""
    return f"{k} ({pct:.1f})" if k and pct is not None else str(k)


# ---------------------------------------------------------------------------------------------
# p-values
# ---------------------------------------------------------------------------------------------

def p_value(v: Any) -> str:
    """A p-value for tables and the report: '0.058', '8.7e-04' below 0.001; :data:`NA` when missing."""
    f = finite_float(v)
    if f is None:
        return NA
    return f"{f:.1e}" if f < 0.001 else f"{f:.3f}"


def p_relation(p: float) -> str:
    """A p-value as a figure caption writes it after 'p': '= 0.21', '= 0.058', '< 0.001';
    :data:`NOT_AVAILABLE` when not finite."""
    if not math.isfinite(p):
        return NOT_AVAILABLE
    if p < 0.001:
        return "< 0.001"
    return f"= {p:.2f}" if p >= 0.1 else f"= {p:.2g}"


# ---------------------------------------------------------------------------------------------
# Doses (CAR-T cells)
# ---------------------------------------------------------------------------------------------

_SUPERSCRIPT = str.maketrans("0123456789-+", "⁰¹²³⁴⁵⁶⁷⁸⁹⁻⁺")
_DOSE_RE = re.compile(r"^\s*([0-9.]+)\s*(?:[x×*]\s*10\s*\^?\s*([+-−]?\d+)|e([+-]?\d+))?\s*$", re.IGNORECASE)


def dose_label(cells: Any) -> str | None:
    """A dose in cells as the poster writes it: 3.0e8 -> '3.0×10^8' (one decimal of the mantissa).
    None when the dose is missing, not a number, or not positive.

    The exponent is that of the dose itself, and the mantissa is not renormalised after rounding:
    9.96e8 gives '10.0×10^8'. The cohort tables have always written it so (``dose_level``, Table 1,
    the response summary), and they are a contract."""
    if cells is None:
        return None
    try:
        f = float(cells)
    except (TypeError, ValueError):
        return None
    if not (math.isfinite(f) and f > 0):
        return None
    exp = int(math.floor(math.log10(f)))
    return f"{f / 10 ** exp:.1f}×10^{exp}"


def dose_from_label(label: str | None) -> float:
    """The dose (cells) a label gives: '3.0×10^8', '3x10^8' or '3e8' -> 3.0e8; NaN when it cannot be read."""
    if not label:
        return math.nan
    m = _DOSE_RE.match(label)
    if not m:
        return math.nan
    exp = m.group(2) or m.group(3) or "0"
    return float(m.group(1)) * 10 ** int(exp.replace("−", "-"))


def dose_display(label: str | None) -> str:
    """A dose label for figures, exponent as superscript: '3.0×10^8' -> '3.0×10⁸'; 'dose n/a' when missing."""
    if not label:
        return f"dose {NOT_AVAILABLE}"
    return re.sub(r"\^([+-]?\d+)", lambda m: m.group(1).translate(_SUPERSCRIPT), label)

"""mrdflow.formatting: the one place that writes doses, p-values, rates, numbers and missing values."""
import math
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from mrdflow import formatting as F


def test_dose_label_is_the_tables_label():
    assert F.dose_label(3.0e8) == "3.0×10^8"
    assert F.dose_label(1.5e8) == "1.5×10^8"
    assert F.dose_label(4.5e8) == "4.5×10^8"
    assert F.dose_label(1e9) == "1.0×10^9"
    assert F.dose_label(300_000_000) == "3.0×10^8"
    # the mantissa is not renormalised after rounding: the TSV files have always said so
    assert F.dose_label(9.96e8) == "10.0×10^8"
    for missing in (None, math.nan, float("inf"), 0, -3e8, "three"):
        assert F.dose_label(missing) is None


def test_dose_label_round_trips_and_displays():
    assert F.dose_from_label("3.0×10^8") == pytest.approx(3.0e8)
    assert F.dose_from_label("3x10^8") == pytest.approx(3.0e8)
    assert F.dose_from_label("3e8") == pytest.approx(3.0e8)
    assert F.dose_from_label("10.0×10^8") == pytest.approx(1e9)
    assert math.isnan(F.dose_from_label(None)) and math.isnan(F.dose_from_label("a lot"))
    assert F.dose_display("3.0×10^8") == "3.0×10⁸"
    assert F.dose_display("5.0×10^-1") == "5.0×10⁻¹"
    assert F.dose_display(None) == "dose n/a"


def test_p_values():
    assert F.p_value(0.0575) == "0.058" and F.p_value(1.0) == "1.000"
    assert F.p_value(0.00042) == "4.2e-04"
    assert F.p_value(None) == F.NA and F.p_value(math.nan) == F.NA and F.p_value("x") == F.NA
    assert F.p_relation(0.21) == "= 0.21" and F.p_relation(0.0575) == "= 0.058"
    assert F.p_relation(0.0004) == "< 0.001" and F.p_relation(math.nan) == F.NOT_AVAILABLE


def test_tsv_cell():
    assert F.tsv_cell(None) == "NA" and F.tsv_cell(math.nan) == "NA"
    assert F.tsv_cell(1 / 3) == "0.333333" and F.tsv_cell(1.5) == "1.5" and F.tsv_cell(np.float64(2.0)) == "2"
    assert F.tsv_cell(math.inf) == "inf"
    assert F.tsv_cell(True) == "True" and F.tsv_cell(7) == "7"
    assert F.tsv_cell("a\tb\nc") == "a b c"


def test_missing_values():
    for v in (None, math.nan, np.nan, pd.NA, pd.NaT):
        assert F.is_missing(v)
    for v in ("", "NA", 0, [1, 2], False):
        assert not F.is_missing(v)
    assert F.finite_float("2.5") == 2.5
    assert F.finite_float(True) is None and F.finite_float(np.bool_(True)) is None
    assert F.finite_float(math.inf) is None and F.finite_float("x") is None


def test_value_text():
    assert F.value_text(None) == "NA" and F.value_text(pd.NA) == "NA"
    assert F.value_text(True) == "yes" and F.value_text(np.bool_(False)) == "no"
    assert F.value_text(np.int64(12)) == "12" and F.value_text(12.0) == "12"
    assert F.value_text(1.234567) == "1.235" and F.value_text(8.7e-6) == "8.7e-06"
    assert F.value_text("12.0") == "12.0"  # text stays text


def test_numbers_and_rates():
    assert F.number(63.5) == "63.5" and F.number(49.0) == "49" and F.number(22.5, 2) == "22.50"
    assert F.fixed(3.14159, 2) == "3.14" and F.fixed(None, 2) is None and F.fixed(2, 1, "%") == "2.0%"
    assert F.integer(6.6) == "7" and F.integer("x") is None
    assert F.sci(8.7e-6) == "8.7e-06" and F.sci(0) == "0" and F.sci(None) is None
    assert F.sci_short(8.5e-6) == "8.5e-6" and F.sci_short(0) == F.NOT_AVAILABLE
    assert F.unicode_minus("8.5e-6") == "8.5e−6"
    assert F.power_of_ten(1e-5) == "10^-5" and F.power_of_ten(2e-5) == "2e-05"
    assert F.rate(2, 3) == "2/3 (66.7%)" and F.rate(0, 0) == "0/0"
    assert F.count_percent(5, 62.5) == "5 (62.5)" and F.count_percent(0, 0.0) == "0"
    assert F.count_percent(3, None) == "3"


def test_import_is_light():
    code = "import sys, mrdflow.formatting; print('pandas' in sys.modules, 'matplotlib' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["False", "False"]

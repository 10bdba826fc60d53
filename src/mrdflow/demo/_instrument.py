"""The simulated instrument (a BD FACSCanto II-like cytometer): the parameter range, the Time
channel's unit, per-fluorochrome autofluorescence, noise, spillover and detector voltages."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

PNR = 262144  # $PnR of scatter and fluorescence parameters (channel units)
SAT = PNR - 1  # saturation: the largest value a parameter can hold (channel units)
TIMESTEP = 0.01  # seconds per Time channel unit (BD FACSDiva default)

# Autofluorescence (linear units, a lymphocyte), noise and spillover, by fluorochrome
_AF = {"BV421": 70, "BV510": 90, "FITC": 160, "PE": 130, "PerCP-Cy5.5": 110, "PE-Cy7": 70,
       "APC": 45, "APC-C750": 45, "APC-H7": 45}
_SIGMA_E = 45.0  # electronic noise (linear units)
_PHOTON = 1.0  # photon noise variance per unit signal
# (source fluorochrome, receiving fluorochrome's detector) -> fraction
_SPILL = {
    ("BV421", "BV510"): 0.16, ("BV421", "FITC"): 0.010,
    ("BV510", "BV421"): 0.012, ("BV510", "FITC"): 0.090, ("BV510", "PE"): 0.030,
    ("BV510", "PerCP-Cy5.5"): 0.010,
    ("FITC", "BV510"): 0.012, ("FITC", "PE"): 0.22, ("FITC", "PerCP-Cy5.5"): 0.040,
    ("FITC", "PE-Cy7"): 0.006,
    ("PE", "FITC"): 0.012, ("PE", "PerCP-Cy5.5"): 0.14, ("PE", "PE-Cy7"): 0.035,
    ("PE", "APC"): 0.002,
    ("PerCP-Cy5.5", "PE"): 0.005, ("PerCP-Cy5.5", "PE-Cy7"): 0.11, ("PerCP-Cy5.5", "APC"): 0.015,
    ("PerCP-Cy5.5", "APC-C750"): 0.030, ("PerCP-Cy5.5", "APC-H7"): 0.028,
    ("PE-Cy7", "PE"): 0.015, ("PE-Cy7", "PerCP-Cy5.5"): 0.020, ("PE-Cy7", "APC"): 0.002,
    ("PE-Cy7", "APC-C750"): 0.070, ("PE-Cy7", "APC-H7"): 0.065,
    ("APC", "PerCP-Cy5.5"): 0.012, ("APC", "PE-Cy7"): 0.005, ("APC", "APC-C750"): 0.13,
    ("APC", "APC-H7"): 0.11,
    ("APC-C750", "APC"): 0.050, ("APC-C750", "PE-Cy7"): 0.030,
    ("APC-H7", "APC"): 0.045, ("APC-H7", "PE-Cy7"): 0.027,
}
_VOLTAGES = {"FSC": 420, "SSC": 480, "BV421": 420, "BV510": 450, "FITC": 500, "PE": 460,
             "PerCP-Cy5.5": 560, "PE-Cy7": 580, "APC": 600, "APC-C750": 620, "APC-H7": 620}


def spillover_matrix(fluorochromes: Sequence[str]) -> np.ndarray:
    """Spillover matrix for the given fluorochromes (rows source, columns detector, diag 1)."""
    n = len(fluorochromes)
    m = np.eye(n)
    for i, a in enumerate(fluorochromes):
        for j, b in enumerate(fluorochromes):
            if i != j:
                m[i, j] = _SPILL.get((a, b), 0.0)
    return m


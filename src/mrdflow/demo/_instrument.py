"""The simulated instruments. ``bd`` (the default) is a BD FACSCanto II-like cytometer: 2^18
channel range, BD detector names (``BV421-A``, ``PerCP-Cy5-5-A``...), the panel's fluorochromes.
``beckman`` is a Beckman Coulter Navios/DxFLEX-like one, unlike it on every count a lab meets:

* detector names ``FS INT``/``FS PEAK``/``SS INT``/``TIME`` and ``PB450-A``, ``KO525-A``,
  ``FITC-A``, ``PE-A``, ``PC5.5-A``, ``PC7-A``, ``APC-A``, ``APC-A750-A``; the lab's reagents are
  the Beckman conjugates in the same slots (Pacific Blue for BV421, Krome Orange for BV510, PC5.5
  for PerCP-Cy5.5, PC7 for PE-Cy7, APC-Alexa Fluor 750 for APC-C750/APC-H7), written in ``$PnS``
  as ``CD138 Pacific Blue``; the viability dye's ``$PnS`` is blank;
* another spillover matrix, autofluorescence, electronic noise and ``$PnV``;
* a 2^20 channel range: fluorescence at 4x the BD channel values (it fills the range as the BD
  one does), scatter at 3x (it sits lower in its range: lymphocyte FSC at ~15% instead of ~20%);
* every marker's stained populations shifted by a fixed per-marker amount of up to +/-0.3
  decades (:func:`marker_shifts`: seeded by ``shift_seed`` and the marker name; a design may
  set some with ``marker_shift_log10``). Autofluorescence is not shifted.

Signals are generated in BD channel units; an instrument's gains scale them on output.
"""

from __future__ import annotations

import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

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

# The Beckman-like instrument: the conjugate the lab uses in each BD fluorochrome's slot, its
# detector, autofluorescence (BD channel units, a lymphocyte), spillover and voltages.
_BECKMAN_REAGENT = {"BV421": "Pacific Blue", "BV510": "Krome Orange", "FITC": "FITC", "PE": "PE",
                    "PerCP-Cy5.5": "PC5.5", "PE-Cy7": "PC7", "APC": "APC",
                    "APC-C750": "APC-Alexa Fluor 750", "APC-H7": "APC-Alexa Fluor 750"}
_BECKMAN_DETECTOR = {"Pacific Blue": "PB450-A", "Krome Orange": "KO525-A", "FITC": "FITC-A",
                     "PE": "PE-A", "PC5.5": "PC5.5-A", "PC7": "PC7-A", "APC": "APC-A",
                     "APC-Alexa Fluor 750": "APC-A750-A"}
_BECKMAN_AF = {"Pacific Blue": 95, "Krome Orange": 120, "FITC": 140, "PE": 100, "PC5.5": 85,
               "PC7": 60, "APC": 40, "APC-Alexa Fluor 750": 55}
# PC5.5 (PE-Cy5.5) is excited by the blue and the red laser, so it spills into the red
# detectors far more than PerCP-Cy5.5 does; Pacific Blue spills more into KO525 than BV421 into
# BV510; Krome Orange is a violet-excited large-Stokes dye that reaches FITC and PE.
_BECKMAN_SPILL = {
    ("Pacific Blue", "Krome Orange"): 0.22, ("Pacific Blue", "FITC"): 0.015,
    ("Krome Orange", "Pacific Blue"): 0.008, ("Krome Orange", "FITC"): 0.12,
    ("Krome Orange", "PE"): 0.045, ("Krome Orange", "PC5.5"): 0.006,
    ("FITC", "Krome Orange"): 0.020, ("FITC", "PE"): 0.18, ("FITC", "PC5.5"): 0.025,
    ("FITC", "PC7"): 0.004,
    ("PE", "FITC"): 0.008, ("PE", "PC5.5"): 0.10, ("PE", "PC7"): 0.025, ("PE", "APC"): 0.004,
    ("PC5.5", "PE"): 0.004, ("PC5.5", "PC7"): 0.16, ("PC5.5", "APC"): 0.09,
    ("PC5.5", "APC-Alexa Fluor 750"): 0.060,
    ("PC7", "PE"): 0.010, ("PC7", "PC5.5"): 0.035, ("PC7", "APC"): 0.004,
    ("PC7", "APC-Alexa Fluor 750"): 0.11,
    ("APC", "PC5.5"): 0.020, ("APC", "PC7"): 0.008, ("APC", "APC-Alexa Fluor 750"): 0.17,
    ("APC-Alexa Fluor 750", "APC"): 0.035, ("APC-Alexa Fluor 750", "PC7"): 0.045,
}
_BECKMAN_VOLTAGES = {"FSC": 180, "SSC": 360, "Pacific Blue": 450, "Krome Orange": 520,
                     "FITC": 410, "PE": 390, "PC5.5": 620, "PC7": 700, "APC": 560,
                     "APC-Alexa Fluor 750": 680}
MAX_SHIFT_LOG10 = 0.3  # the largest per-marker position shift of the beckman profile (decades)


def _spill(names: Sequence[str], table: Mapping[tuple[str, str], float]) -> np.ndarray:
    n = len(names)
    m = np.eye(n)
    for i, a in enumerate(names):
        for j, b in enumerate(names):
            if i != j:
                m[i, j] = table.get((a, b), 0.0)
    return m


def spillover_matrix(fluorochromes: Sequence[str]) -> np.ndarray:
    """Spillover matrix for the given fluorochromes (rows source, columns detector, diag 1)."""
    return _spill(fluorochromes, _SPILL)


def marker_shifts(markers: Sequence[str], seed: int,
                  overrides: Mapping[str, float] | None = None) -> dict[str, float]:
    """A fixed position shift per marker (log10 units, uniform in +/-MAX_SHIFT_LOG10), drawn
    from a generator seeded by ``seed`` and the marker name (so a marker's shift does not depend
    on the panel it is in); ``overrides`` (marker -> decades) replace some."""
    out = {}
    for m in markers:
        rng = np.random.default_rng([int(seed), zlib.crc32(m.encode())])
        out[m] = round(float(rng.uniform(-MAX_SHIFT_LOG10, MAX_SHIFT_LOG10)), 3)
    for m, v in (overrides or {}).items():
        if m in out:
            out[m] = float(v)
    return out


@dataclass(frozen=True)
class Instrument:
    """One simulated cytometer. Gains scale BD channel units to this instrument's channels."""

    name: str
    pnr: int  # $PnR of scatter and fluorescence (channel units)
    scatter_names: tuple[str, str, str, str]  # FSC-A, FSC-H, SSC-A, Time $PnN
    scatter_gain: float = 1.0
    fluor_gain: float = 1.0
    sigma_e: float = _SIGMA_E  # electronic noise (BD channel units)
    text: Mapping[str, str] = field(default_factory=dict)  # $CYT, $CYTSN, $INST defaults
    shift_seed: int | None = None  # None: no per-marker shift
    shift_overrides: Mapping[str, float] = field(default_factory=dict)
    blank_pns: tuple[str, ...] = ()  # markers written with an empty $PnS

    @property
    def sat(self) -> int:
        """The largest value a scatter or fluorescence parameter can hold (channel units)."""
        return self.pnr - 1

    def reagent(self, fluor: str) -> str:
        """The conjugate this instrument's lab uses in the slot of a panel fluorochrome."""
        return _BECKMAN_REAGENT.get(fluor, fluor) if self.name == "beckman" else fluor

    def detector(self, fluor: str, panel_detector: str) -> str:
        """$PnN of the detector reading a panel fluorochrome."""
        if self.name == "beckman":
            return _BECKMAN_DETECTOR[self.reagent(fluor)]
        return panel_detector

    def autofluorescence(self, fluors: Sequence[str]) -> np.ndarray:
        """Autofluorescence of a lymphocyte in each fluorochrome's detector (BD channel units)."""
        if self.name == "beckman":
            return np.array([_BECKMAN_AF.get(self.reagent(f), 80) for f in fluors], dtype=float)
        return np.array([_AF.get(f, 80) for f in fluors], dtype=float)

    def spillover(self, fluors: Sequence[str]) -> np.ndarray:
        """Spillover matrix (rows source, columns detector, diagonal 1) for panel fluorochromes."""
        if self.name == "beckman":
            return _spill([self.reagent(f) for f in fluors], _BECKMAN_SPILL)
        return spillover_matrix(fluors)

    def voltage(self, key: str) -> int | None:
        """$PnV of ``FSC``, ``SSC`` or a panel fluorochrome's detector (None: not written)."""
        if self.name == "beckman":
            return _BECKMAN_VOLTAGES.get(key if key in ("FSC", "SSC") else self.reagent(key))
        return _VOLTAGES.get(key)

    def shifts(self, markers: Sequence[str]) -> dict[str, float]:
        """Per-marker position shift (decades) of the stained populations; empty: none."""
        if self.shift_seed is None:
            return {}
        return marker_shifts(markers, self.shift_seed, self.shift_overrides)


INSTRUMENTS = ("bd", "beckman")
_BD_TEXT = {"cyt": "FACSCanto II", "cytsn": "V33896201", "inst": "Core flow lab (simulated)"}
_BECKMAN_TEXT = {"cyt": "Navios EX", "cytsn": "AW51027", "inst": "Second flow lab (simulated)"}
DEFAULT_SHIFT_SEED = 11  # the beckman profile's per-marker shifts (see marker_shifts)


def instrument_for(design: Mapping) -> Instrument:
    """The instrument a design names: ``instrument:`` is absent (``bd``), a profile name, or a
    mapping with ``profile`` (default ``bd``), the TEXT keywords ``cyt``/``cytsn``/``inst`` and,
    for ``beckman``, ``shift_seed`` and ``marker_shift_log10`` (marker -> decades)."""
    spec = design.get("instrument") or {}
    if isinstance(spec, str):
        spec = {"profile": spec}
    spec = dict(spec)
    name = str(spec.pop("profile", "bd"))
    if name not in INSTRUMENTS:
        raise ValueError(f"design instrument profile {name!r} is not one of {list(INSTRUMENTS)}")
    if name == "bd":
        text = {**_BD_TEXT, **{k: str(v) for k, v in spec.items() if k in _BD_TEXT}}
        return Instrument("bd", PNR, ("FSC-A", "FSC-H", "SSC-A", "Time"), text=text)
    text = {**_BECKMAN_TEXT, **{k: str(v) for k, v in spec.items() if k in _BECKMAN_TEXT}}
    return Instrument(
        "beckman", 2 ** 20, ("FS INT", "FS PEAK", "SS INT", "TIME"), scatter_gain=3.0,
        fluor_gain=4.0, sigma_e=35.0, text=text,
        shift_seed=int(spec.get("shift_seed", DEFAULT_SHIFT_SEED)),
        shift_overrides={str(k): float(v) for k, v in (spec.get("marker_shift_log10") or {}).items()},
        blank_pns=("Viability",))

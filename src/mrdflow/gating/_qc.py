"""Pre-analytical QC: time/flow-rate anomalies, singlets, debris, viability.

Pure functions on event arrays; thresholds come from config (:class:`QCSettings`). Each step returns
a named result with the boolean mask of events kept and what it measured, so the gating stage can
turn it into a Gating-ML gate and the QC table can report events in/out.

Flow-rate QC follows the idea of flowAI/flowClean (bin the acquisition by time, flag bins whose
event rate or signal departs from the run's robust centre); no maintained Python package does it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from mrdflow.config import schema_defaults

__all__ = [
    "QCSettings",
    "TimeQC",
    "SingletGate",
    "time_qc",
    "singlet_gate",
    "robust_z",
]

#: config ``qc`` defaults, from the config schema (the one place a default is written)
_QC = schema_defaults("qc")


@dataclass(frozen=True)
class QCSettings:
    """QC thresholds (config ``qc``).

    time_bins: number of equal-duration time bins (fewer when events are scarce: at least
    ``min_events_per_bin`` per bin on average). rate_z: robust z-score (median/MAD) of a bin's event
    rate beyond which the bin is flagged; rate_min_rel: and the rate must differ from the median by at
    least this fraction (Poisson noise alone is never flagged). drift_z / drift_min: the same for the
    per-bin mean of each signal channel (transformed units). max_removed_fraction: above this
    fraction of events removed by time QC the sample fails flow-rate QC. singlet_k: doublets are
    events whose FSC-A/FSC-H ratio exceeds the singlet mode by more than k robust SDs (left half).
    """

    time_bins: int = _QC["time_bins"]
    min_events_per_bin: int = _QC["min_events_per_bin"]
    rate_z: float = _QC["rate_z"]
    rate_min_rel: float = _QC["rate_min_rel"]
    drift_z: float = _QC["drift_z"]
    drift_min: float = _QC["drift_min"]
    max_removed_fraction: float = _QC["max_removed_fraction"]
    singlet_k: float = _QC["singlet_k"]
    singlet_max_ratio: float = _QC["singlet_max_ratio"]


def robust_z(x: np.ndarray) -> np.ndarray:
    """(x - median) / (1.4826 · MAD); MAD floored so a constant series gives zeros."""
    med = np.median(x)
    mad = 1.4826 * np.median(np.abs(x - med))
    if not np.isfinite(mad) or mad <= 1e-12 * max(1.0, abs(med)):
        mad = max(1e-12, 1e-6 * max(1.0, abs(med)))
    return (x - med) / mad


def _weighted_median(x: np.ndarray, w: np.ndarray) -> float:
    order = np.argsort(x, kind="stable")
    cw = np.cumsum(w[order])
    if cw[-1] <= 0:
        return float(np.median(x))
    return float(x[order][np.searchsorted(cw, 0.5 * cw[-1])])


@dataclass(frozen=True)
class TimeQC:
    """Result of the time/flow-rate step.

    keep: bool per event. edges: bin edges (Time channel units, usually s). rate: events per time
    unit per bin. flagged_bins: bool per bin. segments: merged flagged ranges [(start, end)] in Time
    units. reasons: per flagged segment, "rate" and/or "drift:<channel>".
    """

    keep: np.ndarray
    edges: np.ndarray
    rate: np.ndarray
    flagged_bins: np.ndarray
    segments: list[tuple[float, float]] = field(default_factory=list)
    reasons: list[str] = field(default_factory=list)

    @property
    def removed_fraction(self) -> float:
        return float(1 - self.keep.mean()) if self.keep.size else 0.0


def _columns(signals) -> list[np.ndarray]:
    """Signal columns from an events × k matrix or a sequence of 1-D columns."""
    if signals is None:
        return []
    if isinstance(signals, np.ndarray):
        return [] if signals.size == 0 else [signals[:, j] for j in range(signals.shape[1])]
    return [np.asarray(c) for c in signals]


def time_qc(time: np.ndarray, signals, settings: QCSettings = QCSettings(),
            signal_names: list[str] | None = None, span: tuple[float, float] | None = None) -> TimeQC:
    """Flag time bins whose event rate or mean signal is anomalous.

    ``time``: the Time channel (any monotone unit). ``signals``: events × k matrix, or a list of k
    event columns, of transformed channels (e.g. logicle of fluorescence, scatter scaled to 0–1)
    checked for drift, or None. ``span``: (first, last) Time of the acquisition when ``time`` is a
    sample of its events (the bins then cover the whole run); default: ``time``'s own range.
    """
    n = time.shape[0]
    if n == 0:
        return TimeQC(np.zeros(0, bool), np.zeros(1), np.zeros(0), np.zeros(0, bool))
    t0, t1 = span if span is not None else (float(np.min(time)), float(np.max(time)))
    nbins = int(max(1, min(settings.time_bins, n // max(1, settings.min_events_per_bin))))
    if t1 <= t0 or nbins < 5:
        return TimeQC(np.ones(n, bool), np.array([t0, t1]), np.array([n / max(t1 - t0, 1e-9)]), np.zeros(1, bool))
    edges = np.linspace(t0, t1, nbins + 1)
    b = np.clip(np.searchsorted(edges, time, side="right") - 1, 0, nbins - 1)
    counts = np.bincount(b, minlength=nbins).astype(np.float64)
    width = np.diff(edges)
    rate = counts / width
    # Centre and spread of the rate weighted by events: a long clog holds few events, so it cannot
    # become "typical" even when it spans half of the acquisition time.
    med_rate = _weighted_median(rate, counts)
    mad = 1.4826 * _weighted_median(np.abs(rate - med_rate), counts)
    mad = max(mad, 1e-6 * max(med_rate, 1.0))
    rel = np.abs(rate - med_rate) / max(med_rate, 1e-12)
    rate_flag = (np.abs(rate - med_rate) / mad > settings.rate_z) & (rel > settings.rate_min_rel)
    reasons_bin: list[set[str]] = [set() for _ in range(nbins)]
    for i in np.flatnonzero(rate_flag):
        reasons_bin[i].add("rate")
    flagged = rate_flag.copy()
    columns = _columns(signals)
    if columns:
        names = signal_names or [f"ch{j}" for j in range(len(columns))]
        for j, col in enumerate(columns):
            # Bin means, not medians: on a bimodal marker (e.g. CD138 with ~50% plasma cells) the
            # median jumps between modes with tiny changes in the mix, the mean moves smoothly.
            # One pass (bincount with weights), no sorted copy of the events.
            with np.errstate(invalid="ignore", divide="ignore"):
                meds = np.bincount(b, weights=col, minlength=nbins) / counts
            meds[counts == 0] = np.nan
            ok = np.isfinite(meds)
            if ok.sum() < 5:
                continue
            z = np.zeros(nbins)
            z[ok] = robust_z(meds[ok])
            dev = np.abs(meds - np.nanmedian(meds))
            drift = ok & (np.abs(z) > settings.drift_z) & (dev > settings.drift_min)
            for i in np.flatnonzero(drift):
                reasons_bin[i].add(f"drift:{names[j]}")
            flagged |= drift
    keep = ~flagged[b]
    segments: list[tuple[float, float]] = []
    reasons: list[str] = []
    i = 0
    while i < nbins:
        if flagged[i]:
            j = i
            why: set[str] = set()
            while j < nbins and flagged[j]:
                why |= reasons_bin[j]
                j += 1
            segments.append((float(edges[i]), float(edges[j])))
            reasons.append(",".join(sorted(why)))
            i = j
        else:
            i += 1
    return TimeQC(keep, edges, rate, flagged, segments, reasons)


@dataclass(frozen=True)
class SingletGate:
    """Singlets on FSC-A vs FSC-H: ``ratio_lo <= FSC-A/FSC-H <= ratio_hi``.

    The gate is the wedge between two lines through the origin; ``polygon(h_max)`` gives its
    vertices in (FSC-A, FSC-H) for Gating-ML. mode: the singlet ratio mode; sd: robust SD from the
    mode's left half (doublets only inflate the right side).
    """

    ratio_lo: float
    ratio_hi: float
    mode: float
    sd: float
    keep: np.ndarray

    def polygon(self, h_min: float, h_max: float) -> list[tuple[float, float]]:
        """Vertices (FSC-A, FSC-H) of the wedge for FSC-H in [h_min, h_max]."""
        return [
            (self.ratio_lo * h_min, h_min),
            (self.ratio_hi * h_min, h_min),
            (self.ratio_hi * h_max, h_max),
            (self.ratio_lo * h_max, h_max),
        ]


def singlet_gate(fsc_a: np.ndarray, fsc_h: np.ndarray, settings: QCSettings = QCSettings()) -> SingletGate:
    """Data-driven singlet gate from the FSC-A/FSC-H ratio distribution.

    Events with FSC-H ≤ 0 are not singlets. The ratio's mode is the singlet diagonal; its spread is
    estimated from events left of the mode (mirrored), and the upper bound sits ``singlet_k`` robust
    SDs above the mode, never above ``singlet_max_ratio`` times the mode.
    """
    fsc_a, fsc_h = np.asarray(fsc_a), np.asarray(fsc_h)
    valid = (fsc_h > 0) & np.isfinite(fsc_a) & np.isfinite(fsc_h)
    # float64 ratios from the (float32) inputs without float64 copies of whole columns
    ratio = np.divide(fsc_a, fsc_h, out=np.full(fsc_a.shape, np.nan), where=valid, dtype=np.float64)
    r = ratio[valid]
    r = r[(r > 0) & (r < 10)]
    if r.size < 50:
        keep = np.zeros(fsc_a.shape, bool)
        return SingletGate(0.0, 0.0, float("nan"), float("nan"), keep)
    lo, hi = np.percentile(r, [0.5, 99.5])
    hist, edges = np.histogram(r, bins=400, range=(lo, hi))
    from mrdflow.gating._density import gaussian_smooth

    sm = gaussian_smooth(hist.astype(float), 2)
    mode = float(0.5 * (edges[np.argmax(sm)] + edges[np.argmax(sm) + 1]))
    left = r[r <= mode]
    sd = float(np.sqrt(np.mean((left - mode) ** 2))) if left.size > 10 else float(np.std(r))
    sd = max(sd, 1e-3 * mode)
    ratio_hi = min(mode + settings.singlet_k * sd, settings.singlet_max_ratio * mode)
    ratio_lo = max(mode - settings.singlet_k * sd, 0.0)
    keep = valid & (ratio >= ratio_lo) & (ratio <= ratio_hi)
    return SingletGate(ratio_lo, ratio_hi, mode, sd, keep)

"""Validation against the simulator's planted truth (demo and test cohorts only).

This is the one module that reads truth: the simulator's ``truth.tsv`` beside the FCS files. The
analysis never imports it. Each check compares a measured read-out in ``results/samples/*/
metrics.json`` with the planted value and gives a verdict against a bar (:class:`Bars`).
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from mrdflow.panels import Panel, load_panels, readouts
from mrdflow.sample import SAMPLE_FILES

from ._design import PANELS_DIR

__all__ = ["Bars", "Check", "PosterNumbers", "format_report", "validate", "validate_cohort"]


@dataclass(frozen=True)
class Bars:
    """Accuracy bars (issue #3 defaults).

    pc_abs / pc_rel: PC% within max(pc_abs points, pc_rel × planted). nkg2a_abs: NKG2A+ % of NK
    within this many points. aberrant_rel / aberrant_abs / aberrant_small: aberrant-PC events within
    aberrant_rel × planted, or ±aberrant_abs events when planted < aberrant_small. cart_rel /
    cart_abs_events / cart_small: CAR-T cells/µL within cart_rel × planted, or within the cells/µL
    that ±cart_abs_events events represent when fewer than cart_small CAR+ events were planted
    (Poisson noise makes a relative bar meaningless there). lod_events / required_sensitivity:
    used to derive the expected MRD status.
    """

    pc_abs: float = 0.5
    pc_rel: float = 0.05
    nkg2a_abs: float = 2.0
    aberrant_rel: float = 0.20
    aberrant_abs: int = 10
    aberrant_small: int = 50
    cart_rel: float = 0.10
    cart_abs_events: int = 10
    cart_small: int = 50
    lod_events: int = 20
    required_sensitivity: float = 1e-5


@dataclass(frozen=True)
class Check:
    sample_id: str
    readout: str
    measured: object
    planted: object
    bar: str
    passed: bool


def _read_truth(path: Path) -> list[dict]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh, delimiter="\t"))


def _num(v) -> float | None:
    try:
        f = float(v)
        return f if math.isfinite(f) else None
    except (TypeError, ValueError):
        return None


def _panel_readouts(panels: Mapping[str, Panel] | str | Path | None) -> dict[str, str | None]:
    """Panel name -> the read-out it feeds (``pc_mrd``, ``nk``, ``cart`` or None), from loaded
    panels or a folder of panel YAML files (default: the repository's ``resources/panels``)."""
    if panels is None or isinstance(panels, (str, Path)):
        panels = load_panels(PANELS_DIR if panels is None else panels)
    return readouts(panels)


def validate(results_dir: str | Path, truth_tsv: str | Path, bars: Bars = Bars(),
             panels: Mapping[str, Panel] | str | Path | None = None) -> list[Check]:
    """Compare every sample's metrics with the planted truth; one :class:`Check` per read-out.

    panels: the panels the truth's ``panel`` column names (loaded, or their folder; default the
    repository's ``resources/panels``): each tube's panel says which read-out it is checked for.
    """
    results_dir = Path(results_dir)
    readout = _panel_readouts(panels)
    truth = _read_truth(Path(truth_tsv))
    by_sample: dict[str, list[dict]] = {}
    for row in truth:
        if row.get("role", "stain") == "stain":
            by_sample.setdefault(row["sample_id"], []).append(row)
    checks: list[Check] = []
    for sid, rows in sorted(by_sample.items()):
        mfile = results_dir / "samples" / sid / SAMPLE_FILES.metrics
        if not mfile.is_file():
            checks.append(Check(sid, SAMPLE_FILES.metrics, "missing", "present", "exists", False))
            continue
        m = json.loads(mfile.read_text())
        fed: dict[str, list[dict]] = {}
        for r in rows:
            fed.setdefault(readout.get(r["panel"]), []).append(r)
        if "pc_mrd" in fed:
            checks += _bm_checks(sid, fed["pc_mrd"], m, bars)
        if "nk" in fed:
            checks += _nk_checks(sid, fed["nk"], m, bars)
        if "cart" in fed:
            checks += _cart_checks(sid, fed["cart"], m, bars)
    return checks


def _bm_checks(sid: str, rows: Sequence[dict], m: dict, bars: Bars) -> list[Check]:
    out = []
    pc = m.get("pc") or {}
    mrd = m.get("mrd") or {}
    planted_pc = _num(rows[0]["pc_pct_of_nucleated"])
    measured_pc = _num(pc.get("pc_pct"))
    if rows[0]["visit"] == "baseline" and planted_pc is not None:
        tol = max(bars.pc_abs, bars.pc_rel * planted_pc)
        ok = measured_pc is not None and abs(measured_pc - planted_pc) <= tol
        out.append(Check(sid, "PC % of nucleated", _r(measured_pc), planted_pc, f"±{tol:.2f} points", ok))
    planted_ab = sum(int(float(r["aberrant_pc"] or 0)) for r in rows)
    measured_ab = pc.get("n_aberrant_pc")
    if planted_ab < bars.aberrant_small:
        tol_ab, bar = float(bars.aberrant_abs), f"±{bars.aberrant_abs} events"
    else:
        tol_ab, bar = bars.aberrant_rel * planted_ab, f"±{100 * bars.aberrant_rel:.0f}%"
    ok = measured_ab is not None and abs(measured_ab - planted_ab) <= tol_ab
    out.append(Check(sid, "aberrant PC events", measured_ab, planted_ab, bar, ok))
    if rows[0]["visit"] == "week4":
        n_true = sum(int(float(r["n_nucleated"] or 0)) for r in rows)
        if planted_ab >= bars.lod_events:
            expected = "positive"
        elif n_true and bars.lod_events / n_true <= bars.required_sensitivity:
            expected = "negative"
        else:
            expected = "not_evaluable"
        got = mrd.get("mrd_status")
        out.append(Check(sid, "week-4 MRD status", got, expected, "exact", got == expected))
    return out


def _nk_checks(sid: str, rows: Sequence[dict], m: dict, bars: Bars) -> list[Check]:
    """rows: the sample's stained NK tubes (the first is checked)."""
    stain = rows[0]
    planted = _num(stain["nkg2a_pct_of_nk"])
    measured = _num((m.get("nk") or {}).get("nkg2a_pct"))
    ok = planted is not None and measured is not None and abs(measured - planted) <= bars.nkg2a_abs
    return [Check(sid, "NKG2A+ % of NK", _r(measured), _r(planted), f"±{bars.nkg2a_abs:g} points", ok)]


def _cart_checks(sid: str, rows: Sequence[dict], m: dict, bars: Bars) -> list[Check]:
    """rows: the sample's stained CAR-T tubes (the first is checked)."""
    r = rows[0]
    planted = _num(r["cart_per_ul"])
    events = _num(r["car_t_events"]) or 0.0
    measured = _num((m.get("cart") or {}).get("cells_per_ul"))
    if planted is None:
        return []
    if events < bars.cart_small:
        if events:
            per_event = planted / events
        else:  # no planted CAR+ events: one event's worth from the tube's own beads and volume
            c = m.get("cart") or {}
            beads, n_beads = _num(c.get("beads_per_tube")), _num(c.get("bead_count"))
            vol = _num(c.get("blood_volume_ul"))
            per_event = beads / n_beads / vol if beads and n_beads and vol else 0.0
        tol = bars.cart_abs_events * per_event
        bar = f"±{bars.cart_abs_events} events ({tol:.2f}/µL)"
    else:
        tol, bar = bars.cart_rel * planted, f"±{100 * bars.cart_rel:.0f}%"
    ok = measured is not None and abs(measured - planted) <= tol + 1e-9
    return [Check(sid, "CAR-T cells/µL", _r(measured), _r(planted), bar, ok)]


def _r(x):
    return None if x is None else round(float(x), 4)


def format_report(checks: Iterable[Check]) -> str:
    """A table, one line per check, and the closing ``N passed, M failed`` line."""
    checks = list(checks)
    lines = [f"{'sample':24s} {'read-out':20s} {'measured':>12s} {'planted':>12s}  {'bar':24s} verdict"]
    for c in checks:
        lines.append(f"{c.sample_id:24s} {c.readout:20s} {str(c.measured):>12s} {str(c.planted):>12s}  {c.bar:24s} "
                     f"{'PASS' if c.passed else 'FAIL'}")
    n_ok = sum(c.passed for c in checks)
    lines.append(f"{n_ok} passed, {len(checks) - n_ok} failed")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# Cohort level (issue #4): the summary numbers from results/cohort against planted truth and,
# for the demo, against the poster.
# ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class PosterNumbers:
    """Summary numbers a study reports (CT0596 poster by default): medians and ranges in %."""

    n: int = 8
    pc_median: float = 22.50
    pc_range: tuple[float, float] = (0.5, 53.5)
    nkg2a_median: float = 20.75
    nkg2a_range: tuple[float, float] = (5.0, 36.7)
    w4_mrd_negative: int = 6
    orr: int = 6
    cr_or_better: int = 3
    vgpr: int = 1
    pr: int = 2
    full_ld: int = 6
    full_ld_responders: int = 5


def _median(values: Sequence[float]) -> float | None:
    v = sorted(values)
    if not v:
        return None
    k = len(v) // 2
    return v[k] if len(v) % 2 else (v[k - 1] + v[k]) / 2


def _summary_checks(label: str, measured: Sequence[float], target_median: float | None,
                    target_range: tuple[float, float] | None, tol: float, source: str) -> list[Check]:
    out = []
    med = _median(measured)
    if target_median is not None:
        ok = med is not None and abs(med - target_median) <= tol
        out.append(Check(f"cohort ({source})", f"{label} median", _r(med), _r(target_median), f"±{tol:g} points", ok))
    if target_range is not None:
        for end, got, want in (("min", min(measured, default=None), target_range[0]),
                               ("max", max(measured, default=None), target_range[1])):
            ok = got is not None and abs(got - want) <= tol
            out.append(Check(f"cohort ({source})", f"{label} {end}", _r(got), _r(want), f"±{tol:g} points", ok))
    return out


def validate_cohort(results_dir: str | Path, truth_tsv: str | Path, poster: PosterNumbers | None = None,
                    *, tol_points: float = 1.0, bars: Bars = Bars(),
                    panels: Mapping[str, Panel] | str | Path | None = None) -> list[Check]:
    """Cohort read-outs (``results/cohort/patients.tsv`` and ``response_summary.tsv``) against the
    planted truth (medians and ranges of PC % and NKG2A % within ``tol_points``; week-4 MRD-negative
    count exact) and, when ``poster`` is given, against the study's published numbers. panels: as
    for :func:`validate` (the NK tubes are those whose panel feeds the ``nk`` read-out)."""
    results_dir = Path(results_dir)
    readout = _panel_readouts(panels)
    ptsv = results_dir / "cohort" / "patients.tsv"
    rtsv = results_dir / "cohort" / "response_summary.tsv"
    if not ptsv.is_file() or not rtsv.is_file():
        return [Check("cohort", "cohort tables", "missing", "present", "exists", False)]
    patients = _read_truth(ptsv)
    summary = {(r["group_by"], r["group"]): r for r in _read_truth(rtsv)}
    pc = [v for v in (_num(p["baseline_pc_pct"]) for p in patients) if v is not None]
    nkg2a = [v for v in (_num(p["baseline_nkg2a_pct"]) for p in patients) if v is not None]
    w4_neg = sum(p["w4_mrd_status"] == "negative" for p in patients)

    truth = [r for r in _read_truth(Path(truth_tsv)) if r.get("role", "stain") == "stain"]
    t_pc = {r["patient_id"]: _num(r["pc_pct_of_nucleated"]) for r in truth
            if r["visit"] == "baseline" and r["specimen"] == "BM"}
    t_nk = {r["patient_id"]: _num(r["nkg2a_pct_of_nk"]) for r in truth if readout.get(r["panel"]) == "nk"}
    t_neg = 0
    w4: dict[str, list[dict]] = {}
    for r in truth:
        if r["visit"] == "week4" and r["specimen"] == "BM":
            w4.setdefault(r["sample_id"], []).append(r)
    for rows in w4.values():
        a = sum(int(float(r["aberrant_pc"] or 0)) for r in rows)
        n = sum(int(float(r["n_nucleated"] or 0)) for r in rows)
        t_neg += a < bars.lod_events and n > 0 and bars.lod_events / n <= bars.required_sensitivity
    planted_pc = [v for v in t_pc.values() if v is not None]
    planted_nk = [v for v in t_nk.values() if v is not None]
    checks = [Check("cohort (planted)", "patients", len(patients), len({r["patient_id"] for r in truth}), "exact",
                    len(patients) == len({r["patient_id"] for r in truth}))]
    checks += _summary_checks("PC %", pc, _median(planted_pc),
                              (min(planted_pc), max(planted_pc)) if planted_pc else None, tol_points, "planted")
    checks += _summary_checks("NKG2A %", nkg2a, _median(planted_nk),
                              (min(planted_nk), max(planted_nk)) if planted_nk else None, tol_points, "planted")
    checks.append(Check("cohort (planted)", "week-4 MRD-negative", w4_neg, t_neg, "exact", w4_neg == t_neg))
    if poster is not None:
        overall = summary.get(("overall", "all"), {})
        full = summary.get(("lymphodepletion", "full"), {})
        checks.append(Check("cohort (poster)", "patients", len(patients), poster.n, "exact", len(patients) == poster.n))
        checks += _summary_checks("PC %", pc, poster.pc_median, poster.pc_range, tol_points, "poster")
        checks += _summary_checks("NKG2A %", nkg2a, poster.nkg2a_median, poster.nkg2a_range, tol_points, "poster")
        for label, got, want in (
            ("week-4 MRD-negative", w4_neg, poster.w4_mrd_negative),
            ("ORR (≥PR)", _int(overall.get("orr_n")), poster.orr),
            ("CR/sCR", _int(overall.get("cr_n")), poster.cr_or_better),
            ("VGPR", _int(overall.get("n_VGPR")), poster.vgpr),
            ("PR", _int(overall.get("n_PR")), poster.pr),
            ("full lymphodepletion", _int(full.get("n")), poster.full_ld),
            ("full lymphodepletion ≥PR", _int(full.get("orr_n")), poster.full_ld_responders),
        ):
            checks.append(Check("cohort (poster)", label, got, want, "exact", got == want))
    return checks


def _int(v) -> int | None:
    f = _num(v)
    return None if f is None else int(f)

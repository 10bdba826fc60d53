"""Validation against the simulator's planted truth (demo and test cohorts only).

This is the one module that reads truth: the simulator's ``truth.tsv`` beside the FCS files. The
analysis never imports it. Each check compares a measured read-out in ``results/samples/*/
metrics.json`` (:func:`validate`), in the cohort tables (:func:`validate_cohort`) or in the
timelines over time (:func:`validate_timelines`: ``results/cohort/mrd_timeline.tsv``,
``nk_timeline.tsv`` and the course columns of ``patients.tsv``) with the planted value and gives
a verdict against a bar (:class:`Bars`).
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

__all__ = ["Bars", "Check", "PosterNumbers", "format_report", "validate", "validate_cohort", "validate_timelines"]


@dataclass(frozen=True)
class Bars:
    """Accuracy bars (issue #3 defaults).

    pc_abs / pc_rel: PC% within max(pc_abs points, pc_rel × planted). nkg2a_abs: NKG2A+ % of NK
    within this many points. aberrant_rel / aberrant_abs / aberrant_small: aberrant-PC events within
    aberrant_rel × planted, or ±aberrant_abs events when planted < aberrant_small. cart_rel /
    cart_abs_events / cart_small: CAR-T cells/µL within cart_rel × planted, or within the cells/µL
    that ±cart_abs_events events represent when fewer than cart_small CAR+ events were planted
    (Poisson noise makes a relative bar meaningless there). lod_events / required_sensitivity:
    used to derive the expected MRD status. nk_count_rel / nk_count_abs_events / nk_count_small:
    NK cells/µL of an NK tube with counting beads, as for CAR-T. nk_recovery_visits: the measured
    nk_recovery_day may be this many scheduled NK visits (the patient's NK tubes with beads after
    infusion 1) from the planted one.
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
    nk_count_rel: float = 0.10
    nk_count_abs_events: int = 10
    nk_count_small: int = 50
    nk_recovery_visits: int = 1


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
    if rows[0]["visit"] in ("week4", "followup"):
        expected = _expected_mrd(rows, bars)
        got = mrd.get("mrd_status")
        label = "week-4 MRD status" if rows[0]["visit"] == "week4" else "MRD status"
        out.append(Check(sid, label, got, expected, "exact", got == expected))
    return out


def _expected_mrd(rows: Sequence[dict], bars: Bars) -> str:
    """The MRD status a marrow's planted events call for (its tubes pooled): positive at
    ≥ lod_events aberrant PCs, else negative when LOD / N reaches the required sensitivity, else
    not evaluable."""
    planted_ab = sum(int(float(r["aberrant_pc"] or 0)) for r in rows)
    n_true = sum(int(float(r["n_nucleated"] or 0)) for r in rows)
    if planted_ab >= bars.lod_events:
        return "positive"
    if n_true and bars.lod_events / n_true <= bars.required_sensitivity:
        return "negative"
    return "not_evaluable"


def _nk_checks(sid: str, rows: Sequence[dict], m: dict, bars: Bars) -> list[Check]:
    """rows: the sample's stained NK tubes (the first is checked): NKG2A+ % of NK and, for a tube
    with counting beads, NK cells/µL (``nk.cells_per_ul``)."""
    stain = rows[0]
    planted = _num(stain["nkg2a_pct_of_nk"])
    nk = m.get("nk") or {}
    measured = _num(nk.get("nkg2a_pct"))
    ok = planted is not None and measured is not None and abs(measured - planted) <= bars.nkg2a_abs
    out = [Check(sid, "NKG2A+ % of NK", _r(measured), _r(planted), f"±{bars.nkg2a_abs:g} points", ok)]
    count = _nk_count_check(sid, stain, _num(nk.get("cells_per_ul")), bars)
    return out + ([count] if count is not None else [])


def _nk_count_check(sid: str, row: Mapping, measured: float | None, bars: Bars) -> Check | None:
    """NK cells/µL of one NK tube against the truth (``nk_cells_per_ul``: NK events / bead events
    of the planted labels x beads / volume, equal to the planted curve's value up to rounding);
    None for a tube without beads (no truth column)."""
    planted = _num(row.get("nk_cells_per_ul"))
    if planted is None:
        return None
    events = _num(row.get("nk_cells")) or 0.0
    if 0 < events < bars.nk_count_small:
        tol = bars.nk_count_abs_events * planted / events
        bar = f"±{bars.nk_count_abs_events} events ({tol:.2f}/µL)"
    else:
        tol, bar = bars.nk_count_rel * planted, f"±{100 * bars.nk_count_rel:.0f}%"
    ok = measured is not None and abs(measured - planted) <= tol + 1e-9
    return Check(sid, "NK cells/µL", _r(measured), _r(planted), bar, ok)


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
    #: "PT01 has ongoing sCR and MRD negative until Month 8": (patient, day since infusion 1)
    #: that patients.tsv mrd_negative_through_day must reach.
    mrd_negative_until: tuple[str, int] | None = ("PT01", 240)


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
    count exact) and, when ``poster`` is given, against the study's published numbers (with
    ``mrd_negative_until``: patients.tsv ``mrd_negative_through_day`` of that patient at least that
    day). panels: as for :func:`validate` (the NK tubes are those whose panel feeds the ``nk``
    read-out; the planted NKG2A % is the baseline tube's)."""
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
    t_nk = {r["patient_id"]: _num(r["nkg2a_pct_of_nk"]) for r in truth
            if readout.get(r["panel"]) == "nk" and r["visit"] == "baseline"}
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
        if poster.mrd_negative_until is not None:
            pid, day = poster.mrd_negative_until
            row = next((p for p in patients if p["patient_id"] == pid), {})
            got = _int(row.get("mrd_negative_through_day"))
            checks.append(Check("cohort (poster)", f"{pid} MRD-negative until month {round(day / 30)}", got,
                                f"≥ {day}", f"mrd_negative_through_day ≥ {day}", got is not None and got >= day))
    return checks


def _int(v) -> int | None:
    f = _num(v)
    return None if f is None else int(f)


# ---------------------------------------------------------------------------------------------
# Over time (issue 13): the MRD and NK timelines and the per-patient courses against the truth.
# ---------------------------------------------------------------------------------------------

def _by_key(rows: Iterable[Mapping], key: str) -> dict[str, Mapping]:
    return {r[key]: r for r in rows}


def validate_timelines(results_dir: str | Path, truth_tsv: str | Path, bars: Bars = Bars(),
                       panels: Mapping[str, Panel] | str | Path | None = None) -> list[Check]:
    """The read-outs over time against the planted truth:

    - ``results/cohort/mrd_timeline.tsv`` (one row per marrow sample; columns ``sample_id``,
      ``day_since_infusion1``, ``mrd_status``): every marrow sample of the truth is there, on its
      day, with the status its planted events call for (exact; :func:`_expected_mrd`);
    - ``results/cohort/patients.tsv`` ``mrd_negative_through_day``: per patient, the day of the
      last post-infusion marrow when its expected status is negative (not-evaluable marrows
      skipped, as no assessment), else empty (exact);
    - ``results/cohort/nk_timeline.tsv`` (one row per stained NK tube; ``sample_id``,
      ``day_since_infusion1``, ``nk_cells_per_ul``, ``nk_count_reason``): each NK tube with
      counting beads has NK cells/µL within the bar of the truth's (``Bars.nk_count_*``); a tube
      without beads has no count and says why;
    - ``patients.tsv`` ``nk_recovery_day``: within ``Bars.nk_recovery_visits`` scheduled NK visits
      (the patient's NK tubes with beads after infusion 1) of the planted ``nk_recovery_day``
      (truth.tsv ``patient_nk_recovery_day``; not reached counts as one visit past the last); when
      there is no planted baseline count, empty.

    panels: as for :func:`validate` (the NK tubes are those whose panel feeds the ``nk`` read-out,
    the marrows those feeding ``pc_mrd``).
    """
    results_dir = Path(results_dir)
    readout = _panel_readouts(panels)
    cohort = results_dir / "cohort"
    files = {n: cohort / f"{n}.tsv" for n in ("mrd_timeline", "nk_timeline", "patients")}
    missing = [f.name for f in files.values() if not f.is_file()]
    if missing:
        return [Check("cohort", "timeline tables", f"missing {', '.join(missing)}", "present", "exists", False)]
    mrd = _by_key(_read_truth(files["mrd_timeline"]), "sample_id")
    nkt = _by_key(_read_truth(files["nk_timeline"]), "sample_id")
    patients = _by_key(_read_truth(files["patients"]), "patient_id")
    truth = [r for r in _read_truth(Path(truth_tsv)) if r.get("role", "stain") == "stain"]
    checks: list[Check] = []

    marrows: dict[str, list[dict]] = {}
    for r in truth:
        if readout.get(r["panel"]) == "pc_mrd":
            marrows.setdefault(r["sample_id"], []).append(r)
    expected_course: dict[str, list[tuple[int, str]]] = {}
    for sid, rows in sorted(marrows.items(), key=lambda kv: (kv[1][0]["patient_id"], _day1(kv[1][0]))):
        expected, day1 = _expected_mrd(rows, bars), _day1(rows[0])
        if day1 >= 1 and expected != "not_evaluable":
            expected_course.setdefault(rows[0]["patient_id"], []).append((day1, expected))
        got = mrd.get(sid)
        if got is None:
            checks.append(Check(sid, "MRD timeline", "missing", f"{expected} (day {day1})", "row exists", False))
            continue
        ok = got.get("mrd_status") == expected and _int(got.get("day_since_infusion1")) == day1
        checks.append(Check(sid, f"MRD timeline, day {day1}", got.get("mrd_status"), expected,
                            "exact (status and day)", ok))
    for pid in sorted({r["patient_id"] for r in truth}):
        course = sorted(expected_course.get(pid, []))
        want = course[-1][0] if course and course[-1][1] == "negative" else None
        got = _int((patients.get(pid) or {}).get("mrd_negative_through_day"))
        checks.append(Check(f"{pid} (patient)", "MRD-negative through day", got, want, "exact", got == want))

    nk_rows = [r for r in truth if readout.get(r["panel"]) == "nk"]
    for r in sorted(nk_rows, key=lambda r: (r["patient_id"], _day1(r))):
        sid, got = r["sample_id"], nkt.get(r["sample_id"])
        if got is None:
            checks.append(Check(sid, "NK timeline", "missing", f"day {_day1(r)}", "row exists", False))
            continue
        count = _nk_count_check(sid, r, _num(got.get("nk_cells_per_ul")), bars)
        if count is None:  # no beads: no count, and the reason
            reason = (got.get("nk_count_reason") or "").strip()
            ok = _num(got.get("nk_cells_per_ul")) is None and bool(reason)
            checks.append(Check(sid, "NK timeline, no count", got.get("nk_cells_per_ul") or "", "empty",
                                "empty, with nk_count_reason", ok))
            continue
        ok = count.passed and _int(got.get("day_since_infusion1")) == _day1(r)
        checks.append(Check(sid, f"NK timeline /µL, day {_day1(r)}", count.measured, count.planted,
                            count.bar + " and day", ok))

    for pid in sorted({r["patient_id"] for r in truth}):
        first = next(r for r in truth if r["patient_id"] == pid)
        planted = _int(first.get("patient_nk_recovery_day"))
        got = _int((patients.get(pid) or {}).get("nk_recovery_day"))
        if _num(first.get("patient_nk_baseline_cells_per_ul")) is None:
            checks.append(Check(f"{pid} (patient)", "NK recovery day", got, None, "empty (no baseline count)",
                                got is None))
            continue
        visits = sorted({_day1(r) for r in nk_rows if r["patient_id"] == pid and _day1(r) > 0
                         and _num(r.get("nk_cells_per_ul")) is not None})
        pos = {d: i for i, d in enumerate(visits)}
        want_i = pos.get(planted, len(visits)) if planted is not None else len(visits)
        got_i = pos.get(got) if got is not None else len(visits)
        ok = got_i is not None and abs(got_i - want_i) <= bars.nk_recovery_visits
        checks.append(Check(f"{pid} (patient)", "NK recovery day", got, planted,
                            f"±{bars.nk_recovery_visits} NK visit(s) of {visits}", ok))
    return checks


def _day1(row: Mapping) -> int:
    """A truth row's day since infusion 1 (``day`` for a truth written before the column)."""
    v = _int(row.get("day_since_infusion1"))
    return v if v is not None else int(float(row["day"]))

"""Cohort simulator: FCS tubes with planted, saved truths, from a BD FACSCanto-like instrument
(the default) or another lab's Beckman-like one (the design's ``instrument:``, see
:mod:`mrdflow.demo._instrument`), with today's biology or a profile (the design's ``biology:``,
see :mod:`mrdflow.demo._biology`).

Every tube listed in a sample sheet is generated from a design file (planted truths per patient)
and written as FCS 3.1 with, beside it, ``<name>.labels.npz`` (per-event uint8 population labels,
the population names and a clog mask) and ``<name>.truth.json`` (counts and planted read-outs).
A cohort-level ``truth.tsv`` collects one row per file, and repeats on each of a patient's rows the
per-patient truths over time (``patient_*``: the planted baseline NK count and ``nk_recovery_day``,
:func:`mrdflow.demo._planted.patient_truths`). Truth is for validation only; the analysis never
reads it.

Over time (a design's ``bm_followup``, ``schedule.nk_days``, ``nk_tube``, ``nk_kinetics`` and
``nkg2a_cart_relation``; see resources/demo/design.yaml): later marrows are planted like week-4
ones; a PB NK tube with counting beads (panel pb_nk_beads) is whole blood in the host's proportions
of its day, so NK events / bead events x beads / volume gives the planted NK cells/uL (its truth has
both, ``nk_cells_per_ul`` from the labels and ``nk_cells_per_ul_planted``); the CAR-T tubes then
hold the same host NK cells.

Signal model (per event): scatter (FSC-A, FSC-H, SSC-A) and per-marker specific fluorescence are
log-normal per population (a population may be a mixture, e.g. CD27+ and CD27- memory/naive B
cells), plus per-detector autofluorescence; the true fluorescence is spilled into neighbouring
detectors with the file's ``$SPILLOVER`` matrix (observed = true @ S), then electronic + photon
noise is added and a per-detector baseline subtracted, so unstained cells sit around 0 with
negative values, and values saturate at ``$PnR``-1. Doublets are sums of two cells (FSC-A adds,
FSC-H grows less), dead cells are shrunken, dimmed, viability-dye-bright cells, debris is low-FSC
rubbish. An optional clog segment lowers the event rate and drifts the signals. Counting beads are
bright in all channels, brightest in APC (their own channel); with the design's ``cart_tube:
{bead_channel: none}`` the file has no bead channel and the beads are that bright in every one.

Randomness: a numpy Generator per file, seeded from (cohort seed, sample id, tube); events are
generated in chunks (``CHUNK`` events) from spawned child seeds, so a file is reproducible alone
and memory stays bounded by the chunk size (plus the uint8 labels and float64 times).
"""

from __future__ import annotations

import argparse
import csv
import datetime as _dt
import hashlib
import json
import math
import os
import sys
import time as _time
import zlib
from collections.abc import Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Any

import numpy as np

from mrdflow.io import format_spillover, write_fcs

from ._biology import effective_patient
from ._design import (
    _REPO,
    PANELS_DIR,
    SAMPLE_COLUMNS,
    _load_panel,
    _Panel,
    bead_channel,
    load_design,
    make_samples,
    read_samples_tsv,
    write_samples_tsv,
)
from ._events import _chunks, _event_times, _make_ctx
from ._instrument import TIMESTEP, Instrument, instrument_for, spillover_matrix
from ._planted import (
    _bm_counts,
    _cart_counts,
    _day_since_infusion1,
    _n_events,
    _nk_counts,
    cart_concentration,
    patient_truths,
)
from ._populations import (
    _KIND,
    DEFAULT_ABERRANT,
    NUCLEATED_DEFINITION,
    NUCLEATED_EXCLUDE,
    POPULATIONS,
    _specs_for,
)

__all__ = [
    "SIM_VERSION",
    "SAMPLE_COLUMNS",
    "POPULATIONS",
    "NUCLEATED_EXCLUDE",
    "cart_concentration",
    "load_design",
    "make_samples",
    "simulate_file",
    "simulate_cohort",
    "spillover_matrix",
    "main",
]

SIM_VERSION = "1.0"
CHUNK = 500_000  # events generated per chunk (bounds memory; each chunk has its own seed)
_RATE = {"bm": 6000, "nk": 2500, "cart": 1500}  # mean event rate per tube kind (events/s)


def _seed_seq(seed: int, sample_id: str, tube: str) -> np.random.SeedSequence:
    return np.random.SeedSequence([int(seed), zlib.crc32(sample_id.encode()),
                                   zlib.crc32(tube.encode())])


def _fingerprint(row: Mapping, p: Mapping, design: Mapping, seed: int, scale: float) -> str:
    keep = {k: design.get(k) for k in ("events", "schedule", "cart_tube", "host_blood",
                                       "instrument", "clog_files")}
    for k in ("biology", "nk_tube", "nk_kinetics", "nkg2a_cart_relation"):
        if k in design:  # only where a design has one: today's fingerprints stay as they were
            keep[k] = design[k]
    blob = json.dumps({"v": SIM_VERSION, "row": {k: str(row.get(k, "")) for k in SAMPLE_COLUMNS},
                       "patient": p, "design": keep, "seed": seed, "scale": scale},
                      sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _date(p: Mapping, row: Mapping) -> _dt.date:
    inf = p["infusions"][int(row.get("infusion") or 1) - 1]
    d0 = inf.get("date")
    if d0 is None:
        d0 = _dt.date.fromisoformat(str(p["infusions"][0]["date"])) + _dt.timedelta(
            days=int(inf.get("day", 0)))
    elif not isinstance(d0, _dt.date):
        d0 = _dt.date.fromisoformat(str(d0))
    return d0 + _dt.timedelta(days=int(row["day"]))


def _up_to_date(truth_path: Path, fcs: Path, labels_path: Path, fp: str) -> dict | None:
    """The saved truth when a tube's FCS, labels and truth exist and the truth has fingerprint
    ``fp`` (marked ``skipped``), else None."""
    if truth_path.exists() and fcs.exists() and labels_path.exists():
        try:
            old = json.loads(truth_path.read_text())
            if old.get("fingerprint") == fp:
                old["skipped"] = True
                return old
        except (OSError, ValueError):
            pass
    return None


def _counts(kind: str, p: Mapping, design: Mapping, row: Mapping, n_target: int,
            rng: np.random.Generator, beads: bool = False) -> tuple[dict[str, int], dict]:
    """Events per population of one tube (all of the kind's populations) and the planted values.
    ``beads``: the tube's panel has a counting-bead channel (NK tubes: whole blood with beads)."""
    if kind == "bm":
        counts, planted = _bm_counts(p, row["visit"], n_target, row["tube"], _day_since_infusion1(p, row))
    elif kind == "nk":
        counts, planted = _nk_counts(p, n_target, design, row, beads)
    else:
        counts, planted = _cart_counts(p, design, row, n_target, rng)
    return {n: int(counts.get(n, 0)) for n in POPULATIONS[kind]}, planted


def _unstained(row: Mapping) -> list[str]:
    """Markers an FMO tube leaves unstained (none for a stained tube)."""
    unstained = []
    if row.get("role") == "fmo" or row["tube"] == "nk_fmo":
        unstained = [m for m in str(row.get("fmo_marker") or "CD159a").replace(";", ",").split(",")
                     if m.strip()]
        unstained = [m.strip() for m in unstained]
    return unstained


def _clog_segment(design: Mapping, row: Mapping, n: int,
                  rng: np.random.Generator) -> tuple[int, int] | None:
    """Event indices [start, end) of the tube's clog, when the design lists its file stem."""
    stem_name = Path(row["fcs"]).stem
    clog = None
    clog_cfg = (design.get("clog_files") or {})
    if isinstance(clog_cfg, list):
        clog_cfg = {k: {} for k in clog_cfg}
    if stem_name in clog_cfg and n >= 1000:
        c = clog_cfg[stem_name] or {}
        i0 = int(n * float(c.get("start", rng.uniform(0.35, 0.7))))
        i1 = min(n, i0 + max(50, int(n * float(c.get("length", 0.04)))))
        clog = (i0, i1)
    return clog


def _hms(s: int) -> str:
    """Seconds since midnight as hh:mm:ss."""
    return f"{s // 3600 % 24:02d}:{s // 60 % 60:02d}:{s % 60:02d}"


def _fcs_text(row: Mapping, p: Mapping, instrument: Instrument, panel: _Panel, spill: np.ndarray,
              unstained: Sequence[str], times: np.ndarray,
              rng: np.random.Generator) -> tuple[list[str], list[str | None], dict[str, Any], float]:
    """The FCS file's $PnN and $PnS names, its TEXT keywords, and the acquisition time (s)."""
    n = times.shape[0]
    inst = instrument.text
    date = _date(p, row)
    btim_s = int(rng.uniform(8.5, 16.5) * 3600)
    dur = float(times[-1]) * TIMESTEP if n else 0.0
    etim_s = btim_s + int(math.ceil(dur))
    detectors = [instrument.detector(f, d) for f, d in zip(panel.fluors, panel.detectors)]
    fsc_a, fsc_h, ssc_a, time_name = instrument.scatter_names
    pnn = [fsc_a, fsc_h, ssc_a, *detectors, time_name]
    pns: list[str | None] = [None, None, None]
    for m, f in zip(panel.markers, panel.fluors):
        blank = m in unstained or m in instrument.blank_pns
        pns.append(None if blank else f"{m} {instrument.reagent(f)}")
    pns.append(None)
    meta: dict[str, Any] = {
        "$CYT": inst["cyt"], "$CYTSN": inst["cytsn"], "$INST": inst["inst"],
        "CREATOR": f"mrdflow-simulate {SIM_VERSION}",
        "$DATE": date.strftime("%d-%b-%Y").upper(), "$BTIM": _hms(btim_s), "$ETIM": _hms(etim_s),
        "$TIMESTEP": f"{TIMESTEP}", "$SRC": row["sample_id"], "$FIL": Path(row["fcs"]).name,
        "TUBE NAME": row["tube"], "EXPERIMENT NAME": f"CT0596 {row['panel']}",
        "$SPILLOVER": format_spillover(detectors, spill),
        "$ABRT": "0", "$LOST": "0",
    }
    for i in range(1, len(pnn)):  # every parameter but Time (the last)
        key = "FSC" if i <= 2 else "SSC" if i == 3 else panel.fluors[i - 4]
        v = instrument.voltage(key)
        if v:
            meta[f"$P{i}V"] = str(v)
    return pnn, pns, meta, dur


def simulate_file(row: Mapping, design: Mapping, outdir: str | os.PathLike, seed: int = 596,
                  events_scale: float = 1.0, force: bool = False) -> dict:
    """Simulate one tube (a sample-sheet row). Returns its truth dict (also written as JSON)."""
    outdir = Path(outdir)
    pid = row["patient_id"]
    p = design["patients"][pid]
    fcs = outdir / row["fcs"]
    stem = fcs.with_suffix("")
    truth_path = Path(str(stem) + ".truth.json")
    labels_path = Path(str(stem) + ".labels.npz")
    fp = _fingerprint(row, p, design, seed, events_scale)
    if not force:
        old = _up_to_date(truth_path, fcs, labels_path, fp)
        if old is not None:
            return old
    if truth_path.exists():  # a stale truth must never sit beside a new FCS
        truth_path.unlink()

    # Random draws, in this order, from the file's generator: CAR-T counts, label shuffle, clog
    # start, event times, acquisition start; then the chunks, each from its own spawned seed.
    t_start = _time.perf_counter()
    panel = _load_panel(row["panel"], Path(design.get("panels_dir", PANELS_DIR)))
    kind = _KIND[row["panel"]]
    shared_beads = kind == "cart" and bead_channel(design) == "none"
    if shared_beads:  # no Beads channel: the beads are bright on every other one
        panel = panel.without("Beads")
    bead_markers = panel.markers if shared_beads else ()
    inst = instrument_for(design)
    p = effective_patient(design, pid, p)  # the biology's defaults where the patient sets none
    main_seed, chunk_root = _seed_seq(seed, row["sample_id"], row["tube"]).spawn(2)
    rng = np.random.default_rng(main_seed)
    counts, planted = _counts(kind, p, design, row, _n_events(design, row, p, events_scale), rng,
                              beads=kind == "nk" and "Beads" in panel.markers)
    names = POPULATIONS[kind]
    unstained = _unstained(row)
    specs = _specs_for(kind, p, row["tube"], bead_markers, inst.shifts(bead_markers))
    ctx = _make_ctx(panel, kind, counts, specs, unstained, inst)

    labels = np.repeat(np.arange(len(names), dtype=np.uint8), [counts[n] for n in names])
    rng.shuffle(labels)
    n = int(labels.shape[0])
    clog = _clog_segment(design, row, n, rng)
    times = _event_times(rng, n, float(_RATE[kind]), clog)
    clog_mask = np.zeros(n, dtype=bool)
    if clog is not None:
        clog_mask[clog[0]:clog[1]] = True
    pnn, pns, meta, dur = _fcs_text(row, p, inst, panel, ctx.spill, unstained, times, rng)

    seeds = chunk_root.spawn(max(1, math.ceil(n / CHUNK)))
    fcs.parent.mkdir(parents=True, exist_ok=True)
    t_range = max(inst.pnr, 2 ** math.ceil(math.log2(float(times[-1]) + 2)))  # Time may outrun it
    pnr = [inst.pnr] * (len(pnn) - 1) + [t_range]
    write_fcs(fcs, _chunks(ctx, labels, times, clog, seeds, CHUNK), pnn, pns, meta, pnr=pnr)

    tmp = labels_path.with_name("." + labels_path.name + ".part.npz")
    np.savez_compressed(tmp, labels=labels, names=np.array(names), clog=clog_mask)
    os.replace(tmp, labels_path)

    real = {nm: int(c) for nm, c in zip(names, np.bincount(labels, minlength=len(names)))}
    provenance = {"seed": int(seed), "events_scale": float(events_scale),
                  "simulator_version": SIM_VERSION, "fingerprint": fp}
    truth = _truth(row, p, kind, real, planted, unstained, clog, times, dur, provenance)
    truth.update(_profiles_truth(inst, panel, p))
    truth["seconds_to_simulate"] = round(_time.perf_counter() - t_start, 3)
    tmp = truth_path.with_name("." + truth_path.name + ".part")
    tmp.write_text(json.dumps(truth, indent=1, default=float))
    os.replace(tmp, truth_path)
    return truth


# --------------------------------------------------------------------------------------------
# Truth (per file)
# --------------------------------------------------------------------------------------------


def _truth(row: Mapping, p: Mapping, kind: str, real: Mapping[str, int], planted: Mapping,
           unstained: Sequence[str], clog: tuple[int, int] | None, times: np.ndarray, dur: float,
           provenance: Mapping[str, Any]) -> dict[str, Any]:
    """A tube's truth: identity, the events per population, the planted values, the clog (Time
    channel units) and the kind's read-outs computed from the labels. dur: acquisition (s)."""
    nucleated = sum(c for nm, c in real.items() if nm not in NUCLEATED_EXCLUDE)
    truth: dict[str, Any] = {
        "file": row["fcs"], "sample_id": row["sample_id"], "patient_id": row["patient_id"],
        "specimen": row["specimen"], "visit": row["visit"], "day": int(row["day"]),
        "infusion": int(row.get("infusion") or 1), "day_since_infusion1": _day_since_infusion1(p, row),
        "tube": row["tube"], "panel": row["panel"],
        "role": row.get("role", "stain"), **provenance, "n_events": int(times.shape[0]),
        "populations": list(real), "counts": dict(real),
        "nucleated_definition": NUCLEATED_DEFINITION, "n_nucleated": nucleated,
        "planted": planted, "unstained_markers": unstained,
        "clog": {"present": clog is not None,
                 "event_start": clog[0] if clog else None, "event_end": clog[1] if clog else None,
                 "time_start": float(times[clog[0]]) if clog else None,
                 "time_end": float(times[clog[1] - 1]) if clog else None,
                 "time_units": f"Time channel units ($TIMESTEP {TIMESTEP} s)"},
        "acquisition_s": dur,
    }
    if kind == "bm":
        truth.update(_bm_truth(row, p, real, nucleated))
    elif kind == "nk":
        truth.update(_nk_truth(row, real, planted))
    else:
        truth.update(_cart_truth(real, planted))
    return truth


def _profiles_truth(inst: Instrument, panel: _Panel, p: Mapping) -> dict[str, Any]:
    """The instrument and biology a tube was simulated with, where they are not today's
    (``bd`` and ``default`` tubes carry neither key): profile names, the per-marker position
    shifts (decades), $PnR, the $PnN per marker and the biology knobs in force."""
    out: dict[str, Any] = {}
    if inst.name != "bd":
        out["instrument"] = {
            "profile": inst.name, "pnr": inst.pnr, "scatter_gain": inst.scatter_gain,
            "fluorescence_gain": inst.fluor_gain, "marker_shift_log10": inst.shifts(panel.markers),
            "detectors": {m: inst.detector(f, d) for m, f, d in
                          zip(panel.markers, panel.fluors, panel.detectors)},
            "blank_pns": [m for m in panel.markers if m in inst.blank_pns],
        }
    if "biology" in p:
        out["biology"] = dict(p["biology"])
    return out


def _bm_truth(row: Mapping, p: Mapping, real: Mapping[str, int], nucleated: int) -> dict[str, Any]:
    """Plasma-cell read-outs of a marrow tube (percentages of nucleated cells, event counts)."""
    pcn = real["pc_normal_kappa"] + real["pc_normal_lambda"]
    return dict(
        pc_pct_of_nucleated=100 * (pcn + real["pc_aberrant"]) / nucleated if nucleated else 0,
        aberrant_pc=real["pc_aberrant"], normal_pc=pcn,
        aberrant_pct_of_nucleated=100 * real["pc_aberrant"] / nucleated if nucleated else 0,
        normal_pc_kappa=real["pc_normal_kappa"], normal_pc_lambda=real["pc_normal_lambda"],
        normal_pc_kappa_lambda_ratio=(real["pc_normal_kappa"] / real["pc_normal_lambda"]
                                      if real["pc_normal_lambda"] else None),
        aberrant_light_chain=str(p.get("light_chain", "kappa")).lower(),
        aberrant_phenotype={**DEFAULT_ABERRANT, **(p.get("aberrant_phenotype") or {})},
        light_chains_measured=row["panel"] == "ngf_tube2",
        hemodilution_markers={k: real[k] for k in ("mast_cell", "b_precursor", "erythroblast")},
    )


def _pct(a: float, b: float) -> float | None:
    return 100 * a / b if b else None


def _nk_truth(row: Mapping, real: Mapping[str, int], planted: Mapping | None = None) -> dict[str, Any]:
    """NK read-outs of a PB NK tube (NKG2A+ % of NK and of its subsets, NK % of lymphocytes) and,
    for a tube with counting beads, NK cells/uL from the labels beside the planted value."""
    nk_pos_b, nk_neg_b = real["nk_bright_nkg2a_pos"], real["nk_bright_nkg2a_neg"]
    nk_pos_d, nk_neg_d = real["nk_dim_nkg2a_pos"], real["nk_dim_nkg2a_neg"]
    nk_all = nk_pos_b + nk_neg_b + nk_pos_d + nk_neg_d
    lymph = nk_all + real["t_nkg2a_neg"] + real["t_nkg2a_pos"] + real["b_cell"]
    return dict(
        nk_cells=nk_all, lymphocytes=lymph,
        lymphocyte_definition="viable single T + NK + B cells",
        nkg2a_pct_of_nk=_pct(nk_pos_b + nk_pos_d, nk_all),
        nkg2a_pct_of_nk_bright=_pct(nk_pos_b, nk_pos_b + nk_neg_b),
        nkg2a_pct_of_nk_dim=_pct(nk_pos_d, nk_pos_d + nk_neg_d),
        nk_pct_of_lymphocytes=_pct(nk_all, lymph),
        nk_bright_pct_of_nk=_pct(nk_pos_b + nk_neg_b, nk_all),
        fmo=row["tube"] == "nk_fmo",
    ) | (_nk_count_truth(nk_all, real.get("bead", 0), planted) if planted and "beads_per_tube" in planted else {})


def _nk_count_truth(nk_all: int, beads: int, planted: Mapping) -> dict[str, Any]:
    """NK cells/uL of an NK tube with counting beads: from the labels (NK events / bead events x
    beads_per_tube / blood_volume_ul) and as planted (the host's curve on that day)."""
    return dict(
        bead_events=beads,
        nk_cells_per_ul=(nk_all / beads * planted["beads_per_tube"] / planted["blood_volume_ul"]
                         if beads else None),
        nk_cells_per_ul_planted=planted["nk_cells_per_ul"],
        nk_cells_per_ul_definition="NK events (CD3- dump- CD56+ and/or CD16+ viable lymphocytes) / bead "
                                   "events x beads_per_tube / blood_volume_ul (from the planted labels)",
        nkg2a_pct_of_nk_planted=planted["nkg2a_pct_of_nk"],
        beads_per_tube=planted["beads_per_tube"], blood_volume_ul=planted["blood_volume_ul"],
    )


def _cart_truth(real: Mapping[str, int], planted: Mapping) -> dict[str, Any]:
    """CAR-T read-outs of a PB CAR-T tube (events, CAR+ % of CD3, cells/uL from the labels)."""
    car = real["cart_cd4"] + real["cart_cd8"]
    cd3 = car + real["t_cd4"] + real["t_cd8"]
    beads = real["bead"]
    return dict(
        car_t_events=car, cd3_events=cd3, bead_events=beads,
        car_pct_of_cd3=100 * car / cd3 if cd3 else None,
        cart_per_ul_planted=planted["cart_per_ul"],
        cart_per_ul=(car / beads * planted["beads_per_tube"] / planted["blood_volume_ul"]
                     if beads else None),
        cart_per_ul_definition="CAR+ CD3+ viable events / bead events x beads_per_tube / "
                               "blood_volume_ul (from the planted labels)",
        beads_per_tube=planted["beads_per_tube"], blood_volume_ul=planted["blood_volume_ul"],
    )


# --------------------------------------------------------------------------------------------
# Cohort
# --------------------------------------------------------------------------------------------
#: Per-patient truths in truth.tsv (the same value on every row of the patient).
PATIENT_FIELDS = ["patient_nk_baseline_cells_per_ul", "patient_nk_recovery_level", "patient_nk_recovery_day",
                  "patient_nk_recovery_reason"]
_TSV_FIELDS = [
    "file", "sample_id", "patient_id", "specimen", "visit", "day", "infusion", "tube", "panel",
    "role", "n_events", "n_nucleated", "pc_pct_of_nucleated", "aberrant_pc", "normal_pc",
    "normal_pc_kappa", "normal_pc_lambda", "aberrant_light_chain", "nkg2a_pct_of_nk",
    "nkg2a_pct_of_nk_bright", "nkg2a_pct_of_nk_dim", "nk_pct_of_lymphocytes", "car_t_events",
    "cd3_events", "bead_events", "car_pct_of_cd3", "cart_per_ul", "cart_per_ul_planted",
    "clog_present", "clog_time_start", "clog_time_end",
    # over time (issue 13): the tube's day since infusion 1; NK tubes with counting beads: NK
    # events, NK cells/uL from the labels and as planted, the planted NKG2A+ % of the day
    "day_since_infusion1", "nk_cells", "nk_cells_per_ul", "nk_cells_per_ul_planted", "nkg2a_pct_of_nk_planted",
    # per patient, repeated on each of the patient's rows (mrdflow.demo._planted.patient_truths)
    *PATIENT_FIELDS,
]


def _tsv_row(t: Mapping, patient: Mapping | None = None) -> dict:
    r = {k: t.get(k, "") for k in _TSV_FIELDS}
    for k in PATIENT_FIELDS:
        r[k] = (patient or {}).get(k.removeprefix("patient_"), "")
    r["clog_present"] = t["clog"]["present"]
    r["clog_time_start"] = t["clog"]["time_start"] if t["clog"]["present"] else ""
    r["clog_time_end"] = t["clog"]["time_end"] if t["clog"]["present"] else ""
    return {k: ("" if v is None else (f"{v:.6g}" if isinstance(v, float) else v))
            for k, v in r.items()}


def _run_one(args):
    row, design, outdir, seed, scale = args
    return simulate_file(row, design, outdir, seed, scale)


def simulate_cohort(samples_tsv, design_yaml, outdir, seed: int = 596, events_scale: float = 1.0,
                    jobs: int = 1, only: Sequence[str] | str | None = None,
                    verbose: bool = False, overrides: Mapping[str, Any] | None = None) -> list[dict]:
    """Write every file of the sample sheet under ``outdir`` (+ labels and truth per file and
    ``truth.tsv``). Files whose truth matches (same seed, scale, design, simulator) are skipped.
    ``only`` restricts to sample ids, patient ids or fcs paths. ``overrides`` replace top-level
    keys of the design (``instrument``, ``biology``): the same cohort acquired on another
    instrument or with another biology, without a copy of the design."""
    design = with_overrides(load_design(design_yaml), overrides)
    rows = read_samples_tsv(samples_tsv)
    if only:
        sel = {only} if isinstance(only, str) else set(only)
        rows = [r for r in rows if r["sample_id"] in sel or r["patient_id"] in sel
                or r["fcs"] in sel]
    scale = float(events_scale) * float(design.get("events_scale", 1.0))
    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    work = sorted(rows, key=lambda r: -_n_events(design, r, design["patients"][r["patient_id"]],
                                                 scale))
    truths: dict[str, dict] = {}
    if jobs > 1 and len(work) > 1:
        with ProcessPoolExecutor(max_workers=jobs) as ex:
            futs = {ex.submit(_run_one, (r, design, outdir, seed, scale)): r for r in work}
            for f in as_completed(futs):
                t = f.result()
                truths[t["file"]] = t
                if verbose:
                    print(f"{t['file']}: {t['n_events']} events", file=sys.stderr)
    else:
        for r in work:
            t = simulate_file(r, design, outdir, seed, scale)
            truths[t["file"]] = t
            if verbose:
                print(f"{t['file']}: {t['n_events']} events", file=sys.stderr)
    ordered = [truths[r["fcs"]] for r in rows]
    # truth.tsv lists every file present with a truth (so `only` runs keep the others' rows)
    all_truth = {}
    for r in read_samples_tsv(samples_tsv):
        tp = outdir / (str(Path(r["fcs"]).with_suffix("")) + ".truth.json")
        if tp.exists():
            all_truth[r["fcs"]] = json.loads(tp.read_text())
    per_patient = patient_truths(design, read_samples_tsv(samples_tsv))
    tmp = outdir / ".truth.tsv.part"
    with open(tmp, "w", newline="") as fh:
        w = csv.DictWriter(fh, _TSV_FIELDS, delimiter="\t", lineterminator="\n")
        w.writeheader()
        for t in all_truth.values():
            w.writerow(_tsv_row(t, per_patient.get(t["patient_id"])))
    os.replace(tmp, outdir / "truth.tsv")
    return ordered


#: Design keys a run may override (config ``simulate.instrument`` / ``simulate.biology``).
OVERRIDABLE = ("instrument", "biology")


def with_overrides(design: dict, overrides: Mapping[str, Any] | None) -> dict:
    """``design`` with its top-level ``instrument``/``biology`` replaced by ``overrides``' (a
    value of None leaves the design's); other keys are refused."""
    extra = set(overrides or {}) - set(OVERRIDABLE)
    if extra:
        raise ValueError(f"design overrides {sorted(extra)} are not among {list(OVERRIDABLE)}")
    return {**design, **{k: v for k, v in (overrides or {}).items() if v is not None}}


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="mrdflow-simulate",
                                 description="Simulate the FCS files of a sample sheet "
                                             "(with per-file truth) from a design file.")
    ap.add_argument("--samples", default=str(_REPO / "resources/demo/samples.tsv"))
    ap.add_argument("--design", default=str(_REPO / "resources/demo/design.yaml"))
    ap.add_argument("--out", required=False, default="data/demo")
    ap.add_argument("--seed", type=int, default=596)
    ap.add_argument("--events-scale", type=float, default=1.0)
    ap.add_argument("--jobs", type=int, default=1)
    ap.add_argument("--only", nargs="*", help="sample ids, patient ids or fcs paths")
    ap.add_argument("--write-samples", metavar="TSV",
                    help="write the sample sheet implied by --design to TSV and exit")
    ap.add_argument("--instrument", help="instrument profile in place of the design's (bd, beckman)")
    ap.add_argument("--biology", help="biology profile in place of the design's (default, anti_cd38)")
    ap.add_argument("-q", "--quiet", action="store_true")
    a = ap.parse_args(argv)
    overrides = {"instrument": a.instrument, "biology": a.biology}
    if a.write_samples:
        write_samples_tsv(make_samples(with_overrides(load_design(a.design), overrides)), a.write_samples)
        return 0
    t0 = _time.perf_counter()
    ts = simulate_cohort(a.samples, a.design, a.out, seed=a.seed, events_scale=a.events_scale,
                         jobs=a.jobs, only=a.only, verbose=not a.quiet, overrides=overrides)
    made = sum(1 for t in ts if not t.get("skipped"))
    print(f"{len(ts)} files ({made} simulated, {len(ts) - made} up to date) in "
          f"{_time.perf_counter() - t0:.1f} s -> {a.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())

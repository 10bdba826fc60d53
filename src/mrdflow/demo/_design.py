"""Demo design and sample sheet: the planted-truth design file (one entry per patient), the panels
the simulated tubes use, and the sample sheet (one row per tube) a design implies."""

from __future__ import annotations

import csv
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import yaml

SAMPLE_COLUMNS = [
    "sample_id", "patient_id", "specimen", "visit", "day", "infusion", "tube", "panel", "role",
    "fmo_marker", "fcs", "beads_per_tube", "blood_volume_ul",
]  # fmo_marker (the marker an FMO tube leaves unstained) as in workflow/schemas/samples.schema.yaml
TUBE_PANEL = {"ngf1": "ngf_tube1", "ngf2": "ngf_tube2", "nk": "pb_nk", "nk_fmo": "pb_nk",
              "cart": "pb_cart"}
#: The panel of an NK tube with counting beads (a design's ``nk_tube``): pb_nk plus beads on APC-A.
NK_BEADS_PANEL = "pb_nk_beads"

_REPO = Path(__file__).resolve().parents[3]
PANELS_DIR = _REPO / "resources" / "panels"


#: ``cart_tube: {bead_channel: ...}``: ``own`` (the default) gives the counting beads a channel of
#: their own (the panel's Beads detector); ``none`` writes no Beads channel: the beads are bright on
#: every fluorescence channel (CountBright-like) and a lab reads them on its markers' channels.
BEAD_CHANNELS = ("own", "none")


def bead_channel(design: Mapping) -> str:
    """The design's ``cart_tube.bead_channel`` (default ``own``); anything else is refused."""
    value = str((design.get("cart_tube") or {}).get("bead_channel", "own"))
    if value not in BEAD_CHANNELS:
        raise ValueError(f"design cart_tube.bead_channel: {value!r} is not one of {list(BEAD_CHANNELS)}")
    return value


def load_design(path: str | os.PathLike) -> dict:
    with open(path) as fh:
        d = yaml.safe_load(fh)
    if not isinstance(d, dict) or "patients" not in d:
        raise ValueError(f"{path}: a design needs a 'patients' mapping")
    return d


@dataclass
class _Panel:
    name: str
    markers: list[str]  # panel marker order = fluorescence parameter order
    fluors: list[str]
    detectors: list[str]

    def without(self, marker: str) -> _Panel:
        """The panel less ``marker`` (its channel is not written)."""
        keep = [i for i, m in enumerate(self.markers) if m != marker]
        return _Panel(self.name, [self.markers[i] for i in keep], [self.fluors[i] for i in keep],
                      [self.detectors[i] for i in keep])


def _load_panel(name: str, panels_dir: Path = PANELS_DIR) -> _Panel:
    with open(panels_dir / f"{name}.yaml") as fh:
        y = yaml.safe_load(fh)
    mk = list(y["markers"])
    return _Panel(name, mk, [y["markers"][m]["fluorochrome"] for m in mk],
                  [y["markers"][m]["detector"] for m in mk])


def _fmt_day(day: int) -> str:
    return f"D{day:03d}" if day >= 0 else f"Dm{-day:02d}"


def serial_days(follow_up_days: int, schedule: Mapping, window_end: int | None = None) -> list[int]:
    days = [d for d in schedule.get("serial_days", [0, 4, 7, 10, 14, 21, 28])]
    step = int(schedule.get("monthly_every", 30))
    end = follow_up_days if window_end is None else min(follow_up_days, window_end)
    d = step * 2
    while d <= end:
        days.append(d)
        d += step
    return [x for x in days if x <= end]


def infusion_starts(p: Mapping) -> list[int]:
    """Day (since infusion 1) of each of the patient's infusions."""
    return [int(inf.get("day", 0)) for inf in p.get("infusions", [])] or [0]


def infusion_of_day(p: Mapping, day: int) -> tuple[int, int]:
    """(infusion number, day since that infusion) of a day since infusion 1: the latest infusion
    given on or before it."""
    starts = infusion_starts(p)
    k = max((i for i, s in enumerate(starts) if s <= day), default=0)
    return k + 1, day - starts[k]


def nk_tube_config(design: Mapping) -> dict | None:
    """The design's ``nk_tube`` (counting beads in the PB NK tubes: ``beads_per_tube``,
    ``blood_volume_ul``), or None: NK tubes without beads (panel pb_nk), as before."""
    cfg = design.get("nk_tube")
    if not cfg:
        return None
    return {"beads_per_tube": cfg.get("beads_per_tube", 50000),
            "blood_volume_ul": cfg.get("blood_volume_ul", 50)}


def nk_days(design: Mapping, p: Mapping) -> list[int]:
    """The patient's serial NK days (since infusion 1): the patient's ``nk_days`` or the design's
    ``schedule.nk_days``, those from day 1 to the end of follow-up (a day-0 tube would count as
    the pre-infusion baseline)."""
    days = p.get("nk_days", (design.get("schedule") or {}).get("nk_days", []))
    fu = int(p["follow_up_days"])
    return sorted({int(d) for d in days or [] if 1 <= int(d) <= fu})


def followup_marrows(p: Mapping) -> list[dict]:
    """The patient's later marrows (``bm_followup``: entries with ``day`` since infusion 1 and the
    planted ``aberrant_level``), by day; each is a sample of visit ``followup``."""
    out = sorted((dict(m) for m in p.get("bm_followup") or []), key=lambda m: int(m["day"]))
    fu = int(p["follow_up_days"])
    for m in out:
        if not 1 <= int(m["day"]) <= fu:
            raise ValueError(f"bm_followup day {m['day']}: not within follow-up (1-{fu})")
    return out


def make_samples(design: Mapping) -> list[dict]:
    """The sample sheet rows (one per tube) implied by a design.

    Per patient: the baseline marrow (two NGF tubes), the baseline PB NK tube (and its FMO), the
    week-4 marrow, the later marrows (``bm_followup``), then the PB samples by infusion and day:
    the CAR-T tube of each serial day and, on the design's NK days (``schedule.nk_days``), an NK
    tube ``nk`` in the same sample when a CAR-T tube is drawn that day, else in a PB sample of its
    own. With a design ``nk_tube``, NK tubes carry counting beads (panel pb_nk_beads, the sheet's
    beads_per_tube and blood_volume_ul), the baseline one too unless the patient's
    ``nk.baseline_beads`` is false; its FMO tube is on the stained tube's panel."""
    sch = design.get("schedule", {})
    cart_cfg = design.get("cart_tube", {})
    nk_cfg = nk_tube_config(design)
    rows = []

    def row(sample_id, pid, specimen, visit, day, infusion, tube, stem, role="stain",
            panel=None, beads: Mapping | None = None):
        return {
            "sample_id": sample_id, "patient_id": pid, "specimen": specimen, "visit": visit,
            "day": day, "infusion": infusion, "tube": tube, "panel": panel or TUBE_PANEL[tube],
            "role": role, "fmo_marker": "CD159a" if role == "fmo" else "",
            "fcs": f"{pid}/{stem}.fcs",
            "beads_per_tube": beads["beads_per_tube"] if beads else "",
            "blood_volume_ul": beads["blood_volume_ul"] if beads else "",
        }

    cart_beads = {"beads_per_tube": cart_cfg.get("beads_per_tube", 50000),
                  "blood_volume_ul": cart_cfg.get("blood_volume_ul", 50)}

    def add(sample_id, pid, specimen, visit, day, infusion, tube):
        """A marrow tube (file ``<sample_id>_<tube>``)."""
        rows.append(row(sample_id, pid, specimen, visit, day, infusion, tube, f"{sample_id}_{tube}"))

    for pid, p in design["patients"].items():
        bday = int(p.get("baseline_day", sch.get("baseline_day", -5)))
        sid = f"{pid}_BM_baseline"
        add(sid, pid, "BM", "baseline", bday, 1, "ngf1")
        add(sid, pid, "BM", "baseline", bday, 1, "ngf2")
        sid = f"{pid}_PB_baseline_nk"
        nk = p.get("nk", {})
        base_beads = nk_cfg if nk_cfg is not None and nk.get("baseline_beads", True) else None
        panel = NK_BEADS_PANEL if base_beads else None
        rows.append(row(sid, pid, "PB", "baseline", bday, 1, "nk", sid, panel=panel,
                        beads=base_beads))
        if nk.get("fmo", False):
            rows.append(row(sid, pid, "PB", "baseline", bday, 1, "nk_fmo", f"{sid}_fmo", "fmo",
                            panel=panel, beads=base_beads))
        if "bm_week4" in p:
            wday = int(p["bm_week4"].get("day", sch.get("week4_day", 28)))
            sid = f"{pid}_BM_week4"
            add(sid, pid, "BM", "week4", wday, 1, "ngf1")
            add(sid, pid, "BM", "week4", wday, 1, "ngf2")
        for m in followup_marrows(p):
            sid = f"{pid}_BM_{_fmt_day(int(m['day']))}"
            add(sid, pid, "BM", "followup", int(m["day"]), 1, "ngf1")
            add(sid, pid, "BM", "followup", int(m["day"]), 1, "ngf2")
        fu = int(p["follow_up_days"])
        infs = p.get("infusions", [])
        pb: list[tuple[int, int, int, dict]] = []  # (infusion, day, tube order, row)
        for k, inf in enumerate(infs):
            start = int(inf.get("day", 0))
            nxt = int(infs[k + 1].get("day")) if k + 1 < len(infs) else None
            window = (nxt - start - 1) if nxt is not None else None
            days = inf.get("serial_days") or serial_days(fu - start, sch, window)
            for d in days:
                sid = f"{pid}_PB_I{k + 1}_{_fmt_day(int(d))}"
                visit = "serial" if d <= 28 else "followup"
                pb.append((k + 1, int(d), 0, row(sid, pid, "PB", visit, int(d), k + 1, "cart", sid,
                                                  beads=cart_beads)))
        for d1 in nk_days(design, p):
            k, d = infusion_of_day(p, d1)
            sid = f"{pid}_PB_I{k}_{_fmt_day(d)}"
            visit = "serial" if d <= 28 else "followup"
            pb.append((k, d, 1, row(sid, pid, "PB", visit, d, k, "nk", f"{sid}_nk",
                                    panel=NK_BEADS_PANEL if nk_cfg else None, beads=nk_cfg)))
        rows.extend(r for *_, r in sorted(pb, key=lambda e: e[:3]))
    return rows


def write_samples_tsv(rows: Sequence[Mapping], path: str | os.PathLike) -> None:
    with open(path, "w", newline="") as fh:
        w = csv.DictWriter(fh, SAMPLE_COLUMNS, delimiter="\t", lineterminator="\n")
        w.writeheader()
        for r in rows:
            w.writerow({k: r[k] for k in SAMPLE_COLUMNS})


def read_samples_tsv(path: str | os.PathLike) -> list[dict]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh, delimiter="\t"))


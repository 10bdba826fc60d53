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


def make_samples(design: Mapping) -> list[dict]:
    """The sample sheet rows (one per tube) implied by a design."""
    sch = design.get("schedule", {})
    cart_cfg = design.get("cart_tube", {})
    rows = []

    def add(sample_id, pid, specimen, visit, day, infusion, tube, role="stain", cart=False):
        if tube in ("nk", "cart"):
            stem = sample_id
        elif tube == "nk_fmo":
            stem = f"{sample_id}_fmo"
        else:
            stem = f"{sample_id}_{tube}"
        rows.append({
            "sample_id": sample_id, "patient_id": pid, "specimen": specimen, "visit": visit,
            "day": day, "infusion": infusion, "tube": tube, "panel": TUBE_PANEL[tube],
            "role": role, "fmo_marker": "CD159a" if role == "fmo" else "",
            "fcs": f"{pid}/{stem}.fcs",
            "beads_per_tube": cart_cfg.get("beads_per_tube", 50000) if cart else "",
            "blood_volume_ul": cart_cfg.get("blood_volume_ul", 50) if cart else "",
        })

    for pid, p in design["patients"].items():
        bday = int(p.get("baseline_day", sch.get("baseline_day", -5)))
        sid = f"{pid}_BM_baseline"
        add(sid, pid, "BM", "baseline", bday, 1, "ngf1")
        add(sid, pid, "BM", "baseline", bday, 1, "ngf2")
        sid = f"{pid}_PB_baseline_nk"
        add(sid, pid, "PB", "baseline", bday, 1, "nk")
        if p.get("nk", {}).get("fmo", False):
            add(sid, pid, "PB", "baseline", bday, 1, "nk_fmo", role="fmo")
        if "bm_week4" in p:
            wday = int(p["bm_week4"].get("day", sch.get("week4_day", 28)))
            sid = f"{pid}_BM_week4"
            add(sid, pid, "BM", "week4", wday, 1, "ngf1")
            add(sid, pid, "BM", "week4", wday, 1, "ngf2")
        fu = int(p["follow_up_days"])
        infs = p.get("infusions", [])
        for k, inf in enumerate(infs):
            start = int(inf.get("day", 0))
            nxt = int(infs[k + 1].get("day")) if k + 1 < len(infs) else None
            window = (nxt - start - 1) if nxt is not None else None
            days = inf.get("serial_days") or serial_days(fu - start, sch, window)
            for d in days:
                sid = f"{pid}_PB_I{k + 1}_{_fmt_day(int(d))}"
                add(sid, pid, "PB", "serial" if d <= 28 else "followup", int(d), k + 1, "cart",
                    cart=True)
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


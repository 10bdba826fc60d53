"""Inventory: one row per FCS file of the sample sheet, from a fast HEADER/TEXT scan.

For each tube: the checksum, FCS version, cytometer, events, parameters, acquisition date, whether
the panel's markers resolve on its channels, and a status (``ok``, ``missing``, ``unreadable``,
``panel_mismatch``) with the error text. Only allow-listed TEXT keywords reach the output.
"""

from __future__ import annotations

import csv
import datetime as dt
import hashlib
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from mrdflow.atomic import atomic_open
from mrdflow.config import Tube
from mrdflow.errors import PanelError
from mrdflow.io._header import FCSReadError, read_header
from mrdflow.panels import Panel, resolve_panel

__all__ = ["INVENTORY_TSV", "InventoryRow", "inventory", "parse_fcs_date", "sha256_file", "write_inventory"]

#: The inventory's file (rule ``inventory``), relative to the workflow's working directory.
INVENTORY_TSV = "results/inventory.tsv"

STATUS_OK = "ok"
STATUS_MISSING = "missing"
STATUS_UNREADABLE = "unreadable"
STATUS_PANEL = "panel_mismatch"


@dataclass(frozen=True)
class InventoryRow:
    """One FCS file as the inventory sees it (events and parameters as stated in TEXT)."""

    sample_id: str
    tube: str
    patient_id: str
    panel: str
    path: str
    sha256: str = ""
    size_bytes: int = 0
    fcs_version: str = ""
    cytometer: str = ""
    events: int | None = None
    parameters: int | None = None
    acquisition_date: str = ""
    status: str = STATUS_OK
    error: str = ""
    keywords: str = ""


def sha256_file(path: str | Path, block: int = 1 << 22) -> str:
    """SHA-256 of a file, read in 4 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(block):
            h.update(chunk)
    return h.hexdigest()


_DATE_FORMATS = ("%d-%b-%Y", "%d-%b-%y", "%Y-%m-%d", "%d/%m/%Y", "%m/%d/%Y", "%d.%m.%Y", "%Y/%m/%d", "%d-%m-%Y")


def parse_fcs_date(text: str) -> str:
    """``$DATE`` as ISO ``YYYY-MM-DD`` (FCS 3.x writes ``dd-mmm-yyyy``); '' when absent or unparseable."""
    t = (text or "").strip()
    for fmt in _DATE_FORMATS:
        try:
            return dt.datetime.strptime(t, fmt).date().isoformat()
        except ValueError:
            continue
    return ""


def _scan(tube: Tube, data_dir: Path, panel: Panel | None, allow: Sequence[str]) -> InventoryRow:
    path = data_dir / tube.fcs
    base = dict(sample_id=tube.sample_id, tube=tube.tube, patient_id=tube.patient_id, panel=tube.panel, path=tube.fcs)
    if not path.is_file():
        return InventoryRow(**base, status=STATUS_MISSING, error=f"{tube.fcs}: file not found in data folder")
    size = path.stat().st_size
    digest = sha256_file(path)
    try:
        hdr = read_header(path)
    except FCSReadError as e:
        return InventoryRow(**base, sha256=digest, size_bytes=size, status=STATUS_UNREADABLE,
                            error=_relative(str(e), data_dir))
    meta = hdr.metadata
    kw = "; ".join(f"{k}={meta[k]}" for k in allow if k in meta)
    row = dict(
        base,
        sha256=digest,
        size_bytes=size,
        fcs_version=hdr.version,
        cytometer=meta.get("$CYT", ""),
        events=hdr.n_events,
        parameters=hdr.n_parameters,
        acquisition_date=parse_fcs_date(meta.get("$DATE", "")),
        keywords=kw,
    )
    if panel is not None:
        unstained = {tube.fmo_marker} if tube.role == "fmo" and tube.fmo_marker else set()
        try:
            resolve_panel(panel, hdr.pnn, hdr.pns, unstained=unstained, file=tube.fcs)
        except PanelError as e:
            return InventoryRow(**row, status=STATUS_PANEL, error=str(e))
    return InventoryRow(**row)


def _relative(message: str, data_dir: Path) -> str:
    """Error text with the data folder removed (paths may carry site names)."""
    return message.replace(str(data_dir.resolve()) + "/", "").replace(str(data_dir) + "/", "")


def inventory(
    tubes: Iterable[Tube],
    data_dir: str | Path,
    panels: Mapping[str, Panel],
    *,
    keywords: Sequence[str] = (),
    threads: int = 1,
) -> list[InventoryRow]:
    """Scan every tube's FCS file; never raises for a bad file (its row says why)."""
    data_dir = Path(data_dir)
    tubes = list(tubes)
    with ThreadPoolExecutor(max_workers=max(1, threads)) as pool:
        return list(pool.map(lambda t: _scan(t, data_dir, panels.get(t.panel), keywords), tubes))


def write_inventory(rows: Sequence[InventoryRow], path: str | Path) -> None:
    """Write the inventory TSV atomically."""
    names = [f.name for f in fields(InventoryRow)]
    with atomic_open(path, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=names, delimiter="\t", lineterminator="\n")
        w.writeheader()
        for r in rows:
            d = asdict(r)
            w.writerow({k: ("" if v is None else str(v).replace("\t", " ").replace("\n", " | ")) for k, v in d.items()})

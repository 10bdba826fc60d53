"""Inventory: one row per FCS file; bad files are recorded, never fatal; identifiers stay out."""
import csv
from pathlib import Path

import numpy as np
from fcs_bytes import write_fcs

from mrdflow.config import read_samples
from mrdflow.io import inventory, parse_fcs_date, write_inventory
from mrdflow.panels import load_panels

REPO = Path(__file__).resolve().parents[2]
NAMES = ["FSC-A", "FSC-H", "SSC-A", "Time", "BV421-A", "BV510-A", "FITC-A", "PE-A", "PerCP-Cy5-5-A", "PE-Cy7-A",
         "APC-A", "APC-C750-A"]
MARKERS = ["", "", "", "", "CD138 BV421", "CD27 BV510", "CD38 FITC", "CD56 PE", "CD45 PerCP-Cy5.5", "CD19 PE-Cy7",
           "CD117 APC", "CD81 APC-C750"]


def _tube(path, markers=MARKERS, **knobs):
    vals = np.random.default_rng(0).uniform(0, 1000, (50, len(NAMES))).astype(np.float32)
    kw = {f"$P{i + 1}S": m for i, m in enumerate(markers) if m}
    kw.update({"$CYT": "FACSLyric", "$DATE": "14-MAR-2025", "$SRC": "Jane Doe 1234567"})
    return write_fcs(path, vals, names=NAMES, keywords=kw, **knobs)


def test_inventory_rows_and_statuses(tmp_path):
    data = tmp_path / "data"
    (data / "PT01").mkdir(parents=True)
    _tube(data / "PT01" / "ok.fcs")
    _tube(data / "PT01" / "trunc.fcs", truncate=100)
    _tube(data / "PT01" / "nocd81.fcs", markers=MARKERS[:-1] + ["CD71 APC-C750"])
    sheet = tmp_path / "samples.tsv"
    head = "sample_id\tpatient_id\tspecimen\tvisit\tday\tinfusion\ttube\tpanel\trole\tfcs\n"
    rows = [
        ("S1", "ngf1", "ok.fcs"), ("S2", "ngf1", "trunc.fcs"), ("S3", "ngf1", "nocd81.fcs"), ("S4", "ngf1", "gone.fcs"),
    ]
    body = "".join(f"{s}\tPT01\tBM\tbaseline\t-5\t1\t{t}\tngf_tube1\tstain\tPT01/{f}\n" for s, t, f in rows)
    sheet.write_text(head + body)
    panels = load_panels(REPO / "resources" / "panels")
    tubes = read_samples(sheet, panels=panels)
    inv = inventory(tubes, data, panels, keywords=["$CYT", "$DATE"], threads=2)
    by = {r.sample_id: r for r in inv}
    assert by["S1"].status == "ok" and by["S1"].events == 50 and by["S1"].parameters == 12
    assert by["S1"].fcs_version == "FCS3.1" and by["S1"].cytometer == "FACSLyric"
    assert by["S1"].acquisition_date == "2025-03-14" and len(by["S1"].sha256) == 64
    assert by["S2"].status == "unreadable" and "trunc.fcs" in by["S2"].error
    assert by["S3"].status == "panel_mismatch" and "CD81" in by["S3"].error
    assert by["S4"].status == "missing"
    out = tmp_path / "inventory.tsv"
    write_inventory(inv, out)
    text = out.read_text()
    assert "Jane Doe" not in text and "1234567" not in text
    assert str(tmp_path) not in text  # no site paths
    table = list(csv.DictReader(out.open(), delimiter="\t"))
    assert [r["sample_id"] for r in table] == ["S1", "S2", "S3", "S4"]


def test_parse_fcs_date():
    assert parse_fcs_date("14-MAR-2025") == "2025-03-14"
    assert parse_fcs_date("2025-03-14") == "2025-03-14"
    assert parse_fcs_date("garbage") == ""

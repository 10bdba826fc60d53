"""Calibrate the gating templates for a lab's own instrument: write a lab gating folder.

A lab step, run once per instrument set-up (and again after a change of instrument, voltages,
compensation, reagents or transforms), after the lab's panels (aliases) and transforms are in its
config. For each panel it reads a few of the lab's files the way the pipeline reads them
(``mrdflow.gating.open_tube`` with the config's panels, compensation and transforms), gates them
with the shared template to pool each marker's events on the population the template's
``expected:`` section names, locates each marker's negative and positive populations (scatter: the
main population), and maps the template's search windows from where the template expects the
populations to where these files put them (``mrdflow.calibration``). It writes, under --out:
``<panel>.xml`` and ``<panel>.yaml`` (the lab's gating templates: point the config's
``gating_dir`` at the folder), ``calibration.tsv`` (per panel and marker: expected and found
positions, shares, the map and why) and ``plots/<panel>/<marker>.png`` (one diagnostic plot per
marker). Review the plots and the table before using the folder.

From a sample sheet (the first N stained tubes of each panel; every panel with an ``expected:``
section, or the ones named with --panel)::

    python scripts/calibrate_instrument.py --config config/config.yaml --samples lab/samples.tsv \\
        --data-dir /data/lab --files-per-panel 3 --out resources/gating_lab

From FCS files of one panel::

    python scripts/calibrate_instrument.py --config config/config.yaml --fcs a.fcs b.fcs --panel ngf_tube1 \\
        --out resources/gating_lab

Config paths (panels_dir, gating_dir) are taken relative to the current directory, as the workflow
takes them: run it from the workflow's directory. --templates names the templates to start from
(default: the config's gating_dir).
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

from mrdflow.calibration import MAX_EVENTS, calibrate_panel, write_lab_gating
from mrdflow.config import load_config, read_samples, resolve_path
from mrdflow.errors import CalibrationError, MrdflowError
from mrdflow.rules import sample_settings

REPO = Path(__file__).resolve().parents[1]
log = logging.getLogger("calibrate_instrument")


def files_from_sheet(sheet: str | Path, data_dir: str | Path, panels: Mapping, wanted: Sequence[str] | None,
                     per_panel: int) -> dict[str, list[tuple[Path, str]]]:
    """The first ``per_panel`` stained tubes of each panel (``wanted``, or every panel) in the
    sheet: {panel: [(path, name as the sheet gives it)]}."""
    out: dict[str, list[tuple[Path, str]]] = {}
    for t in read_samples(sheet, panels=panels):
        if t.role != "stain" or (wanted and t.panel not in wanted):
            continue
        chosen = out.setdefault(t.panel, [])
        if len(chosen) < per_panel:
            chosen.append((Path(data_dir) / t.fcs, t.fcs))
    missing = [p for p in (wanted or []) if p not in out]
    if missing:
        raise CalibrationError(f"{sheet}: no stained tube of panel(s) {missing}")
    return out


def files_from_fcs(files: Sequence[str], panel_names: Sequence[str] | None,
                   panels: Mapping) -> dict[str, list[tuple[Path, str]]]:
    """The --fcs files by panel (one --panel for all files, or one per file)."""
    if not panel_names or len(panel_names) not in (1, len(files)):
        raise CalibrationError(f"--fcs needs --panel: one panel for all {len(files)} files, or one per file")
    names = list(panel_names) * len(files) if len(panel_names) == 1 else list(panel_names)
    out: dict[str, list[tuple[Path, str]]] = {}
    for f, panel in zip(files, names):
        if panel not in panels:
            raise CalibrationError(f"{f}: unknown panel {panel!r} (panels: {sorted(panels)})")
        if not Path(f).is_file():
            raise CalibrationError(f"{f}: FCS file not found")
        out.setdefault(panel, []).append((Path(f), str(f)))
    return out


def _has_expected(gating_dir: Path, panel: str) -> bool:
    import yaml

    path = gating_dir / f"{panel}.yaml"
    return path.is_file() and bool((yaml.safe_load(path.read_text()) or {}).get("expected"))


def run(args: argparse.Namespace) -> list[Path]:
    """Calibrate the chosen panels and write the lab's folder; returns the files written."""
    config = load_config(args.config)
    templates = Path(args.templates) if args.templates else resolve_path(config["gating_dir"])
    settings = sample_settings(config, gating_dir=templates)
    if args.samples:
        if not args.data_dir and not config.get("data_dir"):
            raise CalibrationError("--samples needs --data-dir (the folder its fcs paths are relative to)")
        data_dir = args.data_dir or resolve_path(config["data_dir"])
        by_panel = files_from_sheet(args.samples, data_dir, settings.panels, args.panel, args.files_per_panel)
        if not args.panel:  # every panel of the sheet whose template says where its populations sit
            by_panel = {p: f for p, f in by_panel.items() if _has_expected(templates, p)}
    else:
        by_panel = files_from_fcs(args.fcs, args.panel, settings.panels)
    if not by_panel:
        raise CalibrationError(f"no panel to calibrate: no stained tube of a panel whose template in {templates} "
                               "has an 'expected:' section")
    cals = []
    for panel, files in by_panel.items():
        log.info("%s: calibrating on %d file(s)", panel, len(files))
        cals.append(calibrate_panel(panel, files, panel=settings.panels[panel], panel_config=config["panels"][panel],
                                    gating_dir=templates, qc=settings.qc, max_events=args.max_events, seed=args.seed,
                                    workdir=settings.workdir))
        for c in cals[-1].markers.values():
            log.info("  %-10s %-8s %-16s %s", c.marker, c.status, c.map.describe(), c.note)
    return write_lab_gating(cals, args.out, plots=args.plots)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--samples", help="sample sheet of the lab's files (samples.schema.yaml columns)")
    src.add_argument("--fcs", nargs="+", metavar="FCS", help="FCS files (with --panel)")
    ap.add_argument("--data-dir", help="folder the sheet's fcs paths are relative to (default: the config's data_dir)")
    ap.add_argument("--panel", nargs="+", help="panels to calibrate (with --samples), or the --fcs files' panel(s)")
    ap.add_argument("--files-per-panel", type=int, default=3, help="files per panel from the sheet (default: 3)")
    ap.add_argument("--config", default=str(REPO / "config" / "config.yaml"),
                    help="the lab's workflow config: panels (aliases), compensation, transforms, QC, gating_dir")
    ap.add_argument("--templates", help="gating templates to calibrate (default: the config's gating_dir)")
    ap.add_argument("--out", required=True, help="the lab's gating folder to write (the config's gating_dir then)")
    ap.add_argument("--max-events", type=int, default=MAX_EVENTS,
                    help=f"events a file is gated on at most, a seeded sample (default: {MAX_EVENTS})")
    ap.add_argument("--seed", type=int, default=0, help="seed of that sample (default: 0)")
    ap.add_argument("--plots", action=argparse.BooleanOptionalAction, default=True,
                    help="write one diagnostic plot per marker (default: yes)")
    args = ap.parse_args(argv)
    if args.files_per_panel < 1:
        ap.error("--files-per-panel must be at least 1")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        written = run(args)
    except MrdflowError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"wrote {len(written)} files under {args.out}; review {Path(args.out) / 'calibration.tsv'} and "
          f"{Path(args.out) / 'plots'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

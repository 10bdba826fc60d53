"""Build a lab's normal-PC reference (config ``clustering.reference``) from normal bone marrows.

A lab step, run once per instrument set-up (and again after a change of instrument, reagents or
settings). The pipeline's own per-sample stage gates the normal marrows
(``mrdflow.sample.analyse_sample``, which opens each tube with ``mrdflow.gating.open_tube`` and uses
the config's panels, gating templates, compensation, transforms and QC), so the reference is gated
exactly as the patients' samples will be. Their PC events are pooled, and per marker the median and
the central-95% spread are written (``mrdflow.clustering.build_normal_pc_reference``; the format is
the one ``mrdflow.clustering.load_reference`` reads).

From a sample sheet of normal marrows (its NGF tubes: the panels whose ``readout`` is ``pc_mrd``)::

    python scripts/build_normal_pc_reference.py --samples normal/samples.tsv --data-dir data/normal \\
        --config config/config.yaml --out resources/reference/normal_pc.yaml --keep-gating results/normal_pc

From FCS files (one --panel for all, or one per file), or from the ``pc_events.npz`` that the
workflow's ``analyse_sample`` rule wrote for normal marrows::

    python scripts/build_normal_pc_reference.py --fcs nbm1_t1.fcs nbm1_t2.fcs --panel ngf_tube1 ngf_tube2 \\
        --config config/config.yaml --out normal_pc.yaml
    python scripts/build_normal_pc_reference.py --pc-events results/samples/NBM*/pc_events.npz --out normal_pc.yaml

The demo's reference was built from the simulated donors of resources/reference/normal_marrow/:

    mrdflow-simulate --samples resources/reference/normal_marrow/samples.tsv \\
        --design resources/reference/normal_marrow/design.yaml --out data/normal_marrow --seed 2024
    python scripts/build_normal_pc_reference.py --samples resources/reference/normal_marrow/samples.tsv \\
        --data-dir data/normal_marrow --out resources/reference/normal_pc.yaml

Config paths (panels_dir, gating_dir, ...) are taken relative to the current directory, as the
workflow takes them: run it from the workflow's directory.
"""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import sys
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path

from mrdflow.clustering import (
    MIN_REFERENCE_EVENTS,
    PCEvents,
    build_normal_pc_reference,
    load_pc_events,
    write_reference,
)
from mrdflow.config import Tube, load_config, read_samples
from mrdflow.errors import MrdflowError
from mrdflow.panels import Panel
from mrdflow.rules import sample_settings
from mrdflow.sample import SAMPLE_FILES, SampleSettings, analyse_sample

REPO = Path(__file__).resolve().parents[1]
log = logging.getLogger("build_normal_pc_reference")


def marrows_from_sheet(path: str | Path, panels: Mapping[str, Panel]) -> dict[str, list[Tube]]:
    """The sheet's stained tubes whose panel feeds the PC/MRD read-out, by sample (one marrow each)."""
    marrows: dict[str, list[Tube]] = {}
    for t in read_samples(path, panels=panels):
        if t.role == "stain" and panels[t.panel].readout == "pc_mrd":
            marrows.setdefault(t.sample_id, []).append(t)
    return marrows


def marrows_from_fcs(files: Sequence[str], panel_names: Sequence[str],
                     panels: Mapping[str, Panel]) -> dict[str, list[Tube]]:
    """One marrow per FCS file (named after the file), with the panel given for all files or each."""
    if len(panel_names) not in (1, len(files)):
        raise MrdflowError(f"--panel: give one panel for all {len(files)} files, or one per file")
    names = list(panel_names) * len(files) if len(panel_names) == 1 else list(panel_names)
    marrows: dict[str, list[Tube]] = {}
    for f, panel in zip(files, names):
        if panels.get(panel) is None or panels[panel].readout != "pc_mrd":
            known = sorted(n for n, p in panels.items() if p.readout == "pc_mrd")
            raise MrdflowError(f"{f}: panel {panel!r} is not a PC/MRD panel (these are: {known})")
        path = Path(f).resolve()
        sample = path.stem
        if sample in marrows:
            raise MrdflowError(f"{f}: two files are named {path.name}; give a sample sheet instead")
        marrows[sample] = [Tube(sample_id=sample, patient_id=sample, specimen="BM", visit="normal", day=0,
                                infusion=1, tube=panel, panel=panel, role="stain", fcs=str(path))]
    return marrows


def gate_marrows(marrows: Mapping[str, Sequence[Tube]], data_dir: str | Path, settings: SampleSettings,
                 outdir: str | Path) -> tuple[list[PCEvents], list[str]]:
    """Gate each normal marrow with the per-sample stage (its files under ``outdir/<sample>``) and
    return the PC events of those gated without error, and their sample ids. A marrow with an
    error (unreadable tube, too few events or nucleated cells) is left out, with a warning."""
    events: list[PCEvents] = []
    used: list[str] = []
    for sample, tubes in marrows.items():
        record = analyse_sample(sample, list(tubes), data_dir, settings, Path(outdir) / sample)
        if record["errors"] or not record.get("pc_events"):
            problems = "; ".join(e["error"] for e in record["errors"]) or "no PC events"
            log.warning("%s left out of the reference: %s", sample, problems)
            continue
        events += load_pc_events(Path(outdir) / sample / SAMPLE_FILES.pc_events)
        used.append(sample)
    return events, used


def _settings(args: argparse.Namespace) -> SampleSettings:
    """The per-sample settings the workflow builds from the config; plots as asked (by default the
    config's ``sample.plots`` when the gating is kept, else none)."""
    settings = sample_settings(load_config(args.config))
    plots = (settings.plots and bool(args.keep_gating)) if args.plots is None else args.plots
    return replace(settings, plots=plots)


def _events(args: argparse.Namespace, outdir: Path) -> tuple[list[PCEvents], list[str], str]:
    """(PC events, marrows they come from, what they were read from) for the chosen input."""
    if args.pc_events:
        events = [e for f in args.pc_events for e in load_pc_events(f)]
        return events, sorted({e.sample_id for e in events}), f"{len(args.pc_events)} pc_events.npz files"
    settings = _settings(args)
    if args.samples:
        if not args.data_dir:
            raise MrdflowError("--samples needs --data-dir (the folder its fcs paths are relative to)")
        marrows, data_dir, source = marrows_from_sheet(args.samples, settings.panels), args.data_dir, args.samples
    else:
        if not args.panel:
            raise MrdflowError("--fcs needs --panel (one panel for all files, or one per file)")
        marrows, data_dir, source = marrows_from_fcs(args.fcs, args.panel, settings.panels), "/", "FCS files"
    if not marrows:
        raise MrdflowError(f"{source}: no tube of a PC/MRD panel (readout: pc_mrd) to build from")
    events, used = gate_marrows(marrows, data_dir, settings, outdir)
    return events, used, source


def build(args: argparse.Namespace, outdir: Path) -> str:
    """Build and write the reference; returns the text written."""
    events, used, source = _events(args, outdir)
    if not used:
        raise MrdflowError("no normal marrow could be used (see the warnings above)")
    ref = build_normal_pc_reference(events, min_events=args.min_events, source=source)
    notes = [f"Built by scripts/build_normal_pc_reference.py on {dt.date.today().isoformat()} from "
             f"{ref.n_events} normal PC events",
             f"of {len(used)} {'FCS files' if args.fcs else 'normal marrows'} ({source}): {', '.join(used)}."]
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    return write_reference(ref, args.out, notes)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--samples", help="sample sheet of normal marrows (samples.schema.yaml columns)")
    src.add_argument("--fcs", nargs="+", metavar="FCS", help="FCS files of normal marrows' NGF tubes")
    src.add_argument("--pc-events", nargs="+", metavar="NPZ",
                     help="pc_events.npz files the workflow's analyse_sample rule wrote for normal marrows")
    ap.add_argument("--data-dir", help="folder the sheet's fcs paths are relative to (with --samples)")
    ap.add_argument("--panel", nargs="+", help="panel of the --fcs files: one for all, or one per file")
    ap.add_argument("--config", default=str(REPO / "config" / "config.yaml"),
                    help="the workflow config: panels, gating templates, compensation, transforms, QC")
    ap.add_argument("--out", required=True, help="reference file to write (YAML); the config's clustering.reference")
    ap.add_argument("--keep-gating", metavar="DIR",
                    help="keep each marrow's gating (gating.tsv, gates.xml, plots/, pc_events.npz) under DIR/<sample>")
    ap.add_argument("--plots", action=argparse.BooleanOptionalAction, default=None,
                    help="write gating plots (default: the config's sample.plots with --keep-gating, else none)")
    ap.add_argument("--min-events", type=int, default=MIN_REFERENCE_EVENTS,
                    help=f"fewest pooled normal PC events per marker (default: {MIN_REFERENCE_EVENTS})")
    return ap.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        if args.keep_gating:
            text = build(args, Path(args.keep_gating))
        else:
            with tempfile.TemporaryDirectory(prefix="normal_pc_") as tmp:
                text = build(args, Path(tmp))
    except MrdflowError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(text, end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())

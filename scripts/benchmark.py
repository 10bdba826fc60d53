"""Benchmark one NGF marrow tube: mrdflow's per-sample analysis against the baseline a Python user
would write today (FlowKit ``Sample`` + ``GatingStrategy.gate_sample`` on the same gates, plus
FlowSOM_Python fitted on all events).

    python scripts/benchmark.py [--events 10000000] [--skip-baseline] [--scaling 1e6,3e6]
    python scripts/benchmark.py --job-cost [--job-events 10000,50000]

The tube is simulated once (demo design, patient PT02's week-4 marrow, NGF tube 1 — 12
parameters) and cached under ``--cache`` (default ``benchmark/``, git-ignored); so is the cohort PC
model the analysis maps to (fitted on PT02's small baseline tubes). Every measurement runs in a
fresh child process, so its wall time and peak RSS (``ru_maxrss``) are its own.

mrdflow's path: read FCS (float32) → time/flow-rate QC → compensation → logicle → every gate of
the NGF template placed from the data → PC events → map to the PC model → aberrant PCs → MRD call
(gating plots off: they are drawing, not analysis; ``--plots`` adds them). Tubes above the config's
``sample.placement_events`` (10^6) are streamed: gates placed on a sample of that size (the PC gate
again on that sample plus every PC candidate of the tube), every event counted in chunks;
``--placement-events 1e9`` measures placement on every event instead.
The baseline: FlowKit
``Sample`` (FCS load), ``GatingStrategy.gate_sample`` with the Gating-ML gates mrdflow wrote for the
same file (same gates, so the same counts), then ``FlowSOM`` (10×10 SOM + 24 metaclusters) fitted on
all events of the NGF backbone markers — what a user without subsampling does.

``--job-cost`` measures instead what a small tube costs as a whole job: a fresh interpreter
doing what rule ``analyse_sample`` does (imports, config, the compiled template, gating, outputs)
for one PB CAR-T tube (demo design, 12 gates), plots off and on, wall time from process start to
exit (median of 3). Its final JSON line is ``{"job_cost": {events: {"plots_off_s", "plots_on_s",
"plots", "imports_s"}}}``; ``imports_s`` is the same process stopping after its imports.

Both modes read the gating templates as the workflow does: compiled once to JSON (rule
``compile_template``), so FlowKit is not imported by the measured job.

Output: a table, the ratios against FlowKit's gating alone (timed inside the baseline run, before
FlowSOM) and against FlowKit + FlowSOM, then a final JSON line ``{"events", "mrdflow_s",
"baseline_s", "ratio", "ratio_gating_only", "mrdflow_peak_rss_mb", "baseline_peak_rss_mb", ...}``.
With ``--scaling``, mrdflow is also timed at the listed smaller sizes and the growth reported.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PATIENT = "PT02"


def _row(visit: str, tube: str, sample_id: str, fcs: str) -> dict:
    panel = {"ngf1": "ngf_tube1", "ngf2": "ngf_tube2"}[tube]
    return {"sample_id": sample_id, "patient_id": PATIENT, "specimen": "BM", "visit": visit,
            "day": "-5" if visit == "baseline" else "28", "infusion": "1", "tube": tube, "panel": panel,
            "role": "stain", "fmo_marker": "", "fcs": fcs, "beads_per_tube": "", "blood_volume_ul": ""}


def _design(events: int):
    from mrdflow.demo import load_design

    d = load_design(REPO / "resources" / "demo" / "design.yaml")
    d["events"] = {**d.get("events", {}), "bm_week4": int(events)}
    d["clog_files"] = {}
    return d


def prepare(cache: Path, events: int) -> tuple[Path, Path]:
    """The cached big tube and the cached PC model (simulated / fitted when missing)."""
    from mrdflow.demo import simulate_file

    cache.mkdir(parents=True, exist_ok=True)
    big = _row("week4", "ngf1", f"BENCH_{events}", f"bench_{events}_ngf1.fcs")
    t0 = time.perf_counter()
    truth = simulate_file(big, _design(events), cache)
    if not truth.get("skipped"):
        print(f"simulated {events:,} events in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    model = cache / "pc_model.json"
    if not model.exists():
        _fit_model(cache, model)
    if not (cache / "templates").is_dir():
        compiled_templates(cache)
    return cache / big["fcs"], model


def _settings(plots: bool = False, placement_events: int | None = None, compiled_dir: Path | None = None):
    from mrdflow.config import load_config, resolve_path
    from mrdflow.panels import load_panels
    from mrdflow.sample import settings_from_config

    cfg = load_config(REPO / "config" / "config.yaml")
    cfg["sample"]["plots"] = plots
    if placement_events:
        cfg["sample"]["placement_events"] = int(placement_events)
    return cfg, settings_from_config(cfg, load_panels(resolve_path(cfg["panels_dir"])), resolve_path(cfg["gating_dir"]),
                                     workdir=REPO, reference=resolve_path(cfg["clustering"]["reference"]),
                                     compiled_dir=compiled_dir)


def compiled_templates(cache: Path) -> Path:
    """The panels' templates compiled to JSON under ``cache/templates`` (as rule compile_template
    writes them for a run)."""
    from mrdflow.gating import compile_template

    out = cache / "templates"
    out.mkdir(parents=True, exist_ok=True)
    for xml in sorted((REPO / "resources" / "gating").glob("*.xml")):
        (out / f"{xml.stem}.json").write_text(json.dumps(compile_template(xml.parent, xml.stem)))
    return out


def _tubes(rows):
    from mrdflow.config import Tube

    return [Tube(**{**{k: v for k, v in r.items() if k not in ("fmo_marker", "beads_per_tube", "blood_volume_ul")},
                    "day": int(r["day"]), "infusion": int(r["infusion"])}) for r in rows]


def _fit_model(cache: Path, out: Path) -> None:
    from mrdflow.clustering import ClusteringSettings, fit_pc_model, load_reference
    from mrdflow.demo import load_design, simulate_file
    from mrdflow.sample import analyse_sample

    design = load_design(REPO / "resources" / "demo" / "design.yaml")
    rows = [_row("baseline", t, "MODEL_BM_baseline", f"model_{t}.fcs") for t in ("ngf1", "ngf2")]
    for r in rows:
        simulate_file(r, design, cache)
    cfg, settings = _settings()
    analyse_sample("MODEL_BM_baseline", _tubes(rows), cache, settings, cache / "model_sample")
    cs = ClusteringSettings(**{k: v for k, v in cfg["clustering"].items() if k != "reference"})
    model = fit_pc_model([cache / "model_sample" / "pc_events.npz"], load_reference(settings.reference), cs)
    model.save(out)


# ---------------------------------------------------------------------------------------------
# Children: each measured in its own process
# ---------------------------------------------------------------------------------------------

def child_mrdflow(fcs: Path, model_path: Path, outdir: Path, plots: bool, placement_events: int | None) -> dict:
    from mrdflow.clustering import PCModel
    from mrdflow.sample import analyse_sample, finish_sample

    _, settings = _settings(plots, placement_events, fcs.parent / "templates")
    events = int(fcs.stem.split("_")[1])
    tube = _tubes([_row("week4", "ngf1", f"BENCH_{events}", fcs.name)])
    t0 = time.perf_counter()
    stage1 = analyse_sample(f"BENCH_{events}", tube, fcs.parent, settings, outdir)
    t1 = time.perf_counter()
    m = finish_sample(stage1, outdir, settings, PCModel.load(model_path))
    t2 = time.perf_counter()
    return {"wall_s": t2 - t0, "stage1_s": t1 - t0, "stage2_s": t2 - t1, "mrd_status": m["mrd"]["mrd_status"],
            "n_nucleated": m["mrd"]["n_nucleated"], "n_aberrant_pc": m["mrd"]["n_aberrant_pc"],
            "n_pc": m["pc"]["n_pc"], "streamed": events > settings.placement_events,
            "placement_events": min(events, settings.placement_events)}


def child_baseline(fcs: Path, gates_xml: Path, flowsom: bool) -> dict:
    import flowkit as fk
    import numpy as np

    t0 = time.perf_counter()
    sample = fk.Sample(str(fcs), ignore_offset_error=True)
    strategy = fk.parse_gating_xml(str(gates_xml))
    res = strategy.gate_sample(sample)
    t1 = time.perf_counter()
    out = {"flowkit_s": t1 - t0, "n_gates": int(len(res.report))}
    if flowsom:
        import anndata as ad
        import flowsom as fs

        from mrdflow.clustering import BACKBONE

        # Marker columns through FlowKit's own transform: logicle of the compensated events.
        sample.apply_compensation(sample.metadata.get("spillover") or sample.metadata.get("spill"))
        xform = fk.transforms.LogicleTransform(param_t=262144, param_w=0.5, param_m=4.5, param_a=0)
        sample.apply_transform(xform)
        df = sample.as_dataframe(source="xform")
        pns = {n: s for n, s in zip(sample.pnn_labels, sample.pns_labels)}
        cols = [c for c in df.columns.get_level_values(0)
                if any(m.lower() in (pns.get(c) or "").lower() for m in BACKBONE)]
        x = df[cols].to_numpy(dtype=np.float32)
        adata = ad.AnnData(x)
        adata.var_names = cols
        fs.FlowSOM(adata, cols_to_use=list(range(len(cols))), xdim=10, ydim=10, n_clusters=24, seed=596)
        out["flowsom_s"] = time.perf_counter() - t1
        out["flowsom_events"] = int(x.shape[0])
    out["wall_s"] = time.perf_counter() - t0
    return out


def _cart_row(events: int) -> dict:
    return {"sample_id": f"JOB_{events}", "patient_id": "PT01", "specimen": "PB", "visit": "serial", "day": "14",
            "infusion": "1", "tube": "cart", "panel": "pb_cart", "role": "stain", "fmo_marker": "",
            "fcs": f"job_{events}_cart.fcs", "beads_per_tube": "50000", "blood_volume_ul": "50"}


def child_job(cache: Path, events: int, plots: bool, imports_only: bool) -> dict:
    """What rule analyse_sample's script does, for one small PB CAR-T tube (timed by the parent)."""
    from mrdflow.config import read_samples, validate_config  # noqa: F401 (the rule script's imports)
    from mrdflow.rules import sample_settings  # noqa: F401
    from mrdflow.sample import analyse_sample

    if imports_only:
        return {}
    from mrdflow.config import Tube

    _, settings = _settings(plots, None, cache / "templates")
    r = _cart_row(events)
    tube = Tube(**{**{k: v for k, v in r.items() if k not in ("fmo_marker", "beads_per_tube", "blood_volume_ul")},
                   "day": 14, "infusion": 1, "beads_per_tube": 50000.0, "blood_volume_ul": 50.0})
    rec = analyse_sample(r["sample_id"], [tube], cache, settings, cache / f"job_{events}_{int(plots)}")
    return {"status": rec["status"], "plots": len(list((cache / f"job_{events}_{int(plots)}").rglob("*.png")))}


def measure_job_cost(cache: Path, sizes: list[int]) -> dict:
    """Process wall time of a small-tube sample job, plots off and on, and of its imports alone."""
    from mrdflow.demo import load_design, simulate_file

    compiled_templates(cache)
    design = load_design(REPO / "resources" / "demo" / "design.yaml")
    out = {}
    for n in sizes:
        design["events"] = {**design.get("events", {}), "pb_cart": int(n)}
        simulate_file(_cart_row(n), design, cache)
        res = {}
        for key, args in (("imports_s", ["1", "1"]), ("plots_off_s", ["0", "0"]), ("plots_on_s", ["1", "0"])):
            walls = []
            for _ in range(3):
                t0 = time.perf_counter()
                info = _run_child(["--child", "job", str(cache), str(n), *args])
                walls.append(time.perf_counter() - t0)
            res[key] = round(sorted(walls)[1], 3)
            if key == "plots_on_s":
                res["plots"] = info["plots"]
        out[str(n)] = res
    return out


def _run_child(args: list[str]) -> dict:
    r = subprocess.run([sys.executable, __file__, *args], capture_output=True, text=True)
    if r.returncode != 0:
        raise SystemExit(f"benchmark child {args[:2]} failed:\n{r.stderr[-4000:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def measure_mrdflow(cache: Path, events: int, plots: bool, placement_events: int | None = None) -> dict:
    fcs, model = prepare(cache, events)
    return _run_child(["--child", "mrdflow", str(fcs), str(model), str(cache / f"out_{events}"), str(int(plots)),
                       str(int(placement_events or 0))])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--events", type=float, default=1e7, help="events in the benchmark tube (default 10^7)")
    ap.add_argument("--cache", type=Path, default=REPO / "benchmark", help="simulated tubes and model (git-ignored)")
    ap.add_argument("--skip-baseline", action="store_true", help="time mrdflow only")
    ap.add_argument("--no-flowsom", action="store_true", help="baseline without FlowSOM (FlowKit gating only)")
    ap.add_argument("--scaling", default="1e6",
                    help="smaller sizes also timed for mrdflow, comma-separated ('' for none)")
    ap.add_argument("--plots", action="store_true", help="include the per-gate PNGs in mrdflow's time")
    ap.add_argument("--placement-events", type=float, default=None,
                    help="override sample.placement_events (default: the config's, 1e6; 1e9 = place on every event)")
    ap.add_argument("--job-cost", action="store_true",
                    help="measure a small-tube sample job as a whole process instead (fixed cost per job)")
    ap.add_argument("--job-events", default="10000,50000", help="tube sizes for --job-cost, comma-separated")
    ap.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)

    if args.child:
        kind, *rest = args.child
        if kind == "job":
            out = child_job(Path(rest[0]), int(rest[1]), bool(int(rest[2])), bool(int(rest[3])))
        elif kind == "mrdflow":
            out = child_mrdflow(Path(rest[0]), Path(rest[1]), Path(rest[2]), bool(int(rest[3])), int(rest[4]) or None)
        else:
            out = child_baseline(Path(rest[0]), Path(rest[1]), bool(int(rest[2])))
        out["peak_rss_mb"] = _peak_rss_mb()
        print(json.dumps(out))
        return 0

    if args.job_cost:
        sizes = [int(float(s)) for s in args.job_events.split(",") if s.strip()]
        cost = measure_job_cost(args.cache, sizes)
        print(f"sample job of one PB CAR-T tube, whole process (median of 3), {os.cpu_count()} CPUs:", file=sys.stderr)
        for n, r in cost.items():
            per_plot = 1000 * (r["plots_on_s"] - r["plots_off_s"]) / max(r["plots"], 1)
            print(f"  {int(n):>9,} events: imports {r['imports_s']:.2f} s, job without plots {r['plots_off_s']:.2f} s, "
                  f"with {r['plots']} plots {r['plots_on_s']:.2f} s ({per_plot:.0f} ms a plot)", file=sys.stderr)
        print(json.dumps({"job_cost": cost, "cpus": os.cpu_count()}))
        return 0

    events = int(args.events)
    sizes = sorted({int(float(s)) for s in args.scaling.split(",") if s.strip()} - {events})
    print(f"mrdflow benchmark: {os.cpu_count()} CPUs, NGF tube 1 (12 parameters), events: "
          f"{', '.join(f'{s:,}' for s in sizes + [events])}", file=sys.stderr)
    runs = {}
    for n in sorted(sizes + [events]):
        runs[n] = measure_mrdflow(args.cache, n, args.plots, int(args.placement_events or 0) or None)
        r = runs[n]
        print(f"  mrdflow {n:>12,} events: {r['wall_s']:7.2f} s (stage 1 {r['stage1_s']:.2f} s, stage 2 "
              f"{r['stage2_s']:.2f} s), {n / r['wall_s']:,.0f} events/s, peak RSS {r['peak_rss_mb']:.0f} MB; "
              f"MRD {r['mrd_status']} ({r['n_aberrant_pc']} aberrant / {r['n_nucleated']:,} nucleated); "
              f"gates placed on "
              f"{r['placement_events']:,} events{' (streamed)' if r['streamed'] else ''}", file=sys.stderr)
    mine = runs[events]
    base = None
    if not args.skip_baseline:
        try:
            import flowsom  # noqa: F401
            use_fs = not args.no_flowsom
        except ImportError:
            use_fs = False
            print("  FlowSOM_Python is not installed (pip install -e '.[bench]'): baseline is FlowKit only",
                  file=sys.stderr)
        fcs, _ = prepare(args.cache, events)
        gates_xml = args.cache / f"out_{events}" / "gates.xml"
        base = _run_child(["--child", "baseline", str(fcs), str(gates_xml), str(int(use_fs))])
        base["flowsom"] = use_fs

    rows = [("mrdflow", mine["wall_s"], mine["peak_rss_mb"])]
    if base:
        label = "FlowKit + FlowSOM" if base["flowsom"] else "FlowKit gating only"
        rows.append((f"baseline ({label})", base["wall_s"], base["peak_rss_mb"]))
    print(f"\n{'path':34s} {'events':>12s} {'wall s':>9s} {'events/s':>12s} {'peak RSS MB':>12s}")
    for name, wall, rss in rows:
        print(f"{name:34s} {events:>12,} {wall:9.2f} {events / wall:12,.0f} {rss:12.0f}")
    if base:
        # Both ratios from the one baseline run: FlowKit's gating (load + gate_sample) is timed
        # inside it, before FlowSOM.
        print(f"ratio FlowKit gating only / mrdflow: {base['flowkit_s'] / mine['wall_s']:.1f}x "
              f"(FlowKit {base['flowkit_s']:.1f} s)")
        if base["flowsom"]:
            print(f"ratio FlowKit + FlowSOM / mrdflow: {base['wall_s'] / mine['wall_s']:.1f}x "
                  f"(FlowSOM {base['flowsom_s']:.1f} s)")
    if sizes:
        print("\ngrowth (mrdflow):")
        for n in sorted(runs):
            r = runs[n]
            print(f"  {n:>12,} events: {r['wall_s']:7.2f} s, {r['wall_s'] / n * 1e6:.3f} s per 10^6 events, "
                  f"peak RSS {r['peak_rss_mb']:.0f} MB")
    summary = {
        "events": events, "mrdflow_s": round(mine["wall_s"], 3),
        "baseline_s": round(base["wall_s"], 3) if base else None,
        "ratio": round(base["wall_s"] / mine["wall_s"], 2) if base else None,
        "ratio_gating_only": round(base["flowkit_s"] / mine["wall_s"], 2) if base else None,
        "mrdflow_peak_rss_mb": round(mine["peak_rss_mb"], 1),
        "baseline_peak_rss_mb": round(base["peak_rss_mb"], 1) if base else None,
        "baseline_flowsom": base["flowsom"] if base else None,
        "cpus": os.cpu_count(),
        "placement_events": mine["placement_events"], "streamed": mine["streamed"],
        "scaling": {str(n): round(runs[n]["wall_s"], 3) for n in sorted(runs)},
    }
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())

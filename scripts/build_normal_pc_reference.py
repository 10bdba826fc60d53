"""Build the normal-PC reference (resources/reference/normal_pc.yaml) from normal marrows.

Gates the plasma cells of each normal bone marrow (NGF tubes, the pipeline's own templates and
config transforms), pools them, and writes per marker the median and the spread of the central 95% (as an SD) in
gate units (logicle). A lab runs it on its own normal marrows (same instrument and settings as the
patients); the committed reference was built from the simulated donors in
resources/reference/normal_marrow/ (simulated with --seed 2024, which is not the demo's seed):

    python scripts/simulate_cohort.py --samples resources/reference/normal_marrow/samples.tsv \\
        --design resources/reference/normal_marrow/design.yaml --out data/normal_marrow --seed 2024
    python scripts/build_normal_pc_reference.py --samples resources/reference/normal_marrow/samples.tsv \\
        --data-dir data/normal_marrow --out resources/reference/normal_pc.yaml
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np

from mrdflow.config import load_config, read_samples
from mrdflow.gating import gate_tube
from mrdflow.panels import load_panels
from mrdflow.sample._analysis import _view, settings_from_config

REPO = Path(__file__).resolve().parents[1]
#: Markers the reference describes: the backbone minus the PC-defining CD38/CD138, plus tube 1's.
REFERENCE_MARKERS = ("CD27", "CD56", "CD45", "CD19", "CD81", "CD117")


def build(samples: str, data_dir: str, config: str) -> tuple[dict, int]:
    cfg = load_config(config)
    panels = load_panels(REPO / cfg["panels_dir"]) if not Path(cfg["panels_dir"]).is_absolute() else load_panels(cfg["panels_dir"])
    settings = replace(settings_from_config(cfg, panels, REPO / "resources" / "gating"), plots=False)
    pooled: dict[str, list[np.ndarray]] = {m: [] for m in REFERENCE_MARKERS}
    n = 0
    for tube in read_samples(samples, panels=panels):
        if tube.panel not in ("ngf_tube1", "ngf_tube2"):
            continue
        view = _view(tube, Path(data_dir), settings)
        g = gate_tube(settings.template(tube.panel), view, qc_settings=settings.qc)
        mask = g.mask("PC")
        n += int(mask.sum())
        for m in REFERENCE_MARKERS:
            if m in view.resolved.index:
                pooled[m].append(view.values(m)[mask])
    out = {}
    for m, parts in pooled.items():
        v = np.concatenate(parts) if parts else np.zeros(0)
        if v.size < 100:
            raise SystemExit(f"only {v.size} normal PC events for {m}: need more normal marrows")
        med = float(np.median(v))
        # Spread from the central 95% (not the MAD): normal PCs include real minor subsets (CD19-,
        # CD56+) that a MAD of the main mode would call aberrant.
        lo, hi = np.quantile(v, [0.025, 0.975])
        sd = float((hi - lo) / 3.92)
        out[m] = {"median": round(med, 3), "sd": round(max(sd, 0.02), 3)}
    return out, n


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--samples", required=True)
    ap.add_argument("--data-dir", required=True)
    ap.add_argument("--config", default=str(REPO / "config" / "config.yaml"))
    ap.add_argument("--out", required=True)
    args = ap.parse_args(argv)
    ref, n = build(args.samples, args.data_dir, args.config)
    lines = [
        "# Normal bone-marrow plasma-cell phenotype, used to label PC clusters normal or aberrant.",
        f"# Built by scripts/build_normal_pc_reference.py on {dt.date.today().isoformat()} from {n} normal PC events",
        f"# ({args.samples}). Units: the config's fluorescence transform (logicle) of compensated values.",
        "# median: typical expression of normal PCs; sd: central-95% spread ((q97.5 - q2.5) / 3.92).",
        "markers:",
    ] + [f"  {m}: {{median: {v['median']}, sd: {v['sd']}}}" for m, v in ref.items()]
    Path(args.out).write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())

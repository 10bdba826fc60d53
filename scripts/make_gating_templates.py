"""Write the default Gating-ML 2.0 gating templates in resources/gating/ (one per panel).

Developer tool: the XML files are the templates the pipeline reads (a lab may edit them in any
Gating-ML tool, or give a FlowJo workspace instead). Dimensions name panel markers; fluorescence
dimensions use the file's spillover (compensation-ref "FCS") and the ``logicle`` transform,
scatter the ``scatter`` linear transform. Coordinates here are defaults; per-sample placement rules
live beside each XML in <panel>.yaml.

    python scripts/make_gating_templates.py [--out resources/gating] [panel ...]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import flowkit as fk

LOGICLE = fk.transforms.LogicleTransform(param_t=262144, param_w=0.5, param_m=4.5, param_a=0.0)
SCATTER = fk.transforms.LinearTransform(param_t=262144, param_a=0.0)
SCATTER_DIMS = {"FSC-A", "FSC-H", "SSC-A", "SSC-H"}


def dim(name: str, lo: float | None = None, hi: float | None = None) -> fk.Dimension:
    if name == "Time":
        return fk.Dimension(name, "uncompensated", None, range_min=lo, range_max=hi)
    if name in SCATTER_DIMS:
        return fk.Dimension(name, "uncompensated", "scatter", range_min=lo, range_max=hi)
    return fk.Dimension(name, "FCS", "logicle", range_min=lo, range_max=hi)


def rect(gid: str, **ranges: tuple[float | None, float | None]) -> fk.gates.RectangleGate:
    return fk.gates.RectangleGate(gid, [dim(k.replace("_", "-"), *v) for k, v in ranges.items()])


def base_strategy() -> fk.GatingStrategy:
    gs = fk.GatingStrategy()
    gs.add_transform("logicle", LOGICLE)
    gs.add_transform("scatter", SCATTER)
    return gs


def qc_backbone(gs: fk.GatingStrategy) -> tuple[str, ...]:
    """TimeOK -> Singlets; returns the Singlets path."""
    gs.add_gate(fk.gates.RectangleGate("TimeOK", [dim("Time", 0.0, None)]), ("root",))
    wedge = [(0.0, 0.0), (0.12, 0.1), (1.2, 1.0), (0.9, 1.0)]
    gs.add_gate(fk.gates.PolygonGate("Singlets", [dim("FSC-A"), dim("FSC-H")], wedge), ("root", "TimeOK"))
    return ("root", "TimeOK", "Singlets")


def ngf(tube: int) -> fk.GatingStrategy:
    """EuroFlow NGF tube 1 or 2: QC, nucleated cells, plasma cells, hemodilution populations."""
    gs = base_strategy()
    singlets = qc_backbone(gs)
    gs.add_gate(rect("Nucleated", FSC_A=(0.1, None)), singlets)
    nuc = singlets + ("Nucleated",)
    gs.add_gate(rect("PC", CD38=(0.7, None), CD138=(0.45, None)), nuc)
    # Nucleated red cells: CD45-negative, low SSC, not plasma cells (CD138-negative).
    gs.add_gate(rect("NRBC", CD45=(None, 0.3), SSC_A=(None, 0.12), CD138=(None, 0.45)), nuc)
    if tube == 1:
        # Mast cells: CD117 very high, CD45+; B-cell precursors: CD19+ CD45 dim CD38 high CD81+.
        gs.add_gate(rect("MastCells", CD117=(0.75, None), CD45=(0.6, None)), nuc)
        gs.add_gate(rect("BCP", CD19=(0.45, None), CD45=(0.4, 0.66), CD38=(0.6, None), CD81=(0.55, None), CD138=(None, 0.45)), nuc)
    else:
        pc = nuc + ("PC",)
        gs.add_gate(rect("PC_kappa", IgK=(0.4, None), IgL=(None, 0.4)), pc)
        gs.add_gate(rect("PC_lambda", IgL=(0.4, None), IgK=(None, 0.4)), pc)
    return gs


TEMPLATES = {
    "ngf_tube1": lambda: ngf(1),
    "ngf_tube2": lambda: ngf(2),
}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(Path(__file__).resolve().parents[1] / "resources" / "gating"))
    ap.add_argument("panels", nargs="*", default=sorted(TEMPLATES))
    args = ap.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for name in args.panels:
        if name not in TEMPLATES:
            ap.error(f"unknown panel {name!r}; known: {sorted(TEMPLATES)}")
        with open(out / f"{name}.xml", "wb") as fh:
            fk.export_gatingml(TEMPLATES[name](), fh)
        print(f"wrote {out / (name + '.xml')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

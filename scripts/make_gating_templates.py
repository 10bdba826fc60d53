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
        gs.add_gate(rect("BCP", CD19=(0.45, None), CD45=(0.4, 0.66), CD38=(0.6, None), CD81=(0.55, None),
                         CD138=(None, 0.45)), nuc)
    else:
        pc = nuc + ("PC",)
        gs.add_gate(rect("PC_kappa", IgK=(0.4, None), IgL=(None, 0.4)), pc)
        gs.add_gate(rect("PC_lambda", IgL=(0.4, None), IgK=(None, 0.4)), pc)
    return gs


def nk(beads: bool = False) -> fk.GatingStrategy:
    """PB NK panel: QC, viable CD45+ lymphocytes, T cells (the NKG2A internal negative), NK cells
    (CD3- dump- and CD56+ and/or CD16+), CD56bright / CD56dim subsets, NKG2A+ of each. With
    ``beads`` (panel pb_nk_beads): counting beads under TimeOK and out of Cells, as in the CAR-T tube."""
    gs = base_strategy()
    singlets = qc_backbone(gs)
    if beads:
        gs.add_gate(rect("Beads", Beads=(0.6, None)), singlets[:-1])
        gs.add_gate(rect("Cells", FSC_A=(0.1, None), Beads=(None, 0.6)), singlets)  # debris and beads out
    else:
        gs.add_gate(rect("Cells", FSC_A=(0.1, None)), singlets)  # debris out
    cells = singlets + ("Cells",)
    gs.add_gate(rect("Viable", Viability=(None, 0.5)), cells)
    viable = cells + ("Viable",)
    gs.add_gate(rect("CD45pos", CD45=(0.45, None)), viable)
    cd45 = viable + ("CD45pos",)
    # Lymphocytes: low SSC (monocytes, granulocytes above) and FSC between debris and monocytes.
    gs.add_gate(rect("Lymphocytes", FSC_A=(0.12, 0.29), SSC_A=(None, 0.11)), cd45)
    lym = cd45 + ("Lymphocytes",)
    gs.add_gate(rect("Tcells", CD3=(0.45, None)), lym)
    gs.add_gate(rect("CD3neg_Dumpneg", CD3=(None, 0.45), Dump=(None, 0.4)), lym)
    neg = lym + ("CD3neg_Dumpneg",)
    gs.add_gate(rect("CD56pos", CD56=(0.35, None)), neg)
    gs.add_gate(rect("CD16pos", CD16=(0.4, None)), neg)
    gs.add_gate(fk.gates.BooleanGate("NK", "or", [
        {"ref": "CD56pos", "path": neg, "complement": False},
        {"ref": "CD16pos", "path": neg, "complement": False},
    ]), neg)
    nk_path = neg + ("NK",)
    # Subsets: CD56bright CD16-/dim and CD56dim CD16+ (CD56 and CD16 cuts shared by both).
    gs.add_gate(rect("NK_bright", CD56=(0.7, None), CD16=(None, 0.62)), nk_path)
    gs.add_gate(rect("NK_dim", CD56=(None, 0.7), CD16=(0.62, None)), nk_path)
    # NKG2A (CD159a) positive: one threshold for NK and both subsets (placed on NK).
    gs.add_gate(rect("NKG2Apos", CD159a=(0.38, None)), nk_path)
    gs.add_gate(rect("NKG2Apos_bright", CD159a=(0.38, None)), nk_path + ("NK_bright",))
    gs.add_gate(rect("NKG2Apos_dim", CD159a=(0.38, None)), nk_path + ("NK_dim",))
    gs.add_gate(rect("Tcells_NKG2Apos", CD159a=(0.38, None)), lym + ("Tcells",))
    return gs


def cart() -> fk.GatingStrategy:
    """PB CAR-T panel: counting beads (straight under TimeOK: beads are not cells, so they skip
    the singlet and cell gates), then viable CD45+ lymphocytes, CD3+ T cells, CAR+ T cells and
    their CD4+ / CD8+ shares."""
    gs = base_strategy()
    singlets = qc_backbone(gs)
    time_ok = singlets[:-1]
    # Beads: very bright on their own (APC) channel, small uniform scatter.
    gs.add_gate(rect("Beads", Beads=(0.6, None)), time_ok)
    # Cells: debris out (low FSC), beads out (they would read as bright on every channel).
    gs.add_gate(rect("Cells", FSC_A=(0.1, None), Beads=(None, 0.6)), singlets)
    cells = singlets + ("Cells",)
    gs.add_gate(rect("Viable", Viability=(None, 0.5)), cells)
    viable = cells + ("Viable",)
    gs.add_gate(rect("CD45pos", CD45=(0.45, None)), viable)
    cd45 = viable + ("CD45pos",)
    gs.add_gate(rect("Lymphocytes", SSC_A=(None, 0.11)), cd45)
    lym = cd45 + ("Lymphocytes",)
    gs.add_gate(rect("CD3pos", CD3=(0.45, None)), lym)
    cd3 = lym + ("CD3pos",)
    gs.add_gate(rect("CARpos", CAR=(0.4, None)), cd3)
    car = cd3 + ("CARpos",)
    gs.add_gate(rect("CAR_CD4", CD4=(0.4, None)), car)
    gs.add_gate(rect("CAR_CD8", CD8=(0.45, None)), car)
    return gs


TEMPLATES = {
    "ngf_tube1": lambda: ngf(1),
    "ngf_tube2": lambda: ngf(2),
    "pb_nk": nk,
    "pb_nk_beads": lambda: nk(beads=True),
    "pb_cart": cart,
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

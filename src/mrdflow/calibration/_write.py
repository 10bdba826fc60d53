"""Writing a lab's calibrated gating folder: per panel ``<panel>.xml`` and ``<panel>.yaml`` (the
folder the config's ``gating_dir`` then names), ``calibration.tsv`` (one row per panel dimension)
and ``plots/<panel>/<marker>.png`` (one diagnostic plot per calibrated dimension)."""

from __future__ import annotations

import csv
import re
import textwrap
from collections.abc import Sequence
from pathlib import Path

import yaml

from mrdflow.atomic import atomic_open, atomic_path
from mrdflow.calibration._calibrate import MarkerCalibration, PanelCalibration
from mrdflow.calibration._mapping import rule_windows
from mrdflow.calibration._modes import AXIS, _density

__all__ = ["TSV_COLUMNS", "calibration_rows", "plot_marker", "rules_text", "write_lab_gating"]

TSV_NAME = "calibration.tsv"
TSV_COLUMNS = ("panel", "marker", "population", "expected_negative", "found_negative", "expected_positive",
               "found_positive", "expected_main", "found_main", "shares", "status", "map", "populations", "note")


class _Dumper(yaml.SafeDumper):
    """YAML without anchors: each rule written out in full (the template's aliases become copies)."""

    def ignore_aliases(self, data) -> bool:
        return True


def _represent_dict(dumper: yaml.SafeDumper, data: dict):
    """A bound rule without fallback/floor, or a mapping of scalars and lists, on one line (as the
    templates write them); anything else as a block."""
    plain = all(not isinstance(v, dict) for v in data.values())
    rule = "method" in data and not any(isinstance(data.get(k), dict) for k in ("fallback", "floor"))
    return dumper.represent_mapping("tag:yaml.org,2002:map", data.items(), flow_style=plain or rule)


_Dumper.add_representer(dict, _represent_dict)


def _f(x: float | None) -> str:
    return "NA" if x is None else f"{x:.3f}"


def _pos(p) -> float | None:
    return None if p is None else p.position


def _row(cal: PanelCalibration, c: MarkerCalibration) -> dict:
    e, m = c.expected, c.modes
    shares = ", ".join(f"{k} {100 * p.share:.0f}%" for k, p in (("negative", m.negative), ("positive", m.positive),
                                                                   ("main", m.main)) if p is not None)
    return {"panel": cal.panel, "marker": c.marker, "population": e.population or "all events",
            "expected_negative": _f(e.negative), "found_negative": _f(_pos(m.negative)),
            "expected_positive": _f(e.positive), "found_positive": _f(_pos(m.positive)),
            "expected_main": _f(e.main), "found_main": _f(_pos(m.main)), "shares": shares or "NA",
            "status": c.status, "map": c.map.describe(), "populations": m.listing(), "note": c.note}


def calibration_rows(cal: PanelCalibration) -> list[dict]:
    """The panel's rows of ``calibration.tsv``: each calibrated dimension, then each dimension of
    the template left as it is (with why)."""
    rows = [_row(cal, c) for c in cal.markers.values()]
    for dim, why in cal.unmapped.items():
        rows.append({**dict.fromkeys(TSV_COLUMNS, "NA"), "panel": cal.panel, "marker": dim, "status": "template",
                     "map": "as template", "note": why})
    return rows


def rules_text(cal: PanelCalibration) -> str:
    """The lab's ``<panel>.yaml``: a header saying what it was calibrated from, when, and per
    dimension what was expected and found and the map; then the mapped rules and positions."""
    tpl = cal.template_dir / f"{cal.panel}.yaml"
    lines = [f"# Placement rules of {cal.panel}.xml calibrated for this lab's instrument: {tpl} with its windows",
             f"# mapped (mrdflow.calibration, scripts/calibrate_instrument.py) on {cal.when} from {len(cal.files)} "
             "file(s):"]
    lines += [f"#   {f}" for f in cal.files]
    lines += ["# Per dimension (gate units): the template instrument's position -> the one found in these files,",
              "# and the map applied to every window, fallback/floor window and given range on it:",
              f"#   {'marker':<10} {'population':<15} {'negative':<16} {'positive':<16} {'map':<16} status"]
    for c in cal.markers.values():
        e, m = c.expected, c.modes
        if e.scatter:
            neg, pos = f"main {_f(e.main)} -> {_f(_pos(m.main))}", ""
        else:
            neg = f"{_f(e.negative)} -> {_f(_pos(m.negative))}"
            pos = f"{_f(e.positive)} -> {_f(_pos(m.positive))}" if e.positive is not None else "-"
        lines.append(f"#   {c.marker:<10} {(e.population or 'all events'):<15} {neg:<16} {pos:<16} "
                     f"{c.map.describe():<16} {c.status}")
        if c.status != "affine" and c.status != "scale":
            lines.append(f"#     {c.note}")
    for dim, why in cal.unmapped.items():
        lines.append(f"#   {dim:<10} left as in the template: {why}")
    lines += [f"# {cal.panel}.xml beside this file has its fixed rectangle coordinates mapped the same way.",
              f"# Review plots/{cal.panel}/<marker>.png and calibration.tsv before pointing gating_dir here."]
    if cal.review:
        lines.append("# The shared template's gates were unsure on these files while they were gated for calibration:")
        lines += [f"#   {r}" for r in cal.review]
    body = yaml.dump({"gates": cal.gates, "expected": cal.expected}, Dumper=_Dumper, sort_keys=False,
                     default_flow_style=None, width=110)
    return "\n".join(lines) + "\n" + body


def plot_marker(cal: PanelCalibration, c: MarkerCalibration, path: str | Path) -> Path:
    """One dimension's diagnostic plot: the pooled density (gate units), the expected (dashed) and
    found (solid) populations, and below it the template's windows (grey) and the mapped ones."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    before = rule_windows(cal.template_gates, c.marker)
    after = rule_windows(cal.gates, c.marker)
    rows = max(len(before), 1)
    fig = Figure(figsize=(8.0, 2.6 + 0.22 * rows))
    FigureCanvasAgg(fig)
    top, bottom = fig.subplots(2, 1, sharex=True, height_ratios=[2.2, 0.3 + 0.22 * rows])
    if c.values.size:
        x, y = _density(c.values, c.weights)
        top.fill_between(x, y, color="#9ecae1", lw=0)
        top.plot(x, y, color="#3182bd", lw=1)
    e, m = c.expected, c.modes
    for name, exp, found, colour in (("negative", e.negative, m.negative, "#2ca02c"),
                                     ("positive", e.positive, m.positive, "#d62728"),
                                     ("main", e.main, m.main, "#9467bd")):
        if exp is not None:
            top.axvline(exp, color=colour, ls="--", lw=1, label=f"expected {name} {exp:.2f}")
        if found is not None:
            top.axvline(found.position, color=colour, lw=1.6, label=f"found {name} {found.position:.2f}")
    top.legend(fontsize=7, loc="upper right", frameon=False)
    top.set_ylabel("density")
    top.set_title(f"{cal.panel} {c.marker} ({e.population or 'all events'}, {m.events} events): "
                  f"{c.status} {c.map.describe()}", fontsize=9)
    lo, hi = AXIS[0] + 0.05, AXIS[1] - 0.05
    for i, ((_, w0), (_, w1)) in enumerate(zip(before, after)):
        for rng, dy, colour in ((w0, 0.18, "#bdbdbd"), (w1, -0.18, "#e6550d")):
            a = lo if rng[0] is None else rng[0]
            b = hi if rng[1] is None else rng[1]
            bottom.plot([a, b], [i + dy, i + dy], color=colour, lw=4, solid_capstyle="butt")
    bottom.set_ylim(rows - 0.5, -0.5)
    bottom.set_yticks(range(len(before)), [label for label, _ in before], fontsize=6.5)
    bottom.set_xlim(lo, hi)
    bottom.set_xlabel("gate units (grey: template window, orange: mapped)")
    fig.text(0.01, 0.01, "\n".join(textwrap.wrap(c.note, 125)[:2]), fontsize=6.5, va="bottom")
    height = fig.get_figheight()
    fig.subplots_adjust(left=2.2 / 8.0, right=0.98, top=1 - 0.3 / height, bottom=0.75 / height, hspace=0.08)
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=80, metadata={"Software": None})
    return path


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", name)


def _write_tsv(path: Path, cals: Sequence[PanelCalibration]) -> None:
    """``calibration.tsv`` with these panels' rows; rows of other panels already there are kept."""
    done = {c.panel for c in cals}
    old: list[dict] = []
    if path.is_file():
        with open(path, newline="") as fh:
            old = [r for r in csv.DictReader(fh, delimiter="\t") if r.get("panel") not in done]
    with atomic_open(path, "w", newline="") as fh:
        w = csv.DictWriter(fh, TSV_COLUMNS, delimiter="\t", lineterminator="\n", extrasaction="ignore", restval="NA")
        w.writeheader()
        for r in old:
            w.writerow(r)
        for cal in cals:
            for r in calibration_rows(cal):
                w.writerow(r)


def write_lab_gating(cals: Sequence[PanelCalibration], out: str | Path, *, plots: bool = True) -> list[Path]:
    """Write the lab's gating folder ``out`` for the calibrated panels; returns the files written."""
    import flowkit as fk

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    for cal in cals:
        xml = out / f"{cal.panel}.xml"
        with atomic_open(xml, "wb") as fh:
            fk.export_gatingml(cal.strategy, fh)
        with atomic_open(out / f"{cal.panel}.yaml", "w") as fh:
            fh.write(rules_text(cal))
        written += [xml, out / f"{cal.panel}.yaml"]
        if plots:
            for c in cal.markers.values():
                written.append(plot_marker(cal, c, out / "plots" / cal.panel / f"{_safe(c.marker)}.png"))
    _write_tsv(out / TSV_NAME, cals)
    written.append(out / TSV_NAME)
    return written

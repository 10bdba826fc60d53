"""Per-sample analysis: gate every tube of a specimen draw and compute its read-outs.

Stage 1 (:func:`analyse_sample`, rule ``analyse_sample``): read each tube, compensate, place and apply
the panel's gates, write ``gating.tsv``, ``gates.xml`` (plus ``gates_<tube>.xml`` for further
tubes), one plot per gating step, the NK / CAR-T read-outs, and for marrow tubes the plasma-cell
events for the cohort clustering (``pc_events.npz``) with the counts the MRD call needs
(``stage1.json``).

Stage 2 (:func:`finish_sample`, rule ``finish_sample``): map the PC events to the cohort PC model,
count aberrant PCs, make the MRD call and write ``metrics.json``.

A tube that cannot be read or gated is recorded (``errors``) and the others go on. Every tube
records each placed bound's evidence (``gates``) and the gates placement was unsure of
(``gate_review``); the read-outs resting on an unsure gate are listed in ``review_needed``
(:mod:`mrdflow.sample._review`) and keep their values, marked. The sample's ``status`` says ``ok``,
``review`` (read-outs to review), ``partial`` or ``failed``.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import shutil
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from mrdflow.atomic import atomic_open
from mrdflow.clustering import (
    PCEvents,
    PCModel,
    aberrant_events,
    load_pc_events,
    load_reference,
    map_events,
    save_pc_events,
)
from mrdflow.config import Tube, schema_defaults
from mrdflow.errors import MrdflowError
from mrdflow.gating import QCSettings
from mrdflow.metrics import (
    GateReview,
    MRDCall,
    MRDMetrics,
    PCMetrics,
    ReviewItem,
    SampleMetrics,
    TubeError,
    TubeQC,
    json_default,
    write_metrics,
)
from mrdflow.panels import Panel
from mrdflow.sample._mrd import (
    HEMODILUTION_GATES,
    PC_GATE,
    HemodilutionSettings,
    MRDSettings,
    TubeCount,
    hemodilution,
    mrd_call,
)
from mrdflow.sample._outputs import SAMPLE_FILES
from mrdflow.sample._review import (
    ABERRANT_PC,
    CART_COUNT,
    MRD_CALL,
    NKG2A_PCT,
    PC_PCT,
    TubeReview,
    gate_dependencies,
    gate_evidence,
    gate_reviews,
    readout_reason,
    review_needed,
)

if TYPE_CHECKING:
    from mrdflow.gating import GatingTemplate, StreamedGating, TubeGating

# Stage 1 needs FlowKit (about a second to import); stage 2 and the cohort table do not, so the
# gating imports happen inside the stage-1 functions.

__all__ = ["SampleSettings", "analyse_sample", "finish_sample", "readout_values", "settings_from_config"]

log = logging.getLogger(__name__)
# Field defaults come from workflow/schemas/config.schema.yaml (config ``sample``), the one place they are written.
_SAMPLE = schema_defaults("sample")


@dataclass(frozen=True)
class SampleSettings:
    """Everything the per-sample stage reads from the config (validated upstream).

    min_events: a tube with fewer events (or a marrow tube with fewer nucleated cells) is not
    analysed; plots: write one PNG per gating step; placement_events: gates are placed on at most
    this many events of a tube (a larger one is streamed). Defaults: config schema, ``sample``.
    """

    panels: Mapping[str, Panel]
    panel_config: Mapping[str, Mapping]
    gating_dir: Path
    qc: QCSettings = QCSettings()
    mrd: MRDSettings = MRDSettings()
    hemodilution: HemodilutionSettings = HemodilutionSettings()
    min_events: int = _SAMPLE["min_events"]
    plots: bool = _SAMPLE["plots"]
    placement_events: int = _SAMPLE["placement_events"]
    workdir: Path = Path(".")
    reference: Path | None = None
    compiled_dir: Path | None = None

    def template(self, panel: str, fcs: str | Path | None = None) -> GatingTemplate:
        """The panel's Gating-ML template, or its FlowJo workspace when the config names one.

        From a workspace: the gates of the tube's own sample (``fcs``, matched by FlowJo's sample
        name, then $FIL, then file name) when the workspace has it and no ``sample_id`` is
        configured; else those of the configured template sample (``fcs``/``sample_id``).
        A Gating-ML template compiled by the run (``compiled_dir/<panel>.json``, rule
        ``compile_template``) is read without FlowKit.
        """
        from mrdflow.config import resolve_path

        ws = (self.panel_config.get(panel) or {}).get("workspace")
        if not ws and self.compiled_dir is not None and (self.compiled_dir / f"{panel}.json").is_file():
            from mrdflow.gating import load_compiled_template

            return load_compiled_template(self.compiled_dir / f"{panel}.json")
        from mrdflow.gating import WorkspaceSampleMissing, load_template, template_from_workspace

        if ws:
            wsp = resolve_path(ws["path"], self.workdir)
            if fcs is not None and not ws.get("sample_id"):
                try:
                    return template_from_workspace(wsp, ws["group"], panel, fcs)
                except WorkspaceSampleMissing:
                    pass  # not a workspace sample: the template sample's gates
            return template_from_workspace(wsp, ws["group"], panel, resolve_path(ws["fcs"], self.workdir),
                                           ws.get("sample_id"))
        return load_template(self.gating_dir, panel)


def settings_from_config(config: Mapping, panels: Mapping[str, Panel], gating_dir: str | Path,
                         workdir: str | Path = ".", reference: str | Path | None = None,
                         compiled_dir: str | Path | None = None) -> SampleSettings:
    """Build :class:`SampleSettings` from a validated config mapping (a key it lacks takes the
    schema's default)."""
    mrd = dict(config.get("mrd") or {})
    hemo = mrd.pop("hemodilution", {}) or {}
    sample = {**schema_defaults("sample"), **(config.get("sample") or {})}
    return SampleSettings(
        panels=panels,
        panel_config=config["panels"],
        gating_dir=Path(gating_dir),
        qc=QCSettings(**(config.get("qc") or {})),
        mrd=MRDSettings(**mrd),
        hemodilution=HemodilutionSettings(**hemo),
        min_events=int(sample["min_events"]),
        plots=bool(sample["plots"]),
        placement_events=int(sample["placement_events"]),
        workdir=Path(workdir),
        reference=Path(reference) if reference else None,
        compiled_dir=Path(compiled_dir) if compiled_dir else None,
    )


# ---------------------------------------------------------------------------------------------
# Stage 1
# ---------------------------------------------------------------------------------------------

def _setup(tube: Tube, path: Path, settings: SampleSettings):
    """One tube opened for gating (:class:`mrdflow.gating.OpenTube`: header read, panel resolved,
    compensation checked, events not read), with the panel's config and the settings' minimum of events."""
    from mrdflow.gating import open_tube

    pcfg = settings.panel_config[tube.panel]
    unstained = {tube.fmo_marker} if tube.role == "fmo" and tube.fmo_marker else set()
    return open_tube(path, settings.panels[tube.panel], pcfg["transform"], compensation=pcfg.get("compensation", "fcs"),
                     unstained=unstained, name=tube.fcs, workdir=settings.workdir, min_events=settings.min_events)


# Events kept whole from a streamed tube: the gate and the flag gates its events carry.
STREAM_KEEP = {PC_GATE: ("PC_kappa", "PC_lambda"), "NK": ("NK_bright", "NK_dim", "NKG2Apos")}


def _gate(tube: Tube, data_dir: Path, settings: SampleSettings, fmo,
          template: GatingTemplate) -> TubeGating | StreamedGating:
    """Read and gate one tube with its panel's ``template``: in memory, or streamed when it has more
    than ``settings.placement_events`` events (gates placed on a seeded uniform sample of that many,
    every event counted; memory then stays that of a tube of ``placement_events``)."""
    from mrdflow.gating import gate_tube, gate_tube_streamed

    opened = _setup(tube, data_dir / tube.fcs, settings)
    if opened.n_events > settings.placement_events:
        log.info("%s: %d events: streamed, gates placed on a sample of %d", tube.fcs, opened.n_events,
                 settings.placement_events)
        return gate_tube_streamed(template, opened, qc_settings=settings.qc, fmo=fmo,
                                  placement_events=settings.placement_events, keep=STREAM_KEEP)
    return gate_tube(template, opened.view(), qc_settings=settings.qc, fmo=fmo)


def _tube_qc(g: TubeGating, settings: SampleSettings) -> dict:
    time = g.qc.get("time", {})
    out = {
        "events": g.n_events,
        "time_ok": g.count("TimeOK"),
        "singlets": g.count("Singlets"),
        "time_removed_pct": 100.0 * float(time.get("removed_fraction", 0.0)),
        "time_segments": time.get("segments", []),
        "time_reasons": time.get("reasons", []),
        "flow_rate_failed": bool(time.get("failed", False)),
        "nonfinite_events": g.nonfinite_events(),
    }
    if "placement" in g.qc:
        out["placement_events"] = g.qc["placement"]["events"]
        cand = g.qc["placement"].get("candidates")
        if cand:
            out["placement_candidates"] = {"placed_on": cand["placed_on"], "candidates": int(cand["events"]),
                                           **({"placement_events": int(cand["placement_events"])}
                                              if "placement_events" in cand else {}),
                                           **({"why": cand["why"]} if cand.get("why") else {})}
    out["gates"] = gate_evidence(g)
    out["gate_review"] = [r.as_dict() for r in gate_reviews(g)]
    return out


def _pc_events(sample_id: str, tube: Tube, g: TubeGating) -> PCEvents:
    ids = {s.gate_id for s in g.steps}
    flags = STREAM_KEEP[PC_GATE] if set(STREAM_KEEP[PC_GATE]) <= ids else ()  # κ/λ: NGF tube 2 only
    k = g.events_in(PC_GATE, flags)
    kappa = k.flags["PC_kappa"] if flags else None
    lam = k.flags["PC_lambda"] if flags else None
    return PCEvents(sample_id, tube.tube, k.markers, k.values, kappa, lam)


def _ngf_counts(g: TubeGating) -> dict:
    ids = {s.gate_id for s in g.steps}
    mast, bcp, nrbc = HEMODILUTION_GATES
    c = {"nucleated": g.count("Nucleated"), "pc": g.count(PC_GATE), "nrbc": g.count(nrbc) if nrbc in ids else None}
    if mast in ids:
        c["mast_cells"] = g.count(mast)
    if bcp in ids:
        c["bcp"] = g.count(bcp)
    if "PC_kappa" in ids:
        c["pc_kappa"] = g.count("PC_kappa")
        c["pc_lambda"] = g.count("PC_lambda")
    return c


def _write_gating_tables(outdir: Path, tables: Sequence[tuple[str, list[dict]]]) -> None:
    with atomic_open(outdir / SAMPLE_FILES.gating, "w", newline="") as fh:
        w = csv.writer(fh, delimiter="\t", lineterminator="\n")
        w.writerow(["tube", "population", "parent", "count", "pct_parent", "pct_of_total"])
        for tube, rows in tables:
            for r in rows:
                w.writerow([tube, r["population"], r["parent"], r["count"], _fmt(r["pct_parent"]),
                            _fmt(r["pct_of_total"])])


def _fmt(x: float | None) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "NA"
    return f"{x:.6g}"


def analyse_sample(sample_id: str, tubes: Sequence[Tube], data_dir: str | Path, settings: SampleSettings,
                   outdir: str | Path, *, templates: Mapping[str, GatingTemplate] | None = None,
                   on_gated: Callable[[Tube, Any, dict], None] | None = None,
                   annotate: Callable[[dict], None] | None = None) -> dict:
    """Stage 1 for one sample; writes its files under ``outdir`` and returns the stage-1 record.

    ``templates``: per tube name, gates to apply instead of the panel's (a reviewer's, from
    :mod:`mrdflow.review`; recorded as ``gating_source: reviewed``). ``on_gated(tube, gating,
    qc)`` is called for every gated tube before its review items are drawn from ``qc`` (it may
    amend the record), and ``annotate(record)`` once before ``stage1.json`` is written.
    """
    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    data_dir = Path(data_dir)
    first = tubes[0]
    record: dict[str, Any] = {
        "sample_id": sample_id, "patient_id": first.patient_id, "specimen": first.specimen,
        "visit": first.visit, "day": first.day, "infusion": first.infusion,
        "tubes": {}, "errors": [], "counts": {}, "gates_of": {},
    }
    reviews: list[TubeReview] = []
    gated: dict[str, TubeGating] = {}
    tables: list[tuple[str, list[dict]]] = []
    pcs: list[PCEvents] = []
    # FMO controls first: the stained tube's thresholds may come from them.
    order = sorted(tubes, key=lambda t: 0 if t.role == "fmo" else 1)
    fmo_of: dict[str, TubeGating] = {}
    plot_dir = outdir / SAMPLE_FILES.plots
    if plot_dir.exists():
        shutil.rmtree(plot_dir)
    plot_dir.mkdir(parents=True)  # present even when no tube could be gated (a rule output)
    for tube in order:
        try:
            if templates and tube.tube in templates:
                template, source = templates[tube.tube], "reviewed"
            else:
                template = settings.template(tube.panel, data_dir / tube.fcs)
                source = "template" if template.static else "data"
            g = _gate(tube, data_dir, settings, fmo_of.get(tube.panel) if tube.role == "stain" else None, template)
        except MrdflowError as e:
            log.error("%s/%s: %s", sample_id, tube.tube, e)
            record["errors"].append({"tube": tube.tube, "error": str(e)})
            continue
        gated[tube.tube] = g
        if tube.role == "fmo":
            fmo_of[tube.panel] = g
        record["tubes"][tube.tube] = {"panel": tube.panel, "role": tube.role, "fcs": tube.fcs, **_tube_qc(g, settings),
                                      "gating_source": source}
        if on_gated is not None:
            on_gated(tube, g, record["tubes"][tube.tube])
        reviews.append(_tube_review(tube, settings.panels, gate_dependencies(template), record["tubes"][tube.tube]))
        tables.append((tube.tube, g.table()))
        if settings.plots:
            _plot_tube(plot_dir, tube.tube, g, sample_id)
        if _readout(settings.panels, tube) == "pc_mrd":
            record["counts"][tube.tube] = _ngf_counts(g)
            q = record["tubes"][tube.tube]
            if record["counts"][tube.tube]["nucleated"] < settings.min_events:
                msg = (f"{tube.fcs}: only {record['counts'][tube.tube]['nucleated']} nucleated cells of "
                       f"{q['events']} events after QC (minimum {settings.min_events}): debris, dead cells or a "
                       f"failed acquisition")
                log.error("%s/%s: %s", sample_id, tube.tube, msg)
                record["errors"].append({"tube": tube.tube, "error": msg})
            pcs.append(_pc_events(sample_id, tube, g))
            # A marrow tube's events are done with (its masks stay): free them before the next
            # tube, so a sample's peak memory is one tube's, not the sum of its tubes'.
            g.view.release()
    stained = [t for t in tubes if t.role == "stain" and t.tube in gated]
    _write_gating_tables(outdir, tables)
    gates_dir_files = []
    for t in [t for t in tubes if t.tube in gated]:
        is_main = stained and t.tube == stained[0].tube
        name = SAMPLE_FILES.gates if is_main else f"gates_{t.tube}.xml"
        with atomic_open(outdir / name, "wb") as fh:
            fh.write(gated[t.tube].gatingml())
        gates_dir_files.append(name)
        record["gates_of"][t.tube] = name
    if not any(f == SAMPLE_FILES.gates for f in gates_dir_files):
        with atomic_open(outdir / SAMPLE_FILES.gates, "wb") as fh:  # nothing gated: an empty, valid document
            fh.write(b'<?xml version="1.0" encoding="UTF-8"?>\n<gating:Gating-ML xmlns:gating='
                     b'"http://www.isac-net.org/std/Gating-ML/v2.0/gating"/>\n')
    record["gates_files"] = gates_dir_files
    # Panel read-outs that need no cohort model.
    record.update(_panel_readouts(tubes, gated, settings.panels))
    _save_nk_events(outdir / SAMPLE_FILES.nk_events, sample_id, tubes, gated, settings.panels)
    save_pc_events(outdir / SAMPLE_FILES.pc_events, pcs)  # empty for samples without marrow tubes
    record["pc_events"] = SAMPLE_FILES.pc_events if pcs else None
    usable = set(gated) - {e["tube"] for e in record["errors"]}
    record["review_needed"] = [r.as_dict() for r in review_needed(reviews)]
    record["status"] = _status(bool(usable), bool(record["errors"]), bool(record["review_needed"]))
    sources = {q["gating_source"] for q in record["tubes"].values()}
    record["gating_source"] = next((s for s in ("reviewed", "template") if s in sources), "data")
    if annotate is not None:
        annotate(record)
    with atomic_open(outdir / SAMPLE_FILES.stage1, "w") as fh:
        json.dump(record, fh, indent=1, default=json_default)
    return record


def _status(usable: bool, errors: bool, review: bool) -> str:
    """``failed`` (no usable tube), ``partial`` (some tubes failed), ``review`` (read-outs rest on
    unsure gates) or ``ok``: the worst that applies (a partial sample's reviews are in its list)."""
    return "failed" if not usable else "partial" if errors else "review" if review else "ok"


def _tube_review(tube: Tube, panels: Mapping[str, Panel], dependencies: Mapping[str, frozenset[str]],
                 qc: Mapping) -> TubeReview:
    """The review's view of a gated tube from its template's gate dependencies
    (:func:`~mrdflow.sample._review.gate_dependencies`) and its QC record's ``gate_review``."""
    return TubeReview(tube.tube, _readout(panels, tube), dependencies,
                      tuple(GateReview(r["gate"], r["reason"]) for r in qc["gate_review"]))


def _readout(panels: Mapping[str, Panel], tube: Tube) -> str | None:
    """The read-out a tube's panel feeds (``pc_mrd``, ``nk``, ``cart``; None for an unknown panel or
    one that feeds none)."""
    panel = panels.get(tube.panel)
    return panel.readout if panel is not None else None


def _save_nk_events(path: Path, sample_id: str, tubes: Sequence[Tube], gated: Mapping[str, TubeGating],
                    panels: Mapping[str, Panel]) -> None:
    """NK-gate events of the stained NK tube (logicle marker values and subset flags), for the
    cohort AnnData; an empty file for samples without one."""
    from mrdflow.atomic import atomic_path

    arrays: dict[str, np.ndarray] = {"sample_id": np.array(sample_id), "markers": np.array([], dtype="U32"),
                                     "values": np.zeros((0, 0), np.float32)}
    stain = next((t for t in tubes if _readout(panels, t) == "nk" and t.role == "stain" and t.tube in gated), None)
    if stain is not None:
        k = gated[stain.tube].events_in("NK", STREAM_KEEP["NK"])
        arrays["markers"] = np.array(k.markers, dtype="U32")
        arrays["values"] = k.values
        for flag in STREAM_KEEP["NK"]:
            arrays[flag] = k.flags[flag]
    with atomic_path(path, suffix=".npz") as tmp:
        with open(tmp, "wb") as fh:
            np.savez_compressed(fh, **arrays)


def _plot_tube(plot_dir: Path, tube: str, g: TubeGating, sample_id: str) -> None:
    from mrdflow.sample._plots import plot_gating

    title = f"{sample_id} · {tube}"
    if "placement" in g.qc:  # streamed: the plots show the placement sample, with its own counts
        p = g.qc["placement"]
        title += f" · placement sample of {p['events']:,} of {p['of']:,} events"
        g = g.sample
    plot_gating(g, plot_dir / tube, title=title)


def _panel_readouts(tubes: Sequence[Tube], gated: Mapping[str, TubeGating], panels: Mapping[str, Panel]) -> dict:
    """The ``nk`` and ``cart`` sections of the sample's tubes whose panels feed those read-outs."""
    out: dict[str, Any] = {}
    by_tube = {t.tube: t for t in tubes}
    nk_stain = [t for t in tubes if _readout(panels, t) == "nk" and t.role == "stain" and t.tube in gated]
    if nk_stain:
        from mrdflow.sample._nk import nk_metrics

        fmo = next((gated[t.tube] for t in tubes
                    if _readout(panels, t) == "nk" and t.role == "fmo" and t.tube in gated), None)
        row = by_tube[nk_stain[0].tube]
        out["nk"] = nk_metrics(gated[row.tube], fmo, row.beads_per_tube, row.blood_volume_ul).as_dict()
    cart = [t for t in tubes if _readout(panels, t) == "cart" and t.role == "stain" and t.tube in gated]
    if cart:
        from mrdflow.sample._cart import cart_metrics

        t = cart[0]
        row = by_tube[t.tube]
        out["cart"] = cart_metrics(gated[t.tube], row.beads_per_tube, row.blood_volume_ul).as_dict()
    return out


# ---------------------------------------------------------------------------------------------
# Stage 2
# ---------------------------------------------------------------------------------------------

def _light_chain(kappa: int, lam: int, ratio_cut: float = 4.0) -> str:
    if kappa + lam == 0:
        return ""
    if lam == 0 or kappa / max(lam, 1) > ratio_cut:
        return "kappa"
    if kappa == 0 or lam / max(kappa, 1) > ratio_cut:
        return "lambda"
    return "polytypic"


def finish_sample(stage1: Mapping, outdir: str | Path, settings: SampleSettings, model: PCModel | None,
                  client=None) -> dict:
    """Stage 2: aberrant PCs from the cohort model, the MRD call, and ``metrics.json`` (checked
    against ``metrics.schema.yaml`` as it is written); returns the JSON object written."""
    outdir = Path(outdir)
    counts = stage1.get("counts", {})
    review = tuple(ReviewItem(r["readout"], r["gate"], r["tube"], r["reason"]) for r in stage1.get("review_needed", ()))
    pc, mrd = _pc_and_mrd(stage1, counts, outdir, settings, model, client) if counts else (None, None)
    if pc is not None and mrd is not None:  # the values stand, marked when a gate they rest on was unsure
        pc_why, mrd_why = readout_reason(review, PC_PCT), readout_reason(review, MRD_CALL)
        pc = replace(pc, review_needed=bool(pc_why), review_reason=pc_why)
        mrd = replace(mrd, review_needed=bool(mrd_why), review_reason=mrd_why)
    after = readout_values(pc, mrd, stage1.get("nk"), stage1.get("cart"))
    metrics = SampleMetrics(
        **{k: stage1[k] for k in ("sample_id", "patient_id", "specimen", "visit", "day", "infusion", "status")},
        errors=tuple(TubeError(e["tube"], e["error"]) for e in stage1.get("errors", [])),
        review_needed=review,
        tubes={t: TubeQC.from_dict(q) for t, q in stage1.get("tubes", {}).items()},
        nk=stage1.get("nk"),
        cart=stage1.get("cart"),
        pc=pc,
        mrd=mrd,
        gating_source=stage1.get("gating_source", "data"),
        review=_review_section(stage1, review, after, outdir, settings, model, client),
    )
    return write_metrics(outdir / SAMPLE_FILES.metrics, metrics)


def readout_values(pc: PCMetrics | None, mrd: MRDMetrics | None, nk: Mapping | None,
                   cart: Mapping | None) -> dict[str, Any]:
    """The sample's headline read-outs by their review names (``PC %``, ``aberrant PCs``,
    ``MRD call``, ``MRD level`` (fraction), ``NKG2A %``, ``CAR-T cells/µL``); those it has."""
    out: dict[str, Any] = {}
    if pc is not None:
        out[PC_PCT] = pc.pc_pct
        out[ABERRANT_PC] = pc.n_aberrant_pc
    if mrd is not None:
        out[MRD_CALL] = mrd.mrd_status
        out["MRD level"] = mrd.call.mrd_level if mrd.call is not None else None
    if nk is not None:
        out[NKG2A_PCT] = nk.get("nkg2a_pct")
    if cart is not None:
        out[CART_COUNT] = cart.get("cells_per_ul")
    return out


def _review_section(stage1: Mapping, review: Sequence[ReviewItem], after: Mapping[str, Any], outdir: Path,
                    settings: SampleSettings, model: PCModel | None, client) -> dict:
    """metrics.json ``review``: the state, and for a sample gated with a reviewer's gates
    (``stage1["review"]``, :mod:`mrdflow.review`) the audit, with the read-outs from the
    data-driven gates (its own stage-1 record, mapped to the same PC model) and the reviewed ones."""
    audit = stage1.get("review")
    if audit is None:
        return {"state": "needed" if review else "not_needed"}
    out = dict(audit)
    data = json.loads((outdir / audit["data_stage1"]).read_text())
    del out["data_stage1"]
    counts = data.get("counts", {})
    pc, mrd = _pc_and_mrd(data, counts, outdir, settings, model, client) if counts else (None, None)
    out["readouts_before"] = readout_values(pc, mrd, data.get("nk"), data.get("cart"))
    out["readouts_after"] = dict(after)
    out["state"] = "failed" if out.get("problems") else "needed" if review else "reviewed"
    return out


def _pc_and_mrd(stage1, counts, outdir, settings: SampleSettings, model: PCModel | None,
                client) -> tuple[PCMetrics, MRDMetrics]:
    tubes_qc = stage1.get("tubes", {})
    pcs = load_pc_events(outdir / stage1["pc_events"]) if stage1.get("pc_events") else []
    aberrant_by_tube: dict[str, int] = {}
    ab_kappa = ab_lambda = 0
    if model is not None and pcs:
        clusters = map_events(model, pcs, client=client)
        if settings.reference is None:
            raise MrdflowError("the normal-PC reference (config clustering.reference) is needed to count aberrant PCs")
        reference = load_reference(settings.reference)
        for e in pcs:
            ab = aberrant_events(model, e, clusters[e.tube], reference)
            aberrant_by_tube[e.tube] = int(ab.sum())
            if e.kappa is not None:
                ab_kappa += int((ab & e.kappa & ~e.lambda_).sum())
                ab_lambda += int((ab & e.lambda_ & ~e.kappa).sum())
    n_nuc = sum(c["nucleated"] for c in counts.values())
    n_pc = sum(c["pc"] for c in counts.values())
    n_ab = sum(aberrant_by_tube.values())
    kappa = sum(c.get("pc_kappa", 0) for c in counts.values())
    lam = sum(c.get("pc_lambda", 0) for c in counts.values())
    pc = PCMetrics(
        n_nucleated=n_nuc,
        n_pc=n_pc,
        pc_pct=100.0 * n_pc / n_nuc if n_nuc else None,
        n_aberrant_pc=n_ab if model is not None else None,
        aberrant_pc_pct=(100.0 * n_ab / n_nuc if n_nuc else None) if model is not None else None,
        n_normal_pc=n_pc - n_ab if model is not None else None,
        aberrant_pct_of_pc=(100.0 * n_ab / n_pc if n_pc else None) if model is not None else None,
        pc_kappa=kappa,
        pc_lambda=lam,
        pc_kappa_lambda_ratio=(kappa / lam if lam else None),
        aberrant_light_chain=_light_chain(ab_kappa, ab_lambda),
        aberrant_by_tube=aberrant_by_tube,
    )
    mast = sum(c.get("mast_cells", 0) for c in counts.values() if "mast_cells" in c)
    bcp = sum(c.get("bcp", 0) for c in counts.values() if "bcp" in c)
    n_tube1 = sum(c["nucleated"] for c in counts.values() if "mast_cells" in c)
    nrbc = sum(c.get("nrbc") or 0 for c in counts.values() if "mast_cells" in c)
    hd = hemodilution(n_tube1, mast, bcp, nrbc, settings.hemodilution) if n_tube1 else None
    tube_counts = []
    for tube, c in counts.items():
        q = tubes_qc.get(tube, {})
        failed = bool(q.get("flow_rate_failed"))
        why = f"flow-rate QC removed {q.get('time_removed_pct', 0):.0f}% of events" if failed else ""
        tube_counts.append(TubeCount(tube, c["nucleated"], aberrant_by_tube.get(tube, 0), not failed, why))
    hemo = {
        "hemodilution": bool(hd and hd.flagged),
        "hemodilution_reason": hd.reason() if hd else "tube 1 (mast cells, BCP) not analysed",
        "hemodilution_pct": hd.pct if hd else {},
    }
    if model is None:
        return pc, MRDMetrics("not_evaluable", "no PC model (cohort clustering did not run)", **hemo)
    call = mrd_call(tube_counts, settings.mrd, hemodiluted=bool(hd and hd.flagged))
    figures = MRDCall(
        mrd_level=call.level,
        n_nucleated=call.n_nucleated,
        n_aberrant_pc=call.n_aberrant,
        sensitivity=call.sensitivity,
        depth=call.depth,
        quantifiable=call.quantifiable,
        tubes_used=tuple(call.tubes),
    )
    return pc, MRDMetrics(call.status, call.reason, **hemo, call=figures)

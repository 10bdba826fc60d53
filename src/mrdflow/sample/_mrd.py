"""The MRD call (IMWG 2016 / EuroFlow NGF), as pure functions.

Definitions (brief section 3): N = nucleated cells analysed (after time QC, singlets and debris
exclusion), A = aberrant plasma-cell events. Several tubes of one specimen pool N and A.

* achieved sensitivity = LOD / N (LOD events, default 20);
* level = A / N when A ≥ LOD;
* positive when A ≥ LOD (quantifiable when A ≥ LLOQ, default 50);
* negative when A < LOD and sensitivity ≤ the required sensitivity (default 10^-5);
* not evaluable when A < LOD but N is too small, or the specimen failed quality (flow-rate QC,
  too few events, hemodilution under the ``not_evaluable`` policy). Never "negative" then.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

from mrdflow.config import schema_defaults

__all__ = [
    "MRDSettings",
    "TubeCount",
    "MRDResult",
    "HemodilutionSettings",
    "HemodilutionResult",
    "hemodilution",
    "mrd_call",
]

#: the plasma-cell gate of the NGF templates (PC % and the aberrant PCs are counted in it)
PC_GATE = "PC"
#: the NGF gates of the marrow-only populations the hemodilution check counts (mast cells, B-cell
#: precursors, nucleated red cells)
HEMODILUTION_GATES = ("MastCells", "BCP", "NRBC")

NEGATIVE = "negative"
POSITIVE = "positive"
NOT_EVALUABLE = "not_evaluable"

# Field defaults come from workflow/schemas/config.schema.yaml (config ``mrd``), the one place they are written.
_MRD = schema_defaults("mrd")
_HEMO = _MRD["hemodilution"]


@dataclass(frozen=True)
class MRDSettings:
    """MRD thresholds (config ``mrd``; defaults from the config schema).

    lod_events / lloq_events: events. required_sensitivity: the sensitivity a negative must reach
    (fraction). min_nucleated: below this many nucleated cells (events) the specimen is not
    evaluable whatever it shows (0: rely on sensitivity).
    hemodilution_policy: ``not_evaluable`` turns a negative on a hemodiluted specimen into not
    evaluable; ``flag`` keeps the negative and reports the flag.
    """

    lod_events: int = _MRD["lod_events"]
    lloq_events: int = _MRD["lloq_events"]
    required_sensitivity: float = _MRD["required_sensitivity"]
    min_nucleated: int = _MRD["min_nucleated"]
    hemodilution_policy: str = _MRD["hemodilution_policy"]

    def __post_init__(self):
        if self.lod_events < 1 or self.lloq_events < self.lod_events:
            raise ValueError("need 1 <= lod_events <= lloq_events")
        if not (0 < self.required_sensitivity < 1):
            raise ValueError("required_sensitivity must be in (0, 1)")
        if self.hemodilution_policy not in ("not_evaluable", "flag"):
            raise ValueError("hemodilution_policy must be 'not_evaluable' or 'flag'")


@dataclass(frozen=True)
class TubeCount:
    """One tube's contribution: nucleated events N and aberrant-PC events A (after QC)."""

    tube: str
    n_nucleated: int
    n_aberrant: int
    qc_passed: bool = True
    qc_reason: str = ""


@dataclass(frozen=True)
class MRDResult:
    """The call for one specimen (all its tubes pooled).

    level: A/N as a fraction (None when A < LOD). sensitivity: LOD/N (fraction; None when N = 0).
    depth: the decade reached, e.g. 1e-5 or 1e-6 (negative and positive calls), else None.
    """

    status: str
    reason: str
    n_nucleated: int
    n_aberrant: int
    level: float | None
    sensitivity: float | None
    depth: float | None
    quantifiable: bool
    hemodilution: bool
    tubes: tuple[str, ...] = field(default_factory=tuple)

    def as_dict(self) -> dict:
        d = asdict(self)
        d["tubes"] = list(self.tubes)
        return d


def _depth(sensitivity: float) -> float:
    """The finest power of ten that the achieved sensitivity reaches (2e-6 -> 1e-5; 8e-7 -> 1e-6)."""
    return 10.0 ** math.ceil(math.log10(sensitivity) - 1e-12)


def mrd_call(
    tubes: Sequence[TubeCount],
    settings: MRDSettings = MRDSettings(),
    *,
    hemodiluted: bool = False,
) -> MRDResult:
    """Pool the tubes of a specimen and make the MRD call.

    A tube that failed QC contributes nothing; if every tube failed, the specimen is not evaluable
    with the tubes' reasons.
    """
    used = [t for t in tubes if t.qc_passed]
    failed = [t for t in tubes if not t.qc_passed]
    names = tuple(t.tube for t in used)
    n = sum(int(t.n_nucleated) for t in used)
    a = sum(int(t.n_aberrant) for t in used)
    if any(t.n_nucleated < 0 or t.n_aberrant < 0 for t in tubes):
        raise ValueError("event counts cannot be negative")
    if not used:
        why = "; ".join(f"{t.tube}: {t.qc_reason or 'QC failed'}" for t in failed) or "no tubes"
        return MRDResult(NOT_EVALUABLE, f"sample quality: {why}", 0, 0, None, None, None, False, hemodiluted, ())
    sens = settings.lod_events / n if n > 0 else None
    qc_note = "; ".join(f"tube {t.tube} excluded ({t.qc_reason or 'QC failed'})" for t in failed)
    suffix = f"; {qc_note}" if qc_note else ""
    if a >= settings.lod_events:
        quant = a >= settings.lloq_events
        level = a / n
        reason = (
            f"{a} aberrant PC events >= LOD {settings.lod_events}"
            + ("" if quant else f" (below LLOQ {settings.lloq_events}: positive, not quantifiable)")
            + (" ; hemodilution flagged: level may be underestimated" if hemodiluted else "")
            + suffix
        )
        return MRDResult(POSITIVE, reason, n, a, level, sens, _depth(sens), quant, hemodiluted, names)
    if n < max(1, settings.min_nucleated) or sens is None or sens > settings.required_sensitivity:
        need = math.ceil(settings.lod_events / settings.required_sensitivity)
        reason = (
            f"{a} aberrant PC events < LOD {settings.lod_events} but only {n} nucleated cells: sensitivity "
            f"{sens:.1e} does not reach {settings.required_sensitivity:.0e} (needs >= {need})" if sens
            else "no nucleated cells after QC"
        ) + suffix
        return MRDResult(NOT_EVALUABLE, reason, n, a, None, sens, None, False, hemodiluted, names)
    if hemodiluted and settings.hemodilution_policy == "not_evaluable":
        return MRDResult(
            NOT_EVALUABLE,
            f"hemodilution: {a} aberrant PC events < LOD at sensitivity {sens:.1e}, but the aspirate is "
            f"hemodiluted so a negative cannot be called" + suffix,
            n, a, None, sens, None, False, True, names,
        )
    reason = (
        f"{a} aberrant PC events < LOD {settings.lod_events} in {n} nucleated cells: sensitivity {sens:.1e}"
        + (" ; hemodilution flagged" if hemodiluted else "")
        + suffix
    )
    return MRDResult(NEGATIVE, reason, n, a, None, sens, _depth(sens), False, hemodiluted, names)


@dataclass(frozen=True)
class HemodilutionSettings:
    """Reference minimum frequencies (% of nucleated cells) of bone-marrow-only populations.

    Below the reference, a population counts as a hemodilution marker; ``min_markers`` of them
    flag the aspirate. The defaults (config schema, ``mrd.hemodilution``) follow published NGF
    practice (mast cells ≥ 0.002%, B-cell precursors ≥ 0.01%, nucleated red cells ≥ 0.5%); labs set
    their own.
    """

    mast_cell_min_pct: float = _HEMO["mast_cell_min_pct"]
    bcp_min_pct: float = _HEMO["bcp_min_pct"]
    nrbc_min_pct: float = _HEMO["nrbc_min_pct"]
    min_markers: int = _HEMO["min_markers"]


@dataclass(frozen=True)
class HemodilutionResult:
    flagged: bool
    below: tuple[str, ...]
    pct: dict

    def reason(self) -> str:
        if not self.flagged:
            return ""
        return "BM-specific populations below reference: " + ", ".join(self.below)


def hemodilution(n_nucleated: int, mast: int, bcp: int, nrbc: int,
                 settings: HemodilutionSettings = HemodilutionSettings()) -> HemodilutionResult:
    """Flag a hemodiluted aspirate from mast-cell, B-cell-precursor and nucleated-red-cell counts
    (events, out of ``n_nucleated`` nucleated events)."""
    if n_nucleated <= 0:
        return HemodilutionResult(False, (), {})
    pct = {
        "mast_cells": 100.0 * mast / n_nucleated,
        "b_cell_precursors": 100.0 * bcp / n_nucleated,
        "nucleated_red_cells": 100.0 * nrbc / n_nucleated,
    }
    ref = {
        "mast_cells": settings.mast_cell_min_pct,
        "b_cell_precursors": settings.bcp_min_pct,
        "nucleated_red_cells": settings.nrbc_min_pct,
    }
    below = tuple(k for k in pct if pct[k] < ref[k])
    return HemodilutionResult(len(below) >= settings.min_markers, below, pct)



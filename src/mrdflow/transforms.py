"""Compensation and transforms, through FlowKit.

FlowKit parses and validates spillover matrices (``flowkit.Matrix``) and provides the Gating-ML
transforms (logicle, asinh, linear). We use its objects for both, and apply them to float32 event
matrices in place of FlowKit's ``Sample`` (which keeps float64 copies of raw, compensated and
transformed events: 3.5 GB for a 10^7-event tube). The arithmetic is FlowKit's: compensation is the
events times the inverse spillover matrix; the transform is the FlowKit transform's ``apply``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

import flowkit as fk
import numpy as np

from mrdflow.errors import MrdflowError

__all__ = [
    "CompensationError",
    "Compensation",
    "compensation_for",
    "make_transform",
    "parse_spillover",
    "transform_events",
]


class CompensationError(MrdflowError):
    """A spillover matrix is missing, malformed, singular or names channels the file lacks."""


@dataclass(frozen=True)
class Compensation:
    """A spillover matrix bound to detector names, with its inverse for compensation.

    ``detectors``: $PnN of the fluorescence channels, in matrix order. ``spill``: the spillover
    matrix (row i = fraction of fluorochrome i seen in each detector). ``source``: where it came from.
    """

    detectors: tuple[str, ...]
    spill: np.ndarray
    source: str

    @property
    def inverse(self) -> np.ndarray:
        return np.linalg.inv(self.spill)

    def apply(self, events: np.ndarray, pnn: Sequence[str], *, file: str = "") -> np.ndarray:
        """Compensate ``events`` (events × channels, channel values) and return a new float32 array.

        Only the matrix's detectors change; scatter and time are copied as they are.
        """
        where = f"{file}: " if file else ""
        index = {n: i for i, n in enumerate(pnn)}
        missing = [d for d in self.detectors if d not in index]
        if missing:
            raise CompensationError(
                f"{where}spillover matrix ({self.source}) names channel(s) {missing} that the file lacks; "
                f"file channels: {list(pnn)}"
            )
        cols = [index[d] for d in self.detectors]
        out = np.array(events, dtype=np.float32, copy=True)
        out[:, cols] = (events[:, cols].astype(np.float32, copy=False) @ self.inverse.astype(np.float32))
        return out


def parse_spillover(text: str, *, source: str = "$SPILLOVER") -> tuple[tuple[str, ...], np.ndarray]:
    """Parse an FCS ``$SPILLOVER``/``$SPILL`` value ("n,ch1,...,chn,v11,...,vnn")."""
    parts = [p.strip() for p in text.split(",")]
    try:
        n = int(float(parts[0]))
    except (ValueError, IndexError):
        raise CompensationError(f"{source}: first field must be the number of channels, got {parts[:1]}") from None
    if n < 1 or len(parts) != 1 + n + n * n:
        raise CompensationError(f"{source}: expected 1 + {n} names + {n * n} values, got {len(parts)} fields")
    names = tuple(parts[1: 1 + n])
    try:
        values = np.array([float(v) for v in parts[1 + n:]], dtype=np.float64).reshape(n, n)
    except ValueError as e:
        raise CompensationError(f"{source}: non-numeric spillover value ({e})") from None
    return names, values


def _checked(detectors: Sequence[str], spill: np.ndarray, source: str) -> Compensation:
    if not np.all(np.isfinite(spill)):
        raise CompensationError(f"{source}: spillover matrix has NaN or infinite values")
    if len(set(detectors)) != len(detectors):
        raise CompensationError(f"{source}: spillover matrix names a channel twice: {list(detectors)}")
    cond = np.linalg.cond(spill)
    if not np.isfinite(cond) or cond > 1e12:
        raise CompensationError(f"{source}: spillover matrix is singular (condition number {cond:.3g})")
    # Build FlowKit's Matrix too: it is the reference parser/validator for spillover data.
    fk.Matrix(spill, list(detectors))
    return Compensation(tuple(detectors), spill.astype(np.float64), source)


def compensation_for(spec: str, metadata: Mapping[str, str], *, file: str = "", workdir: str | Path = ".") -> Compensation | None:
    """The compensation a panel's config asks for, for one file.

    ``spec``: ``"fcs"`` uses the file's ``$SPILLOVER`` (or ``$SPILL``/``SPILL``); ``"none"`` returns
    None; anything else is the path of a matrix file FlowKit reads (CSV/TSV with detector header).
    """
    where = f"{file}: " if file else ""
    if spec == "none":
        return None
    if spec == "fcs":
        for key in ("$SPILLOVER", "$SPILL", "SPILL", "SPILLOVER"):
            if key in metadata and metadata[key].strip():
                names, values = parse_spillover(metadata[key], source=f"{where}{key}")
                return _checked(names, values, f"{where}{key}")
        raise CompensationError(
            f"{where}compensation 'fcs' requested but the file has no $SPILLOVER/$SPILL keyword "
            f"(set the panel's compensation to a matrix file or 'none')"
        )
    path = Path(workdir) / spec if not Path(spec).is_absolute() else Path(spec)
    if not path.is_file():
        raise CompensationError(f"{where}spillover matrix file {spec!r} not found")
    try:
        import pandas as pd

        df = pd.read_csv(path, sep=None, engine="python", index_col=None)
        if df.columns[0].strip() == "" or df.iloc[:, 0].dtype == object:
            df = df.set_index(df.columns[0])
        detectors = [str(c).strip() for c in df.columns]
        spill = df.to_numpy(dtype=np.float64)
    except Exception as e:  # pandas raises many types on malformed text
        raise CompensationError(f"{where}cannot read spillover matrix file {spec!r}: {e}") from None
    if spill.shape != (len(detectors), len(detectors)):
        raise CompensationError(f"{where}spillover matrix file {spec!r} is not square: {spill.shape}")
    return _checked(detectors, spill, str(spec))


def make_transform(spec: Mapping):
    """A FlowKit transform from a config mapping ``{type, t, w, m, a}``."""
    kind = spec["type"]
    t = float(spec.get("t", 262144))
    if kind == "logicle":
        return fk.transforms.LogicleTransform(
            param_t=t, param_w=float(spec.get("w", 0.5)), param_m=float(spec.get("m", 4.5)), param_a=float(spec.get("a", 0.0))
        )
    if kind == "asinh":
        return fk.transforms.AsinhTransform(param_t=t, param_m=float(spec.get("m", 4.5)), param_a=float(spec.get("a", 0.0)))
    if kind == "linear":
        return fk.transforms.LinearTransform(param_t=t, param_a=float(spec.get("a", 0.0)))
    raise ValueError(f"unknown transform type {kind!r}")


def transform_events(events: np.ndarray, columns: Sequence[int], transform) -> np.ndarray:
    """Apply a FlowKit transform to ``columns`` of ``events`` in place (float32 kept)."""
    if len(columns) == 0 or events.shape[0] == 0:
        return events
    cols = list(columns)
    events[:, cols] = transform.apply(events[:, cols].astype(np.float64)).astype(np.float32)
    return events

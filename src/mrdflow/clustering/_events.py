"""Plasma-cell events as the per-sample stage hands them to the clustering: one tube's PC events
(panel markers in logicle units, κ/λ calls where the tube measures them), saved per sample as a
compressed ``pc_events.npz``."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mrdflow.atomic import atomic_path
from mrdflow.errors import MrdflowError

#: Markers shared by both NGF tubes, used to cluster PCs (logicle units).
BACKBONE = ("CD138", "CD27", "CD38", "CD56", "CD45", "CD19")


class ClusteringError(MrdflowError):
    """The PC model cannot be fitted or applied (names the file or setting and the cause)."""


@dataclass
class PCEvents:
    """One tube's plasma-cell events for clustering.

    sample_id, tube: identity. markers: column names. values: events × markers (float32, logicle).
    kappa / lambda_: per-event light-chain calls (bool) where the tube measures them, else None.
    """

    sample_id: str
    tube: str
    markers: list[str]
    values: np.ndarray
    kappa: np.ndarray | None = None
    lambda_: np.ndarray | None = None

    def backbone(self) -> np.ndarray:
        idx = [self.markers.index(m) for m in BACKBONE]
        return self.values[:, idx]


def save_pc_events(path: str | Path, tubes: Sequence[PCEvents]) -> None:
    """Write a sample's PC events (all its NGF tubes) to one compressed ``.npz``, atomically."""
    arrays: dict[str, np.ndarray] = {"tubes": np.array([t.tube for t in tubes], dtype="U64")}
    sample = tubes[0].sample_id if tubes else ""
    arrays["sample_id"] = np.array(sample)
    for t in tubes:
        arrays[f"{t.tube}__values"] = np.asarray(t.values, dtype=np.float32)
        arrays[f"{t.tube}__markers"] = np.array(t.markers, dtype=str)
        if t.kappa is not None:
            arrays[f"{t.tube}__kappa"] = t.kappa.astype(bool)
            arrays[f"{t.tube}__lambda"] = t.lambda_.astype(bool)
    with atomic_path(path, suffix=".npz") as tmp:
        with open(tmp, "wb") as fh:
            np.savez_compressed(fh, **arrays)


def load_pc_events(path: str | Path) -> list[PCEvents]:
    """Read what :func:`save_pc_events` wrote."""
    try:
        z = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as e:
        raise ClusteringError(f"{path}: cannot read PC events ({e})") from None
    out = []
    sample = str(z["sample_id"])
    for tube in z["tubes"].tolist():
        k = f"{tube}__kappa"
        out.append(PCEvents(
            sample, tube, z[f"{tube}__markers"].tolist(), z[f"{tube}__values"],
            z[k] if k in z.files else None, z[f"{tube}__lambda"] if k in z.files else None,
        ))
    return out


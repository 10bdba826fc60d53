"""Plasma-cell compartment clustering on dask: normal versus aberrant PCs.

A cohort-level model is fitted on PC events pooled across samples (a seeded, capped subsample per
tube so that PC-rich baseline marrows do not drown the week-4 tubes), then every tube's PC events are
mapped to their nearest cluster in parallel. Clusters are labelled by their phenotypic distance from
the normal-PC reference (``resources/reference/normal_pc.yaml``) and by their light-chain ratio
(tube 2 measures cytoplasmic κ and λ).

The model is scikit-learn's ``MiniBatchKMeans`` on the NGF backbone markers (present in both tubes,
logicle units); dask.distributed runs the loading/subsampling and the mapping, on a local cluster
or on an existing scheduler (config ``clustering``). Mapping is a deterministic nearest-centre
assignment, so results do not depend on where or in how many chunks it runs.
"""

from __future__ import annotations

import contextlib
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from mrdflow.atomic import atomic_open
from mrdflow.config import schema_defaults

from ._events import BACKBONE, ClusteringError, PCEvents, load_pc_events
from ._reference import NormalPCReference

__all__ = [
    "PC_MODEL_JSON",
    "ClusterLabel",
    "ClusteringSettings",
    "PCModel",
    "dask_client",
    "fit_pc_model",
    "label_clusters",
    "map_events",
    "aberrant_events",
]

#: The cohort PC model's file (rule ``fit_pc_model``), relative to the workflow's working directory.
PC_MODEL_JSON = "results/cohort/pc_model.json"

#: config ``clustering`` defaults, from the config schema (the one place a default is written)
_CLUSTERING = schema_defaults("clustering")


@dataclass(frozen=True)
class ClusteringSettings:
    """Config ``clustering``.

    n_clusters: k of the k-means model. max_events_per_tube: cap on each tube's PC events in the
    fitting subsample (events). max_events_total: cap on the whole fitting subsample (events): with
    many samples the per-tube cap shrinks to ``max_events_total / (2 tubes × samples)``, so the
    pooled matrix (and k-means' float64 copy of it) stays bounded however large the cohort. seed:
    random seed (subsample and k-means). chunk_events: events per mapping task. scheduler:
    ``local`` (a LocalCluster started here) or ``address`` (connect to ``address``). n_workers /
    threads_per_worker / processes / memory_limit: the local cluster. max_distance: a cluster
    whose phenotype distance (RMS z-score) to the normal-PC reference exceeds this is aberrant; so
    is one with at least ``min_deviating`` markers beyond ``deviation_z`` reference SDs (normal PCs
    vary on single markers, e.g. CD19 or CD56, but rarely on two). monotypic_ratio: κ:λ above this
    (or below its inverse) is monotypic. min_lc_events: light-chain-positive PCs a cluster needs
    before its ratio counts.
    """

    n_clusters: int = _CLUSTERING["n_clusters"]
    max_events_per_tube: int = _CLUSTERING["max_events_per_tube"]
    max_events_total: int = _CLUSTERING["max_events_total"]
    seed: int = _CLUSTERING["seed"]
    chunk_events: int = _CLUSTERING["chunk_events"]
    scheduler: str = _CLUSTERING["scheduler"]
    address: str | None = _CLUSTERING["address"]
    n_workers: int = _CLUSTERING["n_workers"]
    threads_per_worker: int = _CLUSTERING["threads_per_worker"]
    processes: bool = _CLUSTERING["processes"]
    memory_limit: str = _CLUSTERING["memory_limit"]
    max_distance: float = _CLUSTERING["max_distance"]
    deviation_z: float = _CLUSTERING["deviation_z"]
    min_deviating: int = _CLUSTERING["min_deviating"]
    monotypic_ratio: float = _CLUSTERING["monotypic_ratio"]
    min_lc_events: int = _CLUSTERING["min_lc_events"]


# ---------------------------------------------------------------------------------------------
# dask
# ---------------------------------------------------------------------------------------------

@contextlib.contextmanager
def dask_client(settings: ClusteringSettings):
    """A dask.distributed Client: a LocalCluster (closed afterwards) or the configured scheduler."""
    from dask.distributed import Client, LocalCluster

    if settings.scheduler == "address":
        if not settings.address:
            raise ClusteringError("clustering.scheduler is 'address' but clustering.address is empty")
        client = Client(settings.address, timeout="30s")
        try:
            yield client
        finally:
            client.close()
        return
    with LocalCluster(
        n_workers=settings.n_workers,
        threads_per_worker=settings.threads_per_worker,
        processes=settings.processes,
        memory_limit=settings.memory_limit,
        dashboard_address=None,
    ) as cluster, Client(cluster) as client:
        yield client


def fit_cap(settings: ClusteringSettings, n_files: int) -> int:
    """PC events per tube in the fitting subsample: ``max_events_per_tube``, lowered so that
    ``n_files`` samples of two NGF tubes give at most ``max_events_total`` events."""
    return max(1, min(settings.max_events_per_tube, settings.max_events_total // max(1, 2 * n_files)))


def _subsample(path: str, cap: int, seed: int) -> np.ndarray:
    """Backbone events of one sample file, at most ``cap`` per tube, seeded by the file name."""
    parts = []
    for t in load_pc_events(path):
        x = t.backbone()
        if x.shape[0] > cap:
            rng = np.random.default_rng([seed, _stable_hash(f"{t.sample_id}/{t.tube}")])
            x = x[np.sort(rng.choice(x.shape[0], cap, replace=False))]
        parts.append(x)
    return np.concatenate(parts) if parts else np.zeros((0, len(BACKBONE)), np.float32)


def _stable_hash(text: str) -> int:
    import hashlib

    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little")


@dataclass(frozen=True)
class ClusterLabel:
    """One cluster: its size in the fitting sample, backbone medians, distance to normal (RMS of
    per-marker z-scores), the markers deviating (|z| > 2), κ/λ events and ratio, and the call."""

    cluster: int
    n_fit: int
    medians: Mapping[str, float]
    distance: float
    deviating: tuple[str, ...]
    kappa: int
    lambda_: int
    kappa_lambda_ratio: float | None
    monotypic: bool
    aberrant: bool
    reason: str


@dataclass
class PCModel:
    """The fitted cohort model: k-means centres (backbone, logicle) and per-cluster labels."""

    centers: np.ndarray
    labels: list[ClusterLabel]
    settings: ClusteringSettings
    n_fit_events: int
    samples: list[str] = field(default_factory=list)

    @property
    def aberrant(self) -> np.ndarray:
        return np.array([lab.aberrant for lab in self.labels], dtype=bool)

    def predict(self, x: np.ndarray) -> np.ndarray:
        """Nearest centre (squared Euclidean), deterministic, float64 arithmetic."""
        if x.shape[0] == 0:
            return np.zeros(0, dtype=np.int32)
        # One centre at a time with elementwise arithmetic (no BLAS): identical results whatever
        # the thread count, chunking or worker, and memory O(events × clusters).
        xx = x.astype(np.float64)
        d = np.empty((xx.shape[0], self.centers.shape[0]), dtype=np.float64)
        for j, c in enumerate(self.centers):
            d[:, j] = ((xx - c) ** 2).sum(axis=1)
        return np.argmin(d, axis=1).astype(np.int32)

    def save(self, path: str | Path) -> None:
        doc = {
            "backbone": list(BACKBONE),
            "centers": self.centers.tolist(),
            "labels": [asdict(lab) for lab in self.labels],
            "settings": asdict(self.settings),
            "n_fit_events": self.n_fit_events,
            "samples": self.samples,
        }
        with atomic_open(path, "w") as fh:
            json.dump(doc, fh, indent=1, default=float)

    @classmethod
    def load(cls, path: str | Path) -> PCModel:
        try:
            doc = json.loads(Path(path).read_text())
        except (OSError, ValueError) as e:
            raise ClusteringError(f"{path}: cannot read PC model ({e})") from None
        if doc.get("backbone") != list(BACKBONE):
            raise ClusteringError(f"{path}: model backbone {doc.get('backbone')} != {list(BACKBONE)}")
        labels = [ClusterLabel(**{**lab, "deviating": tuple(lab["deviating"])}) for lab in doc["labels"]]
        return cls(np.array(doc["centers"], dtype=np.float64), labels, ClusteringSettings(**doc["settings"]),
                   int(doc["n_fit_events"]), list(doc.get("samples", [])))


def _kl_ratio(kappa: int, lam: int) -> float | None:
    if kappa + lam == 0:
        return None
    return float("inf") if lam == 0 else kappa / lam


def label_clusters(centers: np.ndarray, cluster_sizes: np.ndarray, kappa: np.ndarray, lam: np.ndarray,
                   reference: NormalPCReference, settings: ClusteringSettings) -> list[ClusterLabel]:
    """Call each cluster normal or aberrant.

    Distance: RMS over the reference's backbone markers of (median − reference median) / reference
    SD. A cluster is aberrant when that distance exceeds ``max_distance``, when at least
    ``min_deviating`` markers deviate (|z| > ``deviation_z``), or when it is monotypic (κ:λ beyond
    ``monotypic_ratio`` with at least ``min_lc_events`` light-chain-positive events) and at least
    one marker deviates. Normal PCs are polytypic, so a monotypic cluster
    with a normal phenotype is reported but kept normal (a reason says so).
    """
    out = []
    markers = [m for m in BACKBONE if m in reference.median]
    for c in range(centers.shape[0]):
        z = {m: (centers[c, BACKBONE.index(m)] - reference.median[m]) / reference.sd[m] for m in markers}
        dist = float(math.sqrt(sum(v * v for v in z.values()) / max(1, len(z))))
        dev = tuple(m for m, v in z.items() if abs(v) > settings.deviation_z)
        k, l_ = int(kappa[c]), int(lam[c])
        ratio = _kl_ratio(k, l_)
        mono = (k + l_) >= settings.min_lc_events and ratio is not None and (
            ratio > settings.monotypic_ratio or ratio < 1.0 / settings.monotypic_ratio)
        if dist > settings.max_distance:
            why = f"phenotype distance {dist:.1f} > {settings.max_distance:g} ({', '.join(dev) or 'overall'})"
            aberrant = True
        elif len(dev) >= settings.min_deviating:
            aberrant, why = True, f"{len(dev)} markers deviate from normal PCs ({', '.join(dev)}; distance {dist:.1f})"
        elif mono and dev:
            aberrant, why = True, f"monotypic (κ:λ {ratio:.2g}) with deviating {', '.join(dev)}"
        elif mono:
            aberrant, why = False, f"monotypic (κ:λ {ratio:.2g}) but normal phenotype (distance {dist:.1f})"
        else:
            aberrant, why = False, f"normal phenotype (distance {dist:.1f})"
        out.append(ClusterLabel(c, int(cluster_sizes[c]), {m: float(centers[c, i]) for i, m in enumerate(BACKBONE)},
                                dist, dev, k, l_, None if ratio is None or not math.isfinite(ratio) else ratio,
                                bool(mono), aberrant, why))
    return out


# ---------------------------------------------------------------------------------------------
# Fit and map
# ---------------------------------------------------------------------------------------------

def fit_pc_model(files: Sequence[str | Path], reference: NormalPCReference, settings: ClusteringSettings,
                 client=None) -> PCModel:
    """Fit the cohort PC model on the PC events of ``files`` (one ``.npz`` per sample).

    Loading and subsampling run as dask tasks (one per file); k-means is fitted on the pooled
    subsample; light-chain counts per cluster come from mapping every tube-2 event in parallel.
    """
    from sklearn.cluster import MiniBatchKMeans

    files = [str(f) for f in files]
    own = None
    if client is None:
        own = dask_client(settings)
        client = own.__enter__()
    try:
        futures = client.map(_subsample, files, cap=fit_cap(settings, len(files)), seed=settings.seed, pure=False)
        parts = client.gather(futures)
        x = np.concatenate(parts) if parts else np.zeros((0, len(BACKBONE)), np.float32)
        if x.shape[0] < settings.n_clusters * 5:
            raise ClusteringError(
                f"only {x.shape[0]} PC events in {len(files)} sample(s): too few to fit {settings.n_clusters} clusters "
                f"(lower clustering.n_clusters or add samples)"
            )
        km = MiniBatchKMeans(n_clusters=settings.n_clusters, random_state=settings.seed, n_init=5,
                             batch_size=4096, max_iter=200)
        km.fit(x.astype(np.float64))
        centers = km.cluster_centers_.astype(np.float64)
        # order clusters deterministically (by the backbone centre) so ids are stable
        order = np.lexsort(centers.T[::-1])
        centers = centers[order]
        model = PCModel(centers, [], settings, int(x.shape[0]))
        sizes = np.bincount(model.predict(x), minlength=settings.n_clusters)
        kappa = np.zeros(settings.n_clusters, np.int64)
        lam = np.zeros(settings.n_clusters, np.int64)
        lc = client.gather(client.map(_light_chains_by_cluster, files, centers=centers, pure=False))
        for k_, l_ in lc:
            kappa += k_
            lam += l_
        model.labels = label_clusters(centers, sizes, kappa, lam, reference, settings)
        model.samples = files
        return model
    finally:
        if own is not None:
            own.__exit__(None, None, None)


def _light_chains_by_cluster(path: str, centers: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    model = PCModel(centers, [], ClusteringSettings(n_clusters=centers.shape[0]), 0)
    k = np.zeros(centers.shape[0], np.int64)
    l_ = np.zeros(centers.shape[0], np.int64)
    for t in load_pc_events(path):
        if t.kappa is None:
            continue
        c = model.predict(t.backbone())
        k += np.bincount(c[t.kappa & ~t.lambda_], minlength=centers.shape[0])
        l_ += np.bincount(c[t.lambda_ & ~t.kappa], minlength=centers.shape[0])
    return k, l_


def _map_chunk(x: np.ndarray, centers: np.ndarray) -> np.ndarray:
    return PCModel(centers, [], ClusteringSettings(n_clusters=centers.shape[0]), 0).predict(x)


def map_events(model: PCModel, events: Sequence[PCEvents], client=None) -> dict[str, np.ndarray]:
    """Cluster id per event for each tube (keyed by tube), mapping chunks in parallel on dask."""
    own = None
    if client is None and sum(e.values.shape[0] for e in events) > model.settings.chunk_events:
        own = dask_client(model.settings)
        client = own.__enter__()
    try:
        out: dict[str, np.ndarray] = {}
        for e in events:
            x = e.backbone()
            step = model.settings.chunk_events
            chunks = [x[i:i + step] for i in range(0, x.shape[0], step)] or [x]
            if client is None:
                parts = [_map_chunk(c, model.centers) for c in chunks]
            else:
                parts = client.gather(client.map(_map_chunk, chunks, centers=model.centers, pure=False))
            out[e.tube] = np.concatenate(parts) if parts else np.zeros(0, np.int32)
        return out
    finally:
        if own is not None:
            own.__exit__(None, None, None)


def deviating_markers(events: PCEvents, reference: NormalPCReference, z: float) -> np.ndarray:
    """Per event, how many reference markers the tube measures lie beyond ``z`` reference SDs from
    the normal-PC median (tube 1 adds CD81 and CD117 to the backbone markers)."""
    count = np.zeros(events.values.shape[0], dtype=np.int16)
    for m, med in reference.median.items():
        if m in events.markers:
            col = events.values[:, events.markers.index(m)]
            count += (np.abs(col - med) > z * reference.sd[m]).astype(np.int16)
    return count


def aberrant_events(model: PCModel, events: PCEvents, clusters: np.ndarray, reference: NormalPCReference) -> np.ndarray:
    """Aberrant PC events: in a cluster labelled aberrant AND individually deviating from the
    normal-PC reference on at least ``min_deviating`` markers (EuroFlow counts an aberrant PC by
    at least two aberrant markers). The event-level check keeps the tails of normal PCs that land
    in a tumour cluster from being counted at MRD levels, where a handful of events decides the
    call."""
    if clusters.size == 0:
        return np.zeros(0, dtype=bool)
    in_aberrant = model.aberrant[clusters]
    dev = deviating_markers(events, reference, model.settings.deviation_z)
    return in_aberrant & (dev >= model.settings.min_deviating)

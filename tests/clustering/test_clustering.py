"""PC clustering: labels, event-level confirmation, and identical results on any dask scheduler."""
import numpy as np
import pytest

from mrdflow.clustering import (
    BACKBONE,
    ClusteringSettings,
    NormalPCReference,
    PCEvents,
    PCModel,
    aberrant_events,
    dask_client,
    fit_pc_model,
    load_pc_events,
    map_events,
    save_pc_events,
)

REF = NormalPCReference({"CD27": 0.64, "CD56": 0.26, "CD45": 0.58, "CD19": 0.54},
                        {"CD27": 0.06, "CD56": 0.17, "CD45": 0.11, "CD19": 0.14})
#               CD138 CD27  CD38  CD56  CD45  CD19
NORMAL = np.array([0.72, 0.64, 0.90, 0.26, 0.58, 0.54])
TUMOUR = np.array([0.78, 0.40, 0.84, 0.72, 0.25, 0.18])


def _tube(rng, sample, tube, n_normal, n_tumour, lc=True):
    x = np.vstack([rng.normal(NORMAL, 0.04, (n_normal, 6)), rng.normal(TUMOUR, 0.04, (n_tumour, 6))]).astype(np.float32)
    kappa = lam = None
    if lc:
        kappa = np.r_[rng.random(n_normal) < 0.6, np.ones(n_tumour, bool)]
        lam = ~kappa
    truth = np.r_[np.zeros(n_normal, bool), np.ones(n_tumour, bool)]
    return PCEvents(sample, tube, list(BACKBONE), x, kappa, lam), truth


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    rng = np.random.default_rng(0)
    d = tmp_path_factory.mktemp("pc")
    paths, truth = [], {}
    for s, (nn, nt) in {"S1": (300, 3000), "S2": (500, 20), "S3": (400, 0)}.items():
        t1, y1 = _tube(rng, s, "ngf1", nn, nt, lc=False)
        t2, y2 = _tube(rng, s, "ngf2", nn, nt, lc=True)
        p = d / f"{s}.npz"
        save_pc_events(p, [t1, t2])
        paths.append(p)
        truth[s] = (y1, y2)
    return paths, truth


SETTINGS = ClusteringSettings(n_clusters=6, max_events_per_tube=2000, seed=1, chunk_events=500, n_workers=1)


def test_round_trip_file(files):
    paths, _ = files
    tubes = load_pc_events(paths[0])
    assert [t.tube for t in tubes] == ["ngf1", "ngf2"] and tubes[0].kappa is None and tubes[1].kappa is not None


def test_fit_labels_and_counts(files):
    paths, truth = files
    model = fit_pc_model(paths, REF, SETTINGS)
    assert model.aberrant.any() and (~model.aberrant).any()
    for p in paths:
        events = load_pc_events(p)
        clusters = map_events(model, events)
        sid = events[0].sample_id
        for e, y in zip(events, truth[sid]):
            ab = aberrant_events(model, e, clusters[e.tube], REF)
            assert abs(int(ab.sum()) - int(y.sum())) <= max(2, 0.02 * y.sum()), (sid, e.tube)


def test_same_result_on_local_cluster_and_scheduler_address(files):
    from dask.distributed import LocalCluster

    paths, _ = files
    local = fit_pc_model(paths, REF, SETTINGS)
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=False, dashboard_address=None) as cluster:
        remote_settings = ClusteringSettings(**{**SETTINGS.__dict__, "scheduler": "address",
                                                "address": cluster.scheduler_address})
        remote = fit_pc_model(paths, REF, remote_settings)
        with dask_client(remote_settings) as client:
            events = load_pc_events(paths[0])
            via_address = map_events(remote, events, client=client)
    np.testing.assert_array_equal(local.centers, remote.centers)
    assert [lab.aberrant for lab in local.labels] == [lab.aberrant for lab in remote.labels]
    direct = {e.tube: local.predict(e.backbone()) for e in load_pc_events(paths[0])}
    for tube in direct:
        np.testing.assert_array_equal(direct[tube], via_address[tube])


def test_model_save_load(tmp_path, files):
    paths, _ = files
    model = fit_pc_model(paths, REF, SETTINGS)
    model.save(tmp_path / "m.json")
    again = PCModel.load(tmp_path / "m.json")
    np.testing.assert_array_equal(again.centers, model.centers)
    assert [lab.reason for lab in again.labels] == [lab.reason for lab in model.labels]


def test_too_few_events_is_a_clear_error(tmp_path):
    rng = np.random.default_rng(1)
    t, _ = _tube(rng, "X", "ngf1", 3, 2, lc=False)
    save_pc_events(tmp_path / "x.npz", [t])
    with pytest.raises(Exception, match="too few to fit"):
        fit_pc_model([tmp_path / "x.npz"], REF, SETTINGS)


def test_fitting_subsample_is_capped_in_total(files):
    """A large cohort lowers the per-tube cap so the pooled fitting matrix stays bounded."""
    import dataclasses

    from mrdflow.clustering._model import fit_cap

    paths, _ = files
    assert fit_cap(SETTINGS, 3) == 2000  # 3 samples × 2 tubes × 2000 is under the 2×10^6 default
    small = dataclasses.replace(SETTINGS, max_events_total=1200)
    assert fit_cap(small, 3) == 200 and fit_cap(small, 10**6) == 1
    model = fit_pc_model(paths, REF, small)
    assert model.n_fit_events == 6 * 200  # every tube has more than 200 PC events
    assert model.aberrant.any() and (~model.aberrant).any()

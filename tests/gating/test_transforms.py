"""Compensation and transforms agree with FlowKit."""
import flowkit as fk
import numpy as np
import pytest

from mrdflow.gating import (
    CompensationError,
    compensation_for,
    make_transform,
    parse_spillover,
    transform_events,
)


def _events(n=2000, seed=1):
    rng = np.random.default_rng(seed)
    ev = rng.lognormal(6, 1.5, size=(n, 4)).astype(np.float32) - 200
    return ev


def test_compensation_matches_flowkit():
    pnn = ["FSC-A", "FITC-A", "PE-A", "APC-A"]
    spill = np.array([[1.0, 0.2, 0.01], [0.05, 1.0, 0.1], [0.0, 0.02, 1.0]])
    text = "3,FITC-A,PE-A,APC-A," + ",".join(f"{v:g}" for v in spill.ravel())
    comp = compensation_for("fcs", {"$SPILLOVER": text})
    ev = _events()
    ours = comp.apply(ev, pnn)
    sample = fk.Sample(ev.astype(np.float64), channel_labels=pnn, sample_id="s")
    sample.apply_compensation(fk.Matrix(spill, ["FITC-A", "PE-A", "APC-A"]))
    ref = sample.get_events(source="comp")
    assert ours.dtype == np.float32
    np.testing.assert_allclose(ours, ref, rtol=1e-4, atol=1e-2)
    np.testing.assert_array_equal(ours[:, 0], ev[:, 0])


def test_spillover_errors_name_the_cause():
    with pytest.raises(CompensationError, match="expected 1 \\+ 2 names"):
        parse_spillover("2,A,B,1,0,0")
    comp = compensation_for("fcs", {"$SPILL": "2,FITC-A,PE-A,1,0.1,0.1,1"}, file="x.fcs")
    with pytest.raises(CompensationError, match=r"x.fcs: .*names channel\(s\) \['PE-A'\] that the file lacks"):
        comp.apply(_events()[:, :2], ["FSC-A", "FITC-A"], file="x.fcs")
    with pytest.raises(CompensationError, match="singular"):
        compensation_for("fcs", {"$SPILLOVER": "2,A,B,1,1,1,1"})
    with pytest.raises(CompensationError, match="no \\$SPILLOVER"):
        compensation_for("fcs", {}, file="y.fcs")
    assert compensation_for("none", {}) is None


def test_matrix_file(tmp_path):
    p = tmp_path / "m.csv"
    p.write_text("FITC-A,PE-A\n1,0.25\n0.02,1\n")
    comp = compensation_for(str(p), {})
    assert comp.detectors == ("FITC-A", "PE-A")
    np.testing.assert_allclose(comp.spill, [[1, 0.25], [0.02, 1]])


@pytest.mark.parametrize(
    "spec,ref",
    [
        ({"type": "logicle", "t": 262144, "w": 0.5, "m": 4.5, "a": 0},
         fk.transforms.LogicleTransform(262144, 0.5, 4.5, 0)),
        ({"type": "asinh", "t": 262144, "m": 4.5, "a": 0}, fk.transforms.AsinhTransform(262144, 4.5, 0)),
        ({"type": "linear", "t": 262144}, fk.transforms.LinearTransform(262144, 0)),
    ],
)
def test_transforms_match_flowkit(spec, ref):
    ev = _events()
    out = transform_events(ev.copy(), [1, 2, 3], make_transform(spec))
    np.testing.assert_allclose(out[:, 1:], ref.apply(ev[:, 1:].astype(np.float64)), rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(out[:, 0], ev[:, 0])


@pytest.mark.parametrize("t,w,m,a", [(262144, 0.5, 4.5, 0.0), (262144, 1.0, 4.5, 0.5), (10000, 0.5, 4.5, 0.0),
                                     (1000, 2.0, 4.0, 0.0), (262144, 0.25, 5.0, 1.0)])
def test_fast_logicle_matches_flowkit(t, w, m, a):
    """The vectorised logicle gives FlowKit's (flowutils') values to ~1e-15 across the scale."""
    import flowkit as fk

    from mrdflow.gating._transforms import FastLogicle, apply_transform

    rng = np.random.default_rng(7)
    x = np.concatenate([rng.normal(0, 300, 20000), np.exp(rng.uniform(-6, 14, 40000)),
                        -np.exp(rng.uniform(-6, 11, 20000)), rng.uniform(-0.05 * t, 2 * t, 20000),
                        [0.0, t, -t, 1e9, -1e9]])
    ref = fk.transforms.LogicleTransform(param_t=t, param_w=w, param_m=m, param_a=a).apply(x)
    got = apply_transform(fk.transforms.LogicleTransform(param_t=t, param_w=w, param_m=m, param_a=a), x)
    assert np.max(np.abs(got - ref)) < 1e-14
    f32 = apply_transform(fk.transforms.LogicleTransform(param_t=t, param_w=w, param_m=m, param_a=a),
                          x.astype(np.float32), out_dtype=np.float32)
    assert f32.dtype == np.float32
    ys = np.linspace(-0.3, 1.2, 301)
    fl = FastLogicle(t, w, m, a)
    assert np.max(np.abs(fl.scale(fl.inverse(ys)) - ys)) < 1e-13


def test_fast_logicle_rejects_bad_parameters():
    from mrdflow.gating._transforms import FastLogicle

    with pytest.raises(ValueError, match="invalid logicle"):
        FastLogicle(262144, 3.0, 4.5, 0.0)  # W > M/2


def test_fast_logicle_non_finite_as_flowkit():
    """NaN and ±inf give FlowKit's (flowutils') value, so gate counts agree with FlowKit."""
    import flowkit as fk

    from mrdflow.gating import apply_transform

    tr = fk.transforms.LogicleTransform(param_t=262144, param_w=0.5, param_m=4.5, param_a=0.0)
    x = np.array([np.nan, np.inf, -np.inf, 1.0, -5.0, 1e4])
    np.testing.assert_allclose(apply_transform(tr, x), tr.apply(x), rtol=0, atol=1e-14)

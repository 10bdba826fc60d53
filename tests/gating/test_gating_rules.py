"""Gate placement rules: parsing errors and the mixture-model threshold."""
from pathlib import Path

import numpy as np
import pytest

from mrdflow.gating import GatingError, load_template
from mrdflow.gating._bounds import _gmm_threshold, fit_two_gaussians
from mrdflow.gating._template import _bound_rule

GATING = Path(__file__).resolve().parents[2] / "resources" / "gating"


def test_gmm_threshold_between_touching_populations():
    rng = np.random.default_rng(0)
    v = np.concatenate([rng.normal(0.55, 0.04, 30_000), rng.normal(0.72, 0.03, 60_000)])
    t, note = _gmm_threshold(v, (0.55, 0.75))
    # equal posterior of N(0.55, .04) x 1/3 and N(0.72, .03) x 2/3 lies near 0.63
    assert 0.61 < t < 0.65 and note.startswith("gmm: equal posterior")


@pytest.mark.parametrize("seed", range(6))
def test_two_gaussians_fit_is_scikit_learns(seed):
    """The hand-written EM (no sklearn import in a sample job) converges to scikit-learn's
    GaussianMixture(2) maximum, run to convergence: same weights, means and variances."""
    from sklearn.mixture import GaussianMixture

    rng = np.random.default_rng(seed)
    m1, gap = rng.uniform(0.3, 0.5), rng.uniform(0.12, 0.3)
    w, n = rng.uniform(0.1, 0.9), int(rng.integers(2_000, 20_000))
    v = np.concatenate([rng.normal(m1, rng.uniform(0.02, 0.05), int(w * n)),
                        rng.normal(m1 + gap, rng.uniform(0.02, 0.05), n - int(w * n))])
    weights, means, variances = fit_two_gaussians(v)
    gm = GaussianMixture(2, random_state=0, n_init=2, tol=1e-9, max_iter=10_000).fit(v[:, None])
    order, ref = np.argsort(means), np.argsort(gm.means_.ravel())
    assert np.allclose(means[order], gm.means_.ravel()[ref], atol=1e-4)
    assert np.allclose(weights[order], gm.weights_[ref], atol=1e-3)
    assert np.allclose(variances[order], gm.covariances_.ravel()[ref], rtol=1e-3)


def test_gmm_falls_back_when_one_population():
    rng = np.random.default_rng(1)
    t, note = _gmm_threshold(rng.normal(0.3, 0.05, 20_000), (0.6, 0.7))
    assert 0.6 <= t <= 0.7 and "not either side" in note


def test_rule_errors_name_the_field():
    with pytest.raises(GatingError, match="needs a window"):
        _bound_rule({"method": "gmm"}, "x.yaml: gates.BCP.CD45.max")
    with pytest.raises(GatingError, match="unknown field"):
        _bound_rule({"method": "valley", "window": [0, 1], "windw": 1}, "x")
    with pytest.raises(GatingError, match="method must be"):
        _bound_rule({"method": "kmeans", "window": [0, 1]}, "x")


@pytest.mark.parametrize("panel", ["ngf_tube1", "ngf_tube2", "pb_nk", "pb_cart"])
def test_shipped_templates_load(panel):
    t = load_template(GATING, panel)
    ids = {g for g, _ in t.strategy.get_gate_ids()}
    assert {"TimeOK", "Singlets"} <= ids and set(t.rules) <= ids


def test_rule_for_unknown_gate(tmp_path):
    (tmp_path / "p.xml").write_bytes((GATING / "ngf_tube1.xml").read_bytes())
    (tmp_path / "p.yaml").write_text("gates:\n  Plasma: {method: fixed}\n")
    with pytest.raises(GatingError, match="no gate 'Plasma' in the template"):
        load_template(tmp_path, "p")

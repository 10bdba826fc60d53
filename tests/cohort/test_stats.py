"""Small-n exploratory statistics: exact / permutation p-values, bootstrap CIs, missing values,
degenerate inputs and the configured-associations runner."""
import itertools
import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats as st
from scipy.stats.contingency import odds_ratio

import mrdflow.cohort._stats as S
from mrdflow.cohort import Association, associations, fisher, mann_whitney, spearman

FAST = dict(n_perm=2000, n_boot=500)


def brute_spearman_p(x, y):
    """Reference two-sided permutation p: every ordering of y, rho via scipy."""
    obs = abs(st.spearmanr(x, y).statistic)
    hits = total = 0
    for perm in itertools.permutations(y):
        total += 1
        hits += abs(st.spearmanr(x, perm).statistic) >= obs - 1e-12
    return hits / total


def brute_mw_p(values, groups):
    """Reference two-sided label-permutation p: every choice of the True members, U via scipy."""
    values = np.asarray(values, float)
    groups = np.asarray(groups, bool)
    n, k = len(values), int(groups.sum())
    mu = k * (n - k) / 2
    obs = abs(st.mannwhitneyu(values[groups], values[~groups], method="asymptotic").statistic - mu)
    hits = total = 0
    for chosen in itertools.combinations(range(n), k):
        g = np.zeros(n, bool)
        g[list(chosen)] = True
        u = st.mannwhitneyu(values[g], values[~g], method="asymptotic").statistic
        total += 1
        hits += abs(u - mu) >= obs - 1e-12
    return hits / total


# --------------------------------------------------------------------------- spearman

def test_spearman_perfect_monotone_exact_p():
    r = spearman([1, 2, 3, 4, 5], [10, 20, 30, 40, 50], **FAST)
    assert r.statistic == pytest.approx(1.0)
    assert r.effect == pytest.approx(1.0)
    assert r.p_method == "exact"
    # only the identity and the reversal reach |rho| = 1 among 5! = 120 orderings
    assert r.p_value == pytest.approx(2 / 120)
    assert r.test == "spearman" and r.statistic_name == "rho" and r.n == 5 and r.n_groups == ""


def test_all_permutations_complete_and_distinct():
    for n in (1, 3, 5):
        p = S._all_permutations(n)
        assert p.shape == (math.factorial(n), n)
        assert {tuple(row) for row in p} == set(itertools.permutations(range(n)))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_spearman_exact_matches_brute_force(seed):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=6)
    y = x + rng.normal(size=6)
    y[2] = y[4]  # a tie, so average ranks matter
    r = spearman(x, y, **FAST)
    assert r.statistic == pytest.approx(st.spearmanr(x, y).statistic)
    assert r.p_method == "exact"
    assert r.p_value == pytest.approx(brute_spearman_p(x, y), abs=1e-12)


def test_spearman_monte_carlo_close_to_exact(monkeypatch):
    rng = np.random.default_rng(5)
    x = rng.normal(size=9)
    y = 0.5 * x + rng.normal(size=9)
    exact = spearman(x, y, n_perm=1, n_boot=0)
    assert exact.p_method == "exact"
    monkeypatch.setattr(S, "_SPEARMAN_EXACT_MAX_N", 8)
    mc = spearman(x, y, n_perm=20000, n_boot=0)
    assert mc.p_method == "permutation (20000 Monte Carlo draws)"
    assert mc.statistic == exact.statistic
    se = math.sqrt(exact.p_value * (1 - exact.p_value) / 20000)
    assert abs(mc.p_value - exact.p_value) < 4 * se + 1e-4
    assert 0.01 < exact.p_value < 0.99  # the check above is informative


def test_spearman_n10_uses_permutation_with_plus_one_convention():
    x = np.arange(10.0)
    r = spearman(x, x ** 2, n_perm=999, n_boot=0)
    assert r.p_method == "permutation (999 Monte Carlo draws)"
    # no random shuffle reaches rho = 1 in practice, so p is the floor 1 / (999 + 1)
    assert r.p_value == pytest.approx(1 / 1000)


def test_spearman_bootstrap_ci_contains_rho_and_reports_skips():
    rng = np.random.default_rng(3)
    x = rng.normal(size=8)
    y = x + rng.normal(size=8)
    r = spearman(x, y, n_perm=1, n_boot=400, seed=1)
    assert -1 <= r.ci_low <= r.statistic <= r.ci_high <= 1
    assert r.ci_method.startswith("bootstrap percentile (")
    # with n = 4 some resamples draw one point four times: they must be counted as skipped
    r4 = spearman([1, 2, 3, 4], [1, 3, 2, 4], n_perm=1, n_boot=2000, seed=0)
    assert "skipped" in r4.ci_method and "of 2000 resamples used" in r4.ci_method


def test_spearman_sign_flips_when_y_negated():
    for seed in range(4):
        rng = np.random.default_rng(seed)
        x, y = rng.normal(size=7), rng.normal(size=7)
        a = spearman(x, y, **FAST, seed=seed)
        b = spearman(x, -y, **FAST, seed=seed)
        assert b.statistic == pytest.approx(-a.statistic)
        assert b.p_value == pytest.approx(a.p_value)
        assert b.ci_low == pytest.approx(-a.ci_high)
        assert b.ci_high == pytest.approx(-a.ci_low)


def test_spearman_missing_values_dropped_pairwise():
    x = [1.0, 2.0, None, 4.0, 5.0, np.nan, 7.0]
    y = pd.Series([2.0, 1.0, 3.0, pd.NA, 6.0, 5.0, 9.0], dtype="Float64")
    r = spearman(x, y, **FAST)
    clean = spearman([1.0, 2.0, 5.0, 7.0], [2.0, 1.0, 6.0, 9.0], **FAST)
    assert r.n == 4
    assert (r.statistic, r.p_value, r.ci_low, r.ci_high) == (clean.statistic, clean.p_value, clean.ci_low,
                                                             clean.ci_high)


@pytest.mark.parametrize("x, y, note", [
    ([1, 2], [3, 4], "n < 3"),
    ([1, None, 3, 4], [5, 6, None, None], "n < 3"),
    ([2, 2, 2, 2], [1, 2, 3, 4], "nkg2a is constant"),
    ([1, 2, 3, 4], [7, 7, 7, 7], "auc is constant"),
])
def test_spearman_degenerate_gives_none_and_note(x, y, note):
    r = spearman(x, y, x_name="nkg2a", y_name="auc", **FAST)
    assert r.statistic is None and r.p_value is None and r.ci_low is None and r.ci_high is None
    assert r.p_method == "" and r.ci_method == ""
    assert note in r.note


# --------------------------------------------------------------------------- mann-whitney

def test_mann_whitney_exact_matches_scipy_without_ties():
    rng = np.random.default_rng(11)
    v = rng.normal(size=8)
    g = np.array([1, 1, 1, 0, 0, 0, 0, 0], bool)
    r = mann_whitney(v, g, **FAST)
    ref = st.mannwhitneyu(v[g], v[~g], alternative="two-sided", method="exact")
    assert r.p_method == "exact"
    assert r.statistic == ref.statistic
    assert r.p_value == pytest.approx(ref.pvalue)
    # scipy's exact p also agrees with full label enumeration when there are no ties
    assert r.p_value == pytest.approx(brute_mw_p(v, g))
    assert r.effect == pytest.approx(np.median(v[g]) - np.median(v[~g]))
    assert r.n_groups == "y=3, non-y=5"
    assert r.ci_low <= r.effect <= r.ci_high


def _tied_cases():
    yield [1.0, 2.0, 2.0, 3.0, 3.0, 3.0, 5.0, 8.0], [True, False, True, True, False, False, False, False]
    for seed in range(4):  # heavily tied integer scores, unbalanced groups
        rng = np.random.default_rng(seed)
        yield list(rng.integers(0, 4, size=8).astype(float)), list(rng.permutation([1, 1, 1, 0, 0, 0, 0, 0]) == 1)


@pytest.mark.parametrize("v, g", list(_tied_cases()))
def test_mann_whitney_ties_matches_brute_force_enumeration(v, g):
    r = mann_whitney(v, g, **FAST)
    assert "ties" in r.note
    assert r.p_method == "exact"
    assert 0 < r.p_value <= 1
    assert r.p_value == pytest.approx(brute_mw_p(v, g), abs=1e-12)


def test_mann_whitney_ties_monte_carlo_close_to_exact(monkeypatch):
    v = [1.0, 2.0, 2.0, 3.0, 4.0, 4.0, 6.0, 9.0, 9.0]
    g = [1, 1, 0, 1, 0, 1, 0, 0, 0]
    exact = mann_whitney(v, g, n_perm=1, n_boot=0)
    monkeypatch.setattr(S, "_MW_EXACT_MAX_COMBOS", 0)
    mc = mann_whitney(v, g, n_perm=20000, n_boot=0, seed=4)
    assert mc.p_method == "permutation (20000 Monte Carlo draws)"
    se = math.sqrt(exact.p_value * (1 - exact.p_value) / 20000)
    assert abs(mc.p_value - exact.p_value) < 4 * se + 1e-4


def test_mann_whitney_bool_like_groups_missing_not_false():
    v = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, None]
    # None/NaN in the grouping is missing: were it read as False, the False group would grow
    g_obj = np.array([True, None, False, True, np.nan, False, True], dtype=object)
    g_float = [1.0, np.nan, 0.0, 1.0, np.nan, 0.0, 1.0]
    a = mann_whitney(v, g_obj, y_name="responder", **FAST)
    b = mann_whitney(v, g_float, y_name="responder", **FAST)
    assert a.n == b.n == 4
    assert a.n_groups == b.n_groups == "responder=2, non-responder=2"
    assert a == b


def test_mann_whitney_empty_group():
    r = mann_whitney([1.0, 2.0, 3.0], [True, True, None], y_name="responder", **FAST)
    assert r.statistic is None and r.p_value is None and r.effect is None
    assert "one group empty" in r.note
    assert r.n_groups == "responder=2, non-responder=0"


def test_mann_whitney_rejects_non_bool_group():
    with pytest.raises(ValueError, match="not bool-like"):
        mann_whitney([1.0, 2.0, 3.0], [1.0, 0.0, 2.0])


# --------------------------------------------------------------------------- fisher

def _arrays_from_table(t):
    (ab, a_nb), (na_b, na_nb) = t
    a = [True] * (ab + a_nb) + [False] * (na_b + na_nb)
    b = [True] * ab + [False] * a_nb + [True] * na_b + [False] * na_nb
    return a, b


def test_fisher_known_table_vs_scipy():
    t = [[5, 1], [1, 3]]
    a, b = _arrays_from_table(t)
    r = fisher(a, b, x_name="mrd_neg", y_name="responder")
    ref = st.fisher_exact(t)
    ci = odds_ratio(t, kind="conditional").confidence_interval(0.95)
    assert r.statistic == pytest.approx(15.0) == pytest.approx(ref.statistic)
    assert r.p_value == pytest.approx(ref.pvalue)
    assert (r.ci_low, r.ci_high) == (pytest.approx(ci.low), pytest.approx(ci.high))
    assert r.p_method == "exact" and r.ci_method == "exact conditional"
    assert r.n == 10
    assert r.n_groups == "mrd_neg&responder=5, mrd_neg&~responder=1, ~mrd_neg&responder=1, ~mrd_neg&~responder=3"


def test_fisher_zero_cell_gives_inf_odds_ratio():
    a, b = _arrays_from_table([[4, 0], [1, 3]])
    r = fisher(a, b)
    assert r.statistic == math.inf and r.effect == math.inf
    assert r.ci_high == math.inf
    assert r.p_value == pytest.approx(st.fisher_exact([[4, 0], [1, 3]]).pvalue)


def test_fisher_missing_and_constant():
    a = [True, None, False, True, np.nan, "yes"]
    b = [1.0, 1.0, 0.0, np.nan, 0.0, "no"]
    r = fisher(a, b)
    assert r.n == 3
    assert r.n_groups == "x&y=1, x&~y=1, ~x&y=0, ~x&~y=1"
    c = fisher([True, True, True], [True, False, True], x_name="cr")
    assert c.statistic is None and c.p_value is None and c.note == "cr is constant"


# --------------------------------------------------------------------------- determinism

def test_same_seed_same_result_other_seed_differs():
    rng = np.random.default_rng(8)
    x = rng.normal(size=12)
    y = x + rng.normal(size=12)
    a = spearman(x, y, n_perm=500, n_boot=300, seed=7)
    b = spearman(x, y, n_perm=500, n_boot=300, seed=7)
    c = spearman(x, y, n_perm=500, n_boot=300, seed=8)
    assert a == b
    assert (c.p_value, c.ci_low, c.ci_high) != (a.p_value, a.ci_low, a.ci_high)


# --------------------------------------------------------------------------- associations()

@pytest.fixture
def cohort():
    return pd.DataFrame({
        "patient": [f"P{i}" for i in range(8)],
        "baseline_nkg2a_pct": [12.0, 30.5, 8.1, None, 44.0, 21.3, 17.7, 35.2],
        "cart_auc_0_28": [900.0, 300.0, 1500.0, 700.0, 150.0, np.nan, 800.0, 250.0],
        "responder": pd.Series([True, False, True, True, False, True, True, False], dtype=object),
        "w4_mrd_negative": pd.Series([True, False, True, None, False, True, False, None], dtype=object),
    })


SPECS = [
    {"x": "baseline_nkg2a_pct", "y": "cart_auc_0_28", "test": "spearman"},
    {"x": "cart_auc_0_28", "y": "responder", "test": "mann_whitney"},
    {"x": "w4_mrd_negative", "y": "responder", "test": "fisher"},
]


def test_associations_rows_columns_and_determinism(cohort):
    out = associations(cohort, SPECS, **FAST)
    assert list(out.columns) == [f for f in Association.__dataclass_fields__] + ["label"]
    assert list(out["test"]) == ["spearman", "mann_whitney", "fisher"]
    assert list(out["x"]) == [s["x"] for s in SPECS]
    assert (out["label"] == "exploratory").all()
    assert list(out["n"]) == [6, 7, 6]
    direct = mann_whitney(cohort["cart_auc_0_28"], cohort["responder"], **FAST, x_name="cart_auc_0_28",
                          y_name="responder")
    assert out.iloc[1]["p_value"] == direct.p_value and out.iloc[1]["ci_low"] == direct.ci_low
    pd.testing.assert_frame_equal(out, associations(cohort, SPECS, **FAST))


def test_associations_unknown_column_raises(cohort):
    specs = SPECS[:1] + [{"x": "nkg2a_typo", "y": "responder", "test": "mann_whitney"}]
    with pytest.raises(ValueError, match=r"spec 1.*'nkg2a_typo'.*available columns.*baseline_nkg2a_pct"):
        associations(cohort, specs, **FAST)


def test_associations_unknown_test_raises(cohort):
    with pytest.raises(ValueError, match="unknown test 'pearson'"):
        associations(cohort, [{"x": "baseline_nkg2a_pct", "y": "cart_auc_0_28", "test": "pearson"}])


def test_associations_empty_spec_list(cohort):
    out = associations(cohort, [])
    assert out.empty and "label" in out.columns and "p_value" in out.columns

"""Exploratory small-n association statistics for the trial cohort (about 8 patients).

Three tests, each a pure function on arrays that returns one :class:`Association`:

* :func:`spearman` — rank correlation of two numeric variables (e.g. baseline NKG2A % of NK cells
  against CAR-T AUC0–28 in cells/µL × day);
* :func:`mann_whitney` — a numeric variable compared between the True and False members of a
  bool-like grouping (e.g. CAR-T AUC in responders vs non-responders);
* :func:`fisher` — two bool-like variables in a 2×2 table (e.g. MRD negativity vs response).

:func:`associations` runs a configured list of them on a patient-level DataFrame.

Why exact / permutation p-values: with n ≈ 8 the normal and t approximations behind the usual
asymptotic p-values are poor — the null distribution of Spearman's rho or of U is discrete,
lumpy and has only a few hundred to a few tens of thousands of possible arrangements, so
asymptotic tails can be off by a factor of two or more. Here every p-value is computed from the
permutation distribution itself: by full enumeration where that is cheap (Spearman up to
n = 9, i.e. 9! = 362 880 orderings; Mann–Whitney with ties up to 200 000 label assignments;
Mann–Whitney without ties via scipy's exact distribution; Fisher is exact by construction),
otherwise by seeded Monte Carlo permutation with the (count + 1) / (draws + 1) convention, which
never returns p = 0. Confidence intervals are bootstrap percentile intervals (or the exact
conditional interval for Fisher's odds ratio); with n this small they are wide and themselves
approximate. All results are exploratory: no multiplicity correction is applied.

Missing values (None, NaN, pandas NA) are dropped pairwise; ``Association.n`` counts the
complete pairs actually used. Degenerate inputs (fewer than 3 pairs, a constant variable, an
empty group) give ``None`` statistics with a ``note`` rather than an exception.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields
from functools import lru_cache
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats as _st
from scipy.stats.contingency import odds_ratio as _odds_ratio

__all__ = ["Association", "spearman", "mann_whitney", "fisher", "associations", "TESTS"]

#: test names accepted by :func:`associations`
TESTS = ("spearman", "mann_whitney", "fisher")

# Spearman p is enumerated over all n! orderings up to this n, Monte Carlo above it.
_SPEARMAN_EXACT_MAX_N = 9
# Mann-Whitney with ties: enumerate label assignments while C(n, k) stays at or below this.
_MW_EXACT_MAX_COMBOS = 200_000
# rows per block when enumerating / drawing permutations (bounds memory)
_CHUNK = 65_536
# a permuted statistic counts as "at least as extreme" when within this of the observed one
_TOL = 1e-12


@dataclass(frozen=True)
class Association:
    """One exploratory association test between two columns.

    ``x``/``y``: the column names tested. ``test``: "spearman", "mann_whitney" or "fisher".
    ``n``: complete (non-missing) pairs used. ``statistic``: Spearman's rho (unitless, −1…1), the
    Mann–Whitney U of the ``y``=True group (count of (True, False) pairs in which the True member
    is larger, ties counting ½), or Fisher's sample odds ratio (may be ``inf`` or 0).
    ``p_value``: two-sided. ``p_method``: "exact" (full enumeration or an exact distribution),
    "permutation (N Monte Carlo draws)", or "" when not computable. ``effect``: rho, the
    difference of medians (``y``=True minus ``y``=False, in the units of ``x``) or the odds
    ratio; ``ci_low``/``ci_high``: its 95 % interval, described by ``ci_method``. ``n_groups``:
    group sizes (Mann–Whitney) or the four cell counts (Fisher); "" for Spearman. ``note``: why
    something is None, or other caveats; "" when there is nothing to say.
    """

    x: str
    y: str
    test: str
    n: int
    statistic_name: str
    statistic: float | None
    p_value: float | None
    p_method: str
    effect_name: str
    effect: float | None
    ci_low: float | None
    ci_high: float | None
    ci_method: str
    n_groups: str
    note: str


# ---------------------------------------------------------------------------------------------
# input conversion
# ---------------------------------------------------------------------------------------------

def _is_missing(v: Any) -> bool:
    if v is None:
        return True
    try:
        r = pd.isna(v)
    except (TypeError, ValueError):
        return False
    return bool(r) if np.ndim(r) == 0 else False


def _as_float(values: Any, name: str) -> np.ndarray:
    """1-D float array with NaN for every missing entry (None, NaN, pandas NA). Bools become 1/0."""
    obj = np.asarray(values, dtype=object).ravel()
    out = np.empty(obj.shape[0], dtype=float)
    for i, v in enumerate(obj):
        if _is_missing(v):
            out[i] = np.nan
            continue
        try:
            out[i] = float(v)
        except (TypeError, ValueError):
            raise ValueError(f"{name}: value {v!r} at position {i} is not numeric") from None
    return out


_TRUE_STR = {"true", "yes", "y", "1"}
_FALSE_STR = {"false", "no", "n", "0"}


def _as_bool(values: Any, name: str) -> tuple[np.ndarray, np.ndarray]:
    """Bool-like input → (value, present) arrays. None/NaN/NA are missing (present False), never
    False. Accepts bools, numbers 1/0 and the strings true/false/yes/no (any case); anything else
    raises ValueError rather than being guessed."""
    obj = np.asarray(values, dtype=object).ravel()
    val = np.zeros(obj.shape[0], dtype=bool)
    ok = np.ones(obj.shape[0], dtype=bool)
    for i, v in enumerate(obj):
        if _is_missing(v):
            ok[i] = False
        elif isinstance(v, (bool, np.bool_)):
            val[i] = bool(v)
        elif isinstance(v, str):
            s = v.strip().lower()
            if s in _TRUE_STR:
                val[i] = True
            elif s in _FALSE_STR:
                val[i] = False
            elif s in ("", "na", "nan", "none"):
                ok[i] = False
            else:
                raise ValueError(f"{name}: value {v!r} at position {i} is not bool-like")
        else:
            try:
                f = float(v)
            except (TypeError, ValueError):
                raise ValueError(f"{name}: value {v!r} at position {i} is not bool-like") from None
            if f == 1.0:
                val[i] = True
            elif f == 0.0:
                val[i] = False
            else:
                raise ValueError(f"{name}: value {v!r} at position {i} is not bool-like (expected 1/0)")
    return val, ok


def _check_len(a: np.ndarray, b: np.ndarray, x_name: str, y_name: str) -> None:
    if a.shape[0] != b.shape[0]:
        raise ValueError(f"{x_name} and {y_name} differ in length ({a.shape[0]} vs {b.shape[0]})")


def _check_counts(n_perm: int, n_boot: int) -> None:
    if int(n_perm) < 1:
        raise ValueError(f"n_perm must be ≥ 1, got {n_perm}")
    if int(n_boot) < 0:
        raise ValueError(f"n_boot must be ≥ 0, got {n_boot}")


def _streams(seed: int) -> tuple[np.random.Generator, np.random.Generator]:
    """Independent generators for the permutation test and the bootstrap, both fixed by ``seed``,
    so changing n_perm never changes the bootstrap draws and vice versa."""
    a, b = np.random.SeedSequence(seed).spawn(2)
    return np.random.default_rng(a), np.random.default_rng(b)


def _join(*notes: str) -> str:
    return "; ".join(s for s in notes if s)


def _pct_ci(samples: np.ndarray) -> tuple[float, float]:
    lo, hi = np.percentile(samples, [2.5, 97.5])
    return float(lo), float(hi)


def _boot_label(used: int, n_boot: int, skipped_why: str = "") -> str:
    if used == n_boot:
        return f"bootstrap percentile ({n_boot} resamples)"
    return f"bootstrap percentile ({used} of {n_boot} resamples used; {n_boot - used} skipped: {skipped_why})"


# ---------------------------------------------------------------------------------------------
# Spearman
# ---------------------------------------------------------------------------------------------

@lru_cache(maxsize=4)
def _all_permutations(n: int) -> np.ndarray:
    """All n! orderings of range(n) as an (n!, n) int8 array (read-only, cached)."""
    p = np.zeros((1, 0), dtype=np.int8)
    for k in range(1, n + 1):
        # orderings of range(k) from those of range(k - 1): choose the first element v, then
        # relabel the previous orderings onto the remaining values (those ≥ v shift up by one)
        blocks = []
        for v in range(k):
            rest = p + (p >= v).astype(np.int8)
            blocks.append(np.column_stack([np.full(p.shape[0], v, dtype=np.int8), rest]))
        p = np.concatenate(blocks, axis=0)
    p.setflags(write=False)
    return p


def _spearman_core(rx: np.ndarray, ry: np.ndarray) -> tuple[np.ndarray, np.ndarray, float, float]:
    cx, cy = rx - rx.mean(), ry - ry.mean()
    den = math.sqrt(float(cx @ cx) * float(cy @ cy))
    return cx, cy, den, float(cx @ cy) / den


def _rowwise_rho(xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
    rx = _st.rankdata(xs, axis=1)
    ry = _st.rankdata(ys, axis=1)
    rx -= rx.mean(axis=1, keepdims=True)
    ry -= ry.mean(axis=1, keepdims=True)
    return (rx * ry).sum(axis=1) / np.sqrt((rx * rx).sum(axis=1) * (ry * ry).sum(axis=1))


def spearman(x: Sequence[Any], y: Sequence[Any], *, n_perm: int = 20000, n_boot: int = 5000, seed: int = 0,
             x_name: str = "x", y_name: str = "y") -> Association:
    """Spearman rank correlation of ``x`` and ``y`` (rho from average ranks, unitless −1…1).

    Two-sided p: exact over all n! orderings of the ``y`` ranks when n ≤ 9 (the fraction with
    |rho_perm| ≥ |rho_obs|), otherwise ``n_perm`` seeded Monte Carlo shuffles with
    p = (count + 1) / (n_perm + 1). 95 % CI: bootstrap percentile over ``n_boot`` resampled pairs;
    resamples in which either side is constant (rho undefined) are skipped and counted in
    ``ci_method``. n < 3 or a constant variable gives None with a note.
    """
    _check_counts(n_perm, n_boot)
    xa, ya = _as_float(x, x_name), _as_float(y, y_name)
    _check_len(xa, ya, x_name, y_name)
    ok = ~np.isnan(xa) & ~np.isnan(ya)
    xa, ya = xa[ok], ya[ok]
    n = int(xa.shape[0])

    def empty(note: str) -> Association:
        return Association(x_name, y_name, "spearman", n, "rho", None, None, "", "rho", None, None, None, "", "",
                           note)

    if n < 3:
        return empty(f"n < 3 (n = {n})")
    const = [nm for nm, a in ((x_name, xa), (y_name, ya)) if np.ptp(a) == 0]
    if const:
        return empty(" and ".join(const) + (" is" if len(const) == 1 else " are") + " constant")

    rx, ry = _st.rankdata(xa), _st.rankdata(ya)
    cx, cy, den, rho = _spearman_core(rx, ry)
    thresh = abs(rho) - _TOL
    rng_p, rng_b = _streams(seed)

    if n <= _SPEARMAN_EXACT_MAX_N:
        perms = _all_permutations(n)
        count = 0
        for s in range(0, perms.shape[0], _CHUNK):
            r = (cy[perms[s:s + _CHUNK]] @ cx) / den
            count += int(np.count_nonzero(np.abs(r) >= thresh))
        p = count / perms.shape[0]
        p_method = "exact"
    else:
        count = 0
        done = 0
        while done < n_perm:
            m = min(_CHUNK, n_perm - done)
            shuffled = rng_p.permuted(np.broadcast_to(cy, (m, n)), axis=1)
            count += int(np.count_nonzero(np.abs((shuffled @ cx) / den) >= thresh))
            done += m
        p = (count + 1) / (n_perm + 1)
        p_method = f"permutation ({n_perm} Monte Carlo draws)"

    lo = hi = None
    ci_method, note = "", ""
    if n_boot > 0:
        idx = rng_b.integers(0, n, size=(n_boot, n))
        xs, ys = xa[idx], ya[idx]
        good = (np.ptp(xs, axis=1) > 0) & (np.ptp(ys, axis=1) > 0)
        used = int(good.sum())
        if used:
            lo, hi = _pct_ci(_rowwise_rho(xs[good], ys[good]))
            ci_method = _boot_label(used, n_boot, "a constant side")
        else:
            note = "no bootstrap resample had both sides varying; CI not computed"
    else:
        note = "bootstrap disabled (n_boot = 0)"
    return Association(x_name, y_name, "spearman", n, "rho", rho, float(p), p_method, "rho", rho, lo, hi,
                       ci_method, "", note)


# ---------------------------------------------------------------------------------------------
# Mann-Whitney
# ---------------------------------------------------------------------------------------------

def _combinations_array(n: int, k: int) -> np.ndarray:
    total = math.comb(n, k)
    flat = np.fromiter(itertools.chain.from_iterable(itertools.combinations(range(n), k)), dtype=np.int32,
                       count=total * k)
    return flat.reshape(total, k)


def mann_whitney(values: Sequence[Any], groups: Sequence[Any], *, n_perm: int = 20000, n_boot: int = 5000,
                 seed: int = 0, x_name: str = "x", y_name: str = "y") -> Association:
    """Two-sided Mann–Whitney U test of ``values`` in the ``groups``=True members vs the False ones.

    ``statistic`` is U of the True group (scipy's U1). Without ties the p-value is scipy's exact
    one; with ties it is a permutation p over group labels on average ranks — exact enumeration of
    all C(n, k) assignments when that is ≤ 200 000, else ``n_perm`` seeded Monte Carlo shuffles
    ((count + 1) / (n_perm + 1)). "At least as extreme" means |U − k(n−k)/2| at least as large.
    ``effect``: median(True group) − median(False group), in the units of ``values``, with a 95 %
    bootstrap percentile CI from resampling within each group. An empty group gives None + note.
    """
    _check_counts(n_perm, n_boot)
    v = _as_float(values, x_name)
    g, g_ok = _as_bool(groups, y_name)
    _check_len(v, g, x_name, y_name)
    ok = ~np.isnan(v) & g_ok
    v, g = v[ok], g[ok]
    n = int(v.shape[0])
    a, b = v[g], v[~g]
    n1, n0 = int(a.shape[0]), int(b.shape[0])
    n_groups = f"{y_name}={n1}, non-{y_name}={n0}"
    effect_name = f"median difference ({x_name} | {y_name}=True minus {y_name}=False)"

    if n1 == 0 or n0 == 0:
        which = f"{y_name}=True" if n1 == 0 else f"{y_name}=False"
        note = "no complete pairs" if n == 0 else f"one group empty (no {which} with a value)"
        return Association(x_name, y_name, "mann_whitney", n, "U", None, None, "", effect_name, None, None, None,
                           "", n_groups, note)

    has_ties = np.unique(v).shape[0] < n
    res = _st.mannwhitneyu(a, b, alternative="two-sided", method="asymptotic" if has_ties else "exact")
    u = float(res.statistic)
    rng_p, rng_b = _streams(seed)
    notes = []
    if not has_ties:
        p, p_method = float(res.pvalue), "exact"
    else:
        ranks = _st.rankdata(v)
        mu = n1 * n0 / 2.0
        u_offset = n1 * (n1 + 1) / 2.0
        thresh = abs(u - mu) - _TOL
        if math.comb(n, n1) <= _MW_EXACT_MAX_COMBOS:
            combos = _combinations_array(n, n1)
            u_perm = ranks[combos].sum(axis=1) - u_offset
            p = float(np.count_nonzero(np.abs(u_perm - mu) >= thresh)) / combos.shape[0]
            p_method = "exact"
        else:
            labels = np.zeros(n, dtype=float)
            labels[:n1] = 1.0
            count = done = 0
            while done < n_perm:
                m = min(_CHUNK, n_perm - done)
                lab = rng_p.permuted(np.broadcast_to(labels, (m, n)), axis=1)
                count += int(np.count_nonzero(np.abs(lab @ ranks - u_offset - mu) >= thresh))
                done += m
            p = (count + 1) / (n_perm + 1)
            p_method = f"permutation ({n_perm} Monte Carlo draws)"
        notes.append("ties present: permutation p over group labels")

    effect = float(np.median(a) - np.median(b))
    lo = hi = None
    ci_method = ""
    if n_boot > 0:
        ma = np.median(a[rng_b.integers(0, n1, size=(n_boot, n1))], axis=1)
        mb = np.median(b[rng_b.integers(0, n0, size=(n_boot, n0))], axis=1)
        lo, hi = _pct_ci(ma - mb)
        ci_method = _boot_label(n_boot, n_boot)
        if min(n1, n0) == 1:
            notes.append("a group has 1 member: its median never varies in the bootstrap")
    else:
        notes.append("bootstrap disabled (n_boot = 0)")
    return Association(x_name, y_name, "mann_whitney", n, "U", u, p, p_method, effect_name, effect, lo, hi,
                       ci_method, n_groups, _join(*notes))


# ---------------------------------------------------------------------------------------------
# Fisher
# ---------------------------------------------------------------------------------------------

def fisher(a: Sequence[Any], b: Sequence[Any], *, x_name: str = "x", y_name: str = "y") -> Association:
    """Two-sided Fisher exact test on the 2×2 table [[a&b, a&~b], [~a&b, ~a&~b]].

    ``statistic``/``effect``: the sample odds ratio (a&b · ~a&~b) / (a&~b · ~a&b) — ``inf`` or 0
    when a cell is empty. The 95 % CI is the exact conditional interval from
    ``scipy.stats.contingency.odds_ratio(kind="conditional")`` (it belongs to the conditional MLE
    of the odds ratio, which differs slightly from the sample odds ratio). A constant variable
    (an empty row or column) gives None with a note.
    """
    av, a_ok = _as_bool(a, x_name)
    bv, b_ok = _as_bool(b, y_name)
    _check_len(av, bv, x_name, y_name)
    ok = a_ok & b_ok
    av, bv = av[ok], bv[ok]
    n = int(av.shape[0])
    t = np.array([[np.sum(av & bv), np.sum(av & ~bv)], [np.sum(~av & bv), np.sum(~av & ~bv)]], dtype=np.int64)
    n_groups = (f"{x_name}&{y_name}={t[0, 0]}, {x_name}&~{y_name}={t[0, 1]}, "
                f"~{x_name}&{y_name}={t[1, 0]}, ~{x_name}&~{y_name}={t[1, 1]}")

    const = [nm for nm, arr in ((x_name, av), (y_name, bv)) if n and (arr.all() or not arr.any())]
    if n == 0 or const:
        note = "no complete pairs" if n == 0 else (
            " and ".join(const) + (" is" if len(const) == 1 else " are") + " constant")
        return Association(x_name, y_name, "fisher", n, "odds_ratio", None, None, "", "odds_ratio", None, None,
                           None, "", n_groups, note)

    res = _st.fisher_exact(t, alternative="two-sided")
    num, den = int(t[0, 0] * t[1, 1]), int(t[0, 1] * t[1, 0])
    odds = math.inf if den == 0 else num / den  # num and den cannot both be 0 once no margin is empty
    ci = _odds_ratio(t, kind="conditional").confidence_interval(0.95)
    note = "a zero cell: sample odds ratio is " + ("inf" if den == 0 else "0") if (num == 0 or den == 0) else ""
    return Association(x_name, y_name, "fisher", n, "odds_ratio", float(odds), float(res.pvalue), "exact",
                       "odds_ratio", float(odds), float(ci.low), float(ci.high), "exact conditional", n_groups,
                       note)


# ---------------------------------------------------------------------------------------------
# configured list
# ---------------------------------------------------------------------------------------------

_COLUMNS = [f.name for f in fields(Association)] + ["label"]


def associations(df: pd.DataFrame, specs: list[dict], *, n_perm: int = 20000, n_boot: int = 5000,
                 seed: int = 0) -> pd.DataFrame:
    """Run each spec ``{"x": column, "y": column, "test": "spearman"|"mann_whitney"|"fisher"}`` on
    ``df`` (one row per patient) and return one row per spec, in spec order, with the
    :class:`Association` fields as columns plus ``label`` = "exploratory".

    For mann_whitney ``x`` is the numeric column and ``y`` the bool-like grouping column; for
    fisher both are bool-like. Every spec uses the same ``seed``, so a row does not depend on the
    other specs or their order, and the output is identical across runs. All specs are checked
    before any is run: a missing key, an unknown test or a column absent from ``df`` raises
    ValueError naming the spec index. Extra keys in a spec are ignored.
    """
    checked = []
    for i, spec in enumerate(specs):
        if not isinstance(spec, dict):
            raise ValueError(f"association spec {i}: expected a mapping with x, y, test, got {spec!r}")
        missing = [k for k in ("x", "y", "test") if k not in spec]
        if missing:
            raise ValueError(f"association spec {i} ({spec!r}): missing key(s) {missing}")
        test = spec["test"]
        if test not in TESTS:
            raise ValueError(f"association spec {i} ({spec!r}): unknown test {test!r}; choose from {list(TESTS)}")
        for key in ("x", "y"):
            col = spec[key]
            if col not in df.columns:
                raise ValueError(f"association spec {i} ({spec!r}): column {col!r} ({key}) is not in the data; "
                                 f"available columns: {list(map(str, df.columns))}")
        checked.append((spec["x"], spec["y"], test))

    rows = []
    for x, y, test in checked:
        if test == "spearman":
            r = spearman(df[x], df[y], n_perm=n_perm, n_boot=n_boot, seed=seed, x_name=x, y_name=y)
        elif test == "mann_whitney":
            r = mann_whitney(df[x], df[y], n_perm=n_perm, n_boot=n_boot, seed=seed, x_name=x, y_name=y)
        else:
            r = fisher(df[x], df[y], x_name=x, y_name=y)
        rows.append({**asdict(r), "label": "exploratory"})
    return pd.DataFrame(rows, columns=_COLUMNS)

"""Event generation: true (unspilled) signals per population, doublets, dead cells and debris, the
acquisition times (with an optional clog), and the observed events chunk by chunk (spillover,
electronic and photon noise, baseline, saturation). Signals are linear BD channel units until the
instrument's gains scale them into its own channel range on output."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from ._design import _Panel
from ._instrument import _PHOTON, SAT, TIMESTEP, Instrument, instrument_for
from ._populations import NUCLEATED_EXCLUDE, POPULATIONS


def _lognormal(rng, median, sd_log10, n):
    return median * np.power(10.0, rng.normal(0.0, sd_log10, n))


def _marker_values(rng, spec, n) -> np.ndarray:
    if spec is None or n == 0:
        return np.zeros(n)
    if isinstance(spec, tuple):
        return _lognormal(rng, spec[0], spec[1], n)
    out = np.zeros(n)
    u = rng.random(n)
    lo = 0.0
    for w, med, sd in spec:
        sel = (u >= lo) & (u < lo + w)
        lo += w
        k = int(sel.sum())
        if med is not None and k:
            out[sel] = _lognormal(rng, med, sd, k)
    return out


def _cells(rng, spec: Mapping, n: int, panel: _Panel, af_base: np.ndarray,
           stain_gain: np.ndarray | None = None):
    """True (unspilled) signals of n cells of one population: fsc_a, fsc_h, ssc, F (n x nf).
    ``stain_gain``: a factor per marker on the specific stain (an instrument's position shift,
    10**decades); autofluorescence is not scaled. None: no shift."""
    fsc = _lognormal(rng, spec["fsc"][0], spec["fsc"][1] / 2.3026, n)
    ssc = _lognormal(rng, spec["ssc"][0], spec["ssc"][1] / 2.3026, n)
    ratio = 0.90 - 0.10 * np.minimum(fsc, SAT) / SAT + rng.normal(0, 0.018, n)
    fsch = fsc * ratio
    nf = len(panel.markers)
    F = np.empty((n, nf))
    af = float(spec.get("af", 1.0))
    for j, m in enumerate(panel.markers):
        F[:, j] = _marker_values(rng, spec["markers"].get(m), n)
        if stain_gain is not None:
            F[:, j] *= stain_gain[j]
        if af > 0:
            F[:, j] += af_base[j] * af * np.power(10.0, rng.normal(0, 0.12, n))
    return fsc, fsch, ssc, F


@dataclass
class _Ctx:
    panel: _Panel
    kind: str
    names: tuple[str, ...]
    specs: dict
    spill: np.ndarray
    af_base: np.ndarray
    baseline: np.ndarray
    partner_names: list[str]
    partner_p: np.ndarray
    unstained: list[int]
    viability: int | None
    inst: Instrument
    stain_gain: np.ndarray | None  # per marker, 10**(the instrument's shift); None: no shift


def _gen_pop(rng, ctx: _Ctx, name: str, n: int):
    if name in ("doublet", "dead"):
        # built from (one or two) random partner cells of the cell mix
        parts = []
        for _ in range(2 if name == "doublet" else 1):
            lab = rng.choice(len(ctx.partner_names), size=n, p=ctx.partner_p)
            fa = np.empty(n)
            fh = np.empty(n)
            ss = np.empty(n)
            F = np.empty((n, len(ctx.panel.markers)))
            for k in np.unique(lab):
                sel = lab == k
                a, h, s, f = _cells(rng, ctx.specs[ctx.partner_names[k]], int(sel.sum()),
                                    ctx.panel, ctx.af_base, ctx.stain_gain)
                fa[sel], fh[sel], ss[sel], F[sel] = a, h, s, f
            parts.append((fa, fh, ss, F))
        if name == "doublet":
            (a1, h1, s1, f1), (a2, h2, s2, f2) = parts
            fa = a1 + a2
            fh = np.maximum(h1, h2) * rng.uniform(1.15, 1.45, n)
            return fa, np.minimum(fh, fa * 0.8), s1 + s2, f1 + f2
        fa, fh, ss, F = parts[0]
        shrink = rng.uniform(0.45, 0.8, n)
        F = F * rng.uniform(0.3, 0.8, (n, 1))
        if ctx.viability is not None:
            dye = _lognormal(rng, 30000, 0.2, n)
            if ctx.stain_gain is not None:
                dye *= ctx.stain_gain[ctx.viability]
            F[:, ctx.viability] += dye
        return fa * shrink, fh * shrink, ss * rng.uniform(0.8, 1.3, n), F
    if name == "debris":
        a, h, s, F = _cells(rng, ctx.specs["debris"], n, ctx.panel, ctx.af_base, ctx.stain_gain)
        a = a + 4000  # acquisition threshold on FSC
        return a, a * rng.uniform(0.7, 1.0, n), s, F
    return _cells(rng, ctx.specs[name], n, ctx.panel, ctx.af_base, ctx.stain_gain)


def _make_ctx(panel: _Panel, kind: str, counts: Mapping[str, int], specs: dict,
              unstained: Sequence[str], inst: Instrument | None = None) -> _Ctx:
    """Everything the chunks need for one tube; ``inst``: the instrument (default ``bd``)."""
    inst = inst if inst is not None else instrument_for({})
    names = POPULATIONS[kind]
    cell_names = [n for n in names if n not in NUCLEATED_EXCLUDE and counts.get(n, 0) > 0]
    w = np.array([counts[n] for n in cell_names], dtype=float)
    if w.sum() == 0:
        cell_names, w = ["debris"], np.array([1.0])
    af_base = inst.autofluorescence(panel.fluors)
    S = inst.spillover(panel.fluors)
    base = af_base @ S  # lymphocyte autofluorescence as seen by each detector
    shifts = inst.shifts(panel.markers)
    gain = (np.power(10.0, np.array([shifts[m] for m in panel.markers])) if shifts else None)
    return _Ctx(panel, kind, names, specs, S, af_base, base, cell_names, w / w.sum(),
                [panel.markers.index(m) for m in unstained if m in panel.markers],
                panel.markers.index("Viability") if "Viability" in panel.markers else None,
                inst, gain)


def _event_times(rng, n: int, rate: float, clog: tuple[int, int] | None) -> np.ndarray:
    gaps = rng.exponential(1.0 / rate, n)
    if clog is not None:
        i0, i1 = clog
        gaps[i0:i1] /= 0.15  # the rate drops to ~15% while the line is partly blocked
        burst = min(n, i1 + max(1, (i1 - i0) // 4))
        gaps[i1:burst] *= 0.4  # released: a short burst
    t = np.cumsum(gaps) / TIMESTEP
    return t


def _chunks(ctx: _Ctx, labels: np.ndarray, times: np.ndarray, clog, seeds,
            chunk: int) -> Iterator[np.ndarray]:
    """Observed events, ``chunk`` events at a time (float32: scatter, fluorescence, Time), each
    chunk drawn from its own generator (``seeds``, one per chunk)."""
    nf = len(ctx.panel.markers)
    n = labels.shape[0]
    for ci, s in enumerate(range(0, n, chunk)):
        rng = np.random.default_rng(seeds[ci])
        lab = labels[s:s + chunk]
        m = lab.shape[0]
        fa = np.empty(m)
        fh = np.empty(m)
        ss = np.empty(m)
        F = np.empty((m, nf))
        for k in np.unique(lab):
            sel = lab == k
            a, h, sc, f = _gen_pop(rng, ctx, ctx.names[k], int(sel.sum()))
            fa[sel], fh[sel], ss[sel], F[sel] = a, h, sc, f
        if ctx.unstained:
            F[:, ctx.unstained] = 0.0
            # unstained channel keeps autofluorescence only: rebuild it from a lymphocyte-like AF
            for j in ctx.unstained:
                af = np.array([float(ctx.specs.get(ctx.names[k], {}).get("af", 1.0))
                               if ctx.names[k] in ctx.specs else 1.0 for k in range(len(ctx.names))])
                F[:, j] = ctx.af_base[j] * af[lab] * np.power(10.0, rng.normal(0, 0.12, m))
        if clog is not None:
            i0, i1 = clog
            idx = np.arange(s, s + m)
            inside = (idx >= i0) & (idx < i1)
            if inside.any():
                drift = 1.0 - 0.4 * (idx[inside] - i0) / max(1, i1 - i0)
                F[inside] *= drift[:, None]
                fa[inside] *= 0.5 + 0.5 * drift
                fh[inside] *= 0.5 + 0.5 * drift
                ss[inside] *= 0.7 + 0.3 * drift
        obs = F @ ctx.spill
        noise_sd = np.sqrt(ctx.inst.sigma_e ** 2 + _PHOTON * np.maximum(obs, 0.0))
        obs += rng.standard_normal(obs.shape) * noise_sd
        obs -= ctx.baseline
        yield _observed(ctx.inst, rng, fa, fh, ss, obs, times[s:s + m])


def _observed(inst: Instrument, rng, fa, fh, ss, obs, times) -> np.ndarray:
    """One chunk in the instrument's channels (float32): scatter with its noise, fluorescence
    and Time; BD channel units times the instrument's gains, saturating at its $PnR - 1."""
    m, nf = obs.shape
    out = np.empty((m, 4 + nf), dtype=np.float32)
    sat = inst.sat
    if inst.scatter_gain == 1.0 and inst.fluor_gain == 1.0:  # bd: the channels as generated
        out[:, 0] = np.clip(fa + rng.normal(0, 300, m), 0, sat)
        out[:, 1] = np.clip(fh + rng.normal(0, 300, m), 0, sat)
        out[:, 2] = np.clip(ss + rng.normal(0, 200, m), 0, sat)
        out[:, 3:3 + nf] = np.minimum(obs, sat)
    else:
        g = inst.scatter_gain
        out[:, 0] = np.clip((fa + rng.normal(0, 300, m)) * g, 0, sat)
        out[:, 1] = np.clip((fh + rng.normal(0, 300, m)) * g, 0, sat)
        out[:, 2] = np.clip((ss + rng.normal(0, 200, m)) * g, 0, sat)
        out[:, 3:3 + nf] = np.minimum(obs * inst.fluor_gain, sat)
    out[:, 3 + nf] = times
    return out


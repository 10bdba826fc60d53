"""Write FCS 3.1 list-mode files (float32, little endian), atomically and in a streaming way.

Why not ``flowio.create_fcs``: in flowio 1.4 it takes the whole event matrix as one flat sequence
(no iterator of chunks, so a 10^7 x 13 tube must sit in memory twice), converts it through an
``array.array`` copy, and writes straight into the target handle (a crash leaves a half-written
file that looks like an FCS file). Measured on this project's machine: 0.8 s for 10^6 x 13 events,
i.e. ~8 s and ~1 GB of extra memory for 10^7 x 13. This writer streams each chunk's bytes as they
come (``ndarray.tofile``-speed, ~1 s for 10^7 x 13), keeps memory bounded by the chunk size, and
publishes the file with ``os.replace`` only when it is complete.

Layout written: HEADER (58 bytes) | TEXT | padding spaces | DATA. DATA starts at an offset fixed
before the data are streamed (the TEXT segment is given a reserved slot large enough for the
final keyword values), which solves the self-referential ``$BEGINDATA``/``$ENDDATA`` width problem
and lets the event count stay unknown until the last chunk. FCS 3.1 allows unused bytes between
segments; the HEADER holds the true TEXT end. DATA offsets above 99,999,999 are written as 0 in
the HEADER and live in TEXT only, as the standard requires.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import numpy as np

__all__ = ["write_fcs", "format_spillover"]

_DELIM = "/"
_HEADER_LEN = 58
# Keywords this writer owns; metadata may not override them (it would corrupt the file).
_RESERVED = {
    "$BEGINANALYSIS", "$ENDANALYSIS", "$BEGINDATA", "$ENDDATA", "$BEGINSTEXT", "$ENDSTEXT",
    "$BYTEORD", "$DATATYPE", "$MODE", "$NEXTDATA", "$PAR", "$TOT",
}


def _escape(s: str) -> str:
    s = str(s)
    if s == "":
        raise ValueError("FCS keyword values may not be empty")
    return s.replace(_DELIM, _DELIM + _DELIM)


def format_spillover(detectors: Sequence[str], matrix: np.ndarray) -> str:
    """The ``$SPILLOVER`` value: ``n,det1,...,detn,m11,m12,...`` (rows = fluorochrome/source
    detector, columns = receiving detector; observed = true @ matrix)."""
    m = np.asarray(matrix, dtype=float)
    n = len(detectors)
    if m.shape != (n, n):
        raise ValueError(f"spillover matrix shape {m.shape} does not match {n} detectors")
    vals = ",".join(f"{v:.6g}" for v in m.ravel())
    return f"{n}," + ",".join(detectors) + "," + vals


def _build_text(keywords: Mapping[str, str]) -> bytes:
    parts = [_DELIM]
    for k, v in keywords.items():
        parts.append(_escape(k))
        parts.append(_DELIM)
        parts.append(_escape(v))
        parts.append(_DELIM)
    return "".join(parts).encode("utf-8")


def _keywords(
    n_events: int,
    begin: int,
    end: int,
    pnn: Sequence[str],
    pns: Sequence[str | None] | None,
    pnr: Sequence[float] | float | None,
    metadata: Mapping[str, object] | None,
) -> dict[str, str]:
    p = len(pnn)
    kw: dict[str, str] = {
        "$BEGINANALYSIS": "0",
        "$ENDANALYSIS": "0",
        "$BEGINSTEXT": "0",
        "$ENDSTEXT": "0",
        "$BEGINDATA": str(begin),
        "$ENDDATA": str(end),
        "$BYTEORD": "1,2,3,4",
        "$DATATYPE": "F",
        "$MODE": "L",
        "$NEXTDATA": "0",
        "$PAR": str(p),
        "$TOT": str(n_events),
    }
    if pnr is None or np.isscalar(pnr):
        rng = [262144 if pnr is None else pnr] * p
    else:
        rng = list(pnr)
        if len(rng) != p:
            raise ValueError(f"pnr has {len(rng)} values for {p} parameters")
    for i in range(p):
        j = i + 1
        kw[f"$P{j}N"] = str(pnn[i])
        if pns is not None and pns[i] not in (None, ""):
            kw[f"$P{j}S"] = str(pns[i])
        kw[f"$P{j}B"] = "32"
        kw[f"$P{j}E"] = "0,0"
        r = rng[i]
        kw[f"$P{j}R"] = str(int(r)) if float(r).is_integer() else str(r)
        kw[f"$P{j}G"] = "1"
    for k, v in (metadata or {}).items():
        key = str(k)
        if key.upper() in _RESERVED:
            raise ValueError(f"metadata may not set {key}: the writer owns it")
        if v is None or str(v) == "":
            continue  # FCS forbids empty values; an absent keyword says the same
        kw[key] = str(v)
    return kw


def _header(text_begin: int, text_end: int, data_begin: int, data_end: int) -> bytes:
    def f(v: int) -> str:
        return f"{v:>8d}"

    if data_end > 99_999_999:
        data_begin_h, data_end_h = 0, 0
    else:
        data_begin_h, data_end_h = data_begin, data_end
    h = "FCS3.1    " + f(text_begin) + f(text_end) + f(data_begin_h) + f(data_end_h) + f(0) + f(0)
    assert len(h) == _HEADER_LEN
    return h.encode("ascii")


def _as_chunks(data, p: int) -> Iterable[np.ndarray]:
    if isinstance(data, np.ndarray):
        if data.ndim != 2 or data.shape[1] != p:
            raise ValueError(f"data must be events x {p} parameters, got shape {data.shape}")
        step = 1_000_000
        for s in range(0, max(data.shape[0], 1), step):
            yield data[s : s + step]
        return
    for chunk in data:
        chunk = np.asarray(chunk)
        if chunk.ndim != 2 or chunk.shape[1] != p:
            raise ValueError(f"each chunk must be events x {p} parameters, got shape {chunk.shape}")
        yield chunk


def write_fcs(
    path: str | os.PathLike,
    data,
    pnn: Sequence[str],
    pns: Sequence[str | None] | None = None,
    metadata: Mapping[str, object] | None = None,
    pnr: Sequence[float] | float | None = None,
) -> Path:
    """Write an FCS 3.1 file (``$DATATYPE F``, ``$BYTEORD 1,2,3,4``).

    ``data`` is an (events x parameters) array or an iterable of such chunks (streamed to disk).
    ``pns`` entries that are None/empty get no ``$PnS`` keyword. ``pnr`` is one range for all
    parameters or one per parameter (default 262144). ``metadata`` adds keywords (keys written as
    given, e.g. ``$CYT``, ``$SPILLOVER``, ``$SRC``; empty values are skipped). The file appears at
    ``path`` only when complete (temp file in the same folder + ``os.replace``).
    """
    path = Path(path)
    pnn = [str(n) for n in pnn]
    p = len(pnn)
    if p == 0:
        raise ValueError("at least one parameter is needed")
    if pns is not None and len(pns) != p:
        raise ValueError(f"pns has {len(pns)} names for {p} parameters")

    # Reserve the TEXT slot with the widest values $TOT/$BEGINDATA/$ENDDATA can take (20 digits),
    # then pick DATA's start after it, rounded up to 8 bytes.
    big = 10**19
    probe = _build_text(_keywords(big, big, big, pnn, pns, pnr, metadata))
    data_begin = _HEADER_LEN + len(probe)
    data_begin = (data_begin + 7) // 8 * 8

    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix="." + path.name + ".", suffix=".part", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.seek(data_begin)
            n_events = 0
            for chunk in _as_chunks(data, p):
                arr = np.ascontiguousarray(chunk, dtype="<f4")
                if arr.shape[0] == 0:
                    continue
                fh.write(memoryview(arr).cast("B"))
                n_events += arr.shape[0]
            if n_events == 0:
                raise ValueError(f"no events to write to {path}")
            nbytes = n_events * p * 4
            data_end = data_begin + nbytes - 1
            kw = _keywords(n_events, data_begin, data_end, pnn, pns, pnr, metadata)
            text = _build_text(kw)
            text_end = _HEADER_LEN + len(text) - 1
            if text_end >= data_begin:  # cannot happen: the probe used the widest values
                raise RuntimeError("FCS TEXT segment outgrew its reserved slot")
            fh.seek(0)
            fh.write(_header(_HEADER_LEN, text_end, data_begin, data_end))
            fh.write(text)
            fh.write(b" " * (data_begin - (text_end + 1)))
            fh.seek(0, os.SEEK_END)
            fh.flush()
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    return path

"""Build small FCS files byte by byte, with switchable writer quirks, for the reader tests.

Everything is written by hand (HEADER, TEXT, optional supplemental TEXT, DATA) so that a test can
produce exactly the malformed layout it is about, without depending on any FCS writer.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

HEADER_LEN = 58
_OFFSET_WIDTH = 12  # $BEGINDATA etc. are zero-padded so TEXT length does not depend on them


@dataclass
class FCSSpec:
    """What to write.  ``values`` is events x parameters; the rest are knobs for quirks."""

    values: np.ndarray
    version: str = "FCS3.1"
    datatype: str = "F"  # I, F, D or A
    bits: list[int] | None = None  # $PnB per parameter (I: 1 to 64 bits, A: characters)
    byteorder: str = "<"  # "<" -> $BYTEORD 1,2,3,4 ; ">" -> 4,3,2,1
    delimiter: str = "/"
    names: list[str] | None = None  # $PnN (default FL1..FLn)
    keywords: dict[str, str | None] = field(default_factory=dict)  # override / add; None drops
    supplemental: dict[str, str] = field(default_factory=dict)  # keywords put in $BEGINSTEXT
    header_data: str = "normal"  # "normal" | "blank" | "zero": HEADER DATA offsets
    header_start_shift: int = 0  # HEADER DATA start = TEXT $BEGINDATA + shift
    header_end_shift: int = 0  # HEADER DATA end = TEXT $ENDDATA + shift
    text_encoding: str = "utf-8"
    end_shift: int = 0  # HEADER end and $ENDDATA = true last byte + shift (off-by-one)
    second_dataset: bool = False  # append a copy as a second data set, $NEXTDATA -> it
    truncate: int = 0  # drop this many bytes from the end of the file


def data_bytes(spec: FCSSpec) -> bytes:
    values = np.asarray(spec.values)
    n, p = values.shape
    order = spec.byteorder
    if spec.datatype == "F":
        return values.astype(order + "f4").tobytes()
    if spec.datatype == "D":
        return values.astype(order + "f8").tobytes()
    bits = spec.bits or [16] * p
    if spec.datatype == "I" and any(b not in (8, 16, 32, 64) for b in bits):
        return _odd_int_bytes(values, bits, order)
    if spec.datatype == "I":
        record = np.dtype([(f"p{j}", f"{order}u{b // 8}") for j, b in enumerate(bits)])
        rec = np.empty(n, dtype=record)
        for j in range(p):
            rec[f"p{j}"] = values[:, j]
        return rec.tobytes()
    if spec.datatype == "A":
        return "".join(
            "".join(f"{int(v):>{bits[j]}d}" for j, v in enumerate(row)) for row in values
        ).encode("ascii")
    raise ValueError(spec.datatype)


def _odd_int_bytes(values: np.ndarray, bits: list[int], order: str) -> bytes:
    """Integer DATA of any widths, built with Python integers (independent of numpy's types).

    Whole-byte widths: each value as ``bits // 8`` bytes in the byte order.  Otherwise one bit
    stream of all fields with no padding, most significant bit first for big-endian and least
    significant first for little-endian (the layout that equals the byte order for whole bytes),
    the last byte padded with zero bits.
    """
    cells = [(int(v), b) for row in values for v, b in zip(row, bits)]
    if all(b % 8 == 0 for b in bits):
        endian = "big" if order == ">" else "little"
        return b"".join(v.to_bytes(b // 8, endian) for v, b in cells)
    total = sum(b for _, b in cells)
    n_bytes = (total + 7) // 8
    stream, pos = 0, 0
    for v, b in cells:
        assert 0 <= v < 1 << b, (v, b)
        if order == ">":
            stream = (stream << b) | v
        else:
            stream |= v << pos
        pos += b
    if order == ">":
        return (stream << (8 * n_bytes - total)).to_bytes(n_bytes, "big")
    return stream.to_bytes(n_bytes, "little")


def _text(spec: FCSSpec, pairs: dict[str, str]) -> bytes:
    d = spec.delimiter
    esc = d + d
    body = "".join(f"{k.replace(d, esc)}{d}{v.replace(d, esc)}{d}" for k, v in pairs.items())
    return (d + body).encode(spec.text_encoding)


def _keywords(spec: FCSSpec, offsets: dict[str, int]) -> dict[str, str]:
    values = np.asarray(spec.values)
    n, p = values.shape
    names = spec.names or [f"FL{i}" for i in range(1, p + 1)]
    pad = lambda v: f"{v:0{_OFFSET_WIDTH}d}"  # noqa: E731
    kw: dict[str, str] = {
        "$BEGINANALYSIS": "0",
        "$ENDANALYSIS": "0",
        "$BEGINSTEXT": pad(offsets["stext_start"]),
        "$ENDSTEXT": pad(offsets["stext_end"]),
        "$BEGINDATA": pad(offsets["data_start"]),
        "$ENDDATA": pad(offsets["data_end"]),
        "$BYTEORD": "1,2,3,4" if spec.byteorder == "<" else "4,3,2,1",
        "$DATATYPE": spec.datatype,
        "$MODE": "L",
        "$NEXTDATA": pad(offsets["next_data"]),
        "$PAR": str(p),
        "$TOT": str(n),
    }
    bits = spec.bits or [16] * p
    for i, name in enumerate(names, start=1):
        kw[f"$P{i}N"] = name
        if spec.datatype == "F":
            kw[f"$P{i}B"] = "32"
        elif spec.datatype == "D":
            kw[f"$P{i}B"] = "64"
        else:
            kw[f"$P{i}B"] = str(bits[i - 1])
        kw[f"$P{i}E"] = "0,0"
        if spec.datatype == "I":
            kw[f"$P{i}R"] = str(2 ** bits[i - 1])
        elif spec.datatype == "A":
            kw[f"$P{i}R"] = str(10 ** bits[i - 1])
        else:
            kw[f"$P{i}R"] = "262144"
    for key, value in spec.keywords.items():
        if value is None:
            kw.pop(key, None)
        else:
            kw[key] = value
    return kw


def _dataset(spec: FCSSpec, base: int, next_data: int) -> tuple[bytes, int]:
    """One data set placed at file offset ``base``; returns (bytes, its length)."""
    data = data_bytes(spec)
    zero = dict(stext_start=0, stext_end=0, data_start=0, data_end=0, next_data=0)
    text_len = len(_text(spec, _keywords(spec, zero)))
    stext = _text(spec, spec.supplemental) if spec.supplemental else b""
    text_start = HEADER_LEN
    stext_start = text_start + text_len
    data_start = stext_start + len(stext)
    data_end = data_start + len(data) - 1
    offsets = dict(
        stext_start=stext_start if stext else 0,
        stext_end=stext_start + len(stext) - 1 if stext else 0,
        data_start=data_start,
        data_end=data_end + spec.end_shift,
        next_data=next_data,
    )
    text = _text(spec, _keywords(spec, offsets))
    assert len(text) == text_len, "offset keywords must keep their width"

    def field8(value: int | None) -> str:
        return " " * 8 if value is None else f"{value:>8d}"

    if spec.header_data == "blank":
        hdr_start = hdr_end = None
    elif spec.header_data == "zero":
        hdr_start = hdr_end = 0
    else:
        hdr_start = data_start + spec.header_start_shift
        hdr_end = data_end + spec.end_shift + spec.header_end_shift
        if hdr_end > 99_999_999:  # FCS 3.1: offsets that do not fit in 8 digits are written as 0
            hdr_start = hdr_end = 0
    header = (
        f"{spec.version:<6s}    "
        + field8(text_start)
        + field8(text_start + text_len - 1)
        + field8(hdr_start)
        + field8(hdr_end)
        + field8(0)
        + field8(0)
    ).encode("ascii")
    assert len(header) == HEADER_LEN
    blob = header + text + stext + data
    return blob, len(blob)


def fcs_bytes(spec: FCSSpec) -> bytes:
    """The whole file.  Offsets in a second data set are relative to its own start."""
    if spec.second_dataset:
        _, first_len = _dataset(spec, 0, 0)
        first, _ = _dataset(spec, 0, first_len)
        second, _ = _dataset(spec, first_len, 0)
        blob = first + second
    else:
        blob, _ = _dataset(spec, 0, 0)
    return blob[: len(blob) - spec.truncate] if spec.truncate else blob


def write_fcs(path: Path, values, **knobs) -> Path:
    """Write ``FCSSpec(values, **knobs)`` to ``path`` and return the path."""
    path.write_bytes(fcs_bytes(FCSSpec(np.asarray(values), **knobs)))
    return path

"""Read FCS 2.0 / 3.0 / 3.1 list-mode files into numpy arrays.

Why our own reader instead of flowio / FlowKit / fcsparser:

* flowio (and FlowKit, which reads through it) refuses several layouts that real cytometers write:
  DATA offsets that are off by one byte (unless ``ignore_offset_error=True``), blank HEADER offsets
  (files over 100 MB keep the offsets only in TEXT), and files holding more than one data set.
  Its errors are generic (``ValueError: invalid literal for int()``) and name no file.
* flowio builds a Python list of every value and then a float64 matrix: several copies of a tube.
  The pipeline wants float32 (half the memory; the instruments store at most 32-bit values) and a
  bounded footprint, so this reader fills one preallocated matrix in the requested dtype straight
  from the file, converting in chunks of a few MB.
* fcsparser pins numpy < 2 and cannot live beside FlowKit.

What the reader returns:

* ``FCSData.channel_values``: events x parameters, the values exactly as stored in DATA (integer
  channel numbers, or the float values), only bit-masked to ``$PnR`` for integer data.  No
  ``$PnE`` / ``$PnG`` / ``$TIMESTEP`` scaling.  This is what the shared MANIFESTs describe.
* ``FCSData.scaled()`` / ``FCSData.events``: the values FlowKit calls "raw" events (flowio's
  pre-processing): log-amplified channels (``$PnE`` = f1,f2 with f1 > 0) mapped to linear
  ``10 ** (f1 * v / $PnR) * f2`` (f2 = 0 read as 1), other channels divided by their gain
  ``$PnG`` (when present and not 0 or 1), and the channel named ``Time`` multiplied by
  ``$TIMESTEP`` (seconds per time unit) with its gain ignored.  Like flowio, ``$PnE`` is
  honoured whatever the ``$DATATYPE`` (the standard expects 0,0 for float data anyway).

Offsets: blank or zero HEADER DATA offsets defer to ``$BEGINDATA``/``$ENDDATA``; a DATA segment
one byte longer or shorter than ``$TOT`` x bytes per event is read as exactly that many bytes;
HEADER and TEXT disagreeing on where DATA *starts* is refused (see ``_resolve_data_segment``).

Every refusal is an :class:`FCSReadError` whose message starts with the file path and names the
cause.  Sizes are checked against the DATA segment and the file size before anything is allocated,
so a corrupt ``$TOT`` cannot make the reader allocate terabytes.
"""

from __future__ import annotations

import os
import re
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, replace
from functools import cached_property
from pathlib import Path
from typing import IO, NamedTuple

import numpy as np

from mrdflow.errors import MrdflowError

__all__ = [
    "FCSReadError",
    "FCSReadWarning",
    "FCSHeader",
    "FCSData",
    "read_header",
    "read_fcs",
    "read_channel_values",
    "iter_events",
]

HEADER_BYTES = 58  # "FCSx.y" + 4 spaces + six 8-character ASCII offsets
CHUNK_BYTES = 16 * 2**20  # DATA is converted in pieces of about this size
SPILLOVER_KEYWORDS = ("$SPILLOVER", "SPILL", "$SPILL", "SPILLOVER")

_VERSION_RE = re.compile(rb"FCS\d\.\d")
_LITTLE_ENDIAN = {"1", "1,2", "1,2,3,4", "1,2,3,4,5,6,7,8"}
_BIG_ENDIAN = {"2,1", "4,3,2,1", "8,7,6,5,4,3,2,1"}


class FCSReadError(MrdflowError):
    """An FCS file cannot be read.  ``str(err)`` is ``"<path>: <cause>"``."""

    def __init__(self, path: str | os.PathLike, cause: str):
        self.path = str(path)
        self.cause = cause
        super().__init__(f"{self.path}: {cause}")


class FCSReadWarning(UserWarning):
    """The file was read, but something about it deserves a look (extra data sets, offsets)."""


# --------------------------------------------------------------------------------------------
# Small value types
# --------------------------------------------------------------------------------------------


class Segment(NamedTuple):
    """A byte range of the file; ``end`` is inclusive, as in the FCS standard."""

    start: int
    end: int

    @property
    def length(self) -> int:
        return self.end - self.start + 1

    def __str__(self) -> str:
        return f"bytes {self.start}-{self.end}"


class ChannelScale(NamedTuple):
    """The per-channel factors ``scaled()`` applies (see the module docstring)."""

    decades: float  # $PnE f1; > 0 means log-amplified
    log_zero: float  # $PnE f2 (1.0 where the file says 0 for a log channel)
    range: float  # $PnR, the channel's full scale
    gain: float  # $PnG, 1.0 where absent
    is_time: bool  # the channel is named "Time": multiplied by $TIMESTEP, gain ignored


@dataclass(frozen=True)
class FCSHeader:
    """HEADER and TEXT of one FCS file (never the DATA).

    ``metadata`` maps upper-cased keywords (``$`` kept) to their values as written, primary TEXT
    taking precedence over supplemental TEXT.  ``data_start``/``data_end`` are the resolved,
    inclusive byte offsets of DATA (``data_end = data_start - 1`` for an empty segment);
    ``byteorder`` is numpy's ``"<"`` or ``">"``; ``n_datasets_hint`` is 1, or 2 when
    ``$NEXTDATA`` points to a further data set (there may be more than 2).
    """

    path: str
    version: str
    metadata: dict[str, str]
    pnn: list[str]
    pns: list[str]
    n_events: int
    n_parameters: int
    data_start: int
    data_end: int
    datatype: str
    byteorder: str
    bits: tuple[int, ...]  # $PnB per parameter (0 for free-format ASCII "*")
    n_datasets_hint: int = 1

    @property
    def bytes_per_event(self) -> int:
        return sum(self.bits) // 8

    def _fail(self, cause: str) -> FCSReadError:
        return FCSReadError(self.path, cause)


@dataclass(frozen=True, eq=False)
class FCSData:
    """One data set: the header plus the events x parameters matrix of stored channel values."""

    header: FCSHeader
    channel_values: np.ndarray

    # --- header pass-throughs ---------------------------------------------------------------
    @property
    def path(self) -> str:
        return self.header.path

    @property
    def version(self) -> str:
        return self.header.version

    @property
    def pnn(self) -> list[str]:
        return self.header.pnn

    @property
    def pns(self) -> list[str]:
        return self.header.pns

    @property
    def metadata(self) -> dict[str, str]:
        return self.header.metadata

    @property
    def n_events(self) -> int:
        return self.header.n_events

    @property
    def n_parameters(self) -> int:
        return self.header.n_parameters

    def __repr__(self) -> str:
        return (
            f"FCSData({self.path!r}, {self.version}, {self.n_events} events x "
            f"{self.n_parameters} parameters, {self.channel_values.dtype})"
        )

    # --- channels -----------------------------------------------------------------------------
    def channel_index(self, name: str) -> int:
        """Column of the channel whose $PnN (else, if unique, $PnS) equals ``name``."""
        if name in self.pnn:
            return self.pnn.index(name)
        hits = [i for i, s in enumerate(self.pns) if s and s == name]
        if len(hits) == 1:
            return hits[0]
        if len(hits) > 1:
            raise KeyError(f"{self.path}: channel {name!r} matches several $PnS: {hits}")
        raise KeyError(f"{self.path}: no channel named {name!r} (PnN: {', '.join(self.pnn)})")

    # --- scaling ------------------------------------------------------------------------------
    def channel_scales(self) -> list[ChannelScale]:
        """The $PnE / $PnR / $PnG / Time factors that :meth:`scaled` applies, per channel."""
        return _channel_scales(self.header)

    def timestep(self) -> float:
        """$TIMESTEP in seconds per Time unit (1.0 when absent or blank)."""
        return _timestep(self.header)

    def scaled(self, dtype: np.typing.DTypeLike | None = None) -> np.ndarray:
        """Events with FlowKit's "raw" pre-processing (log decades, /gain, Time x $TIMESTEP).

        Computed column by column in float64 and stored in ``dtype`` (default: the dtype of
        ``channel_values``).  Raises FCSReadError when a needed keyword is unusable.
        """
        out_dtype = np.dtype(self.channel_values.dtype if dtype is None else dtype)
        return self._scale(np.array(self.channel_values, dtype=out_dtype, copy=True))

    def _scale(self, out: np.ndarray) -> np.ndarray:
        """Scale the columns of ``out`` (a copy of, or the very, channel values) in place."""
        scales = self.channel_scales()
        step = self.timestep() if any(s.is_time for s in scales) else 1.0
        for j, s in enumerate(scales):
            needs_log = s.decades > 0
            needs_gain = not s.is_time and s.gain not in (0.0, 1.0)
            needs_step = s.is_time and step != 1.0
            if not (needs_log or needs_gain or needs_step):
                continue
            col = out[:, j].astype(np.float64)
            if needs_step:
                col *= step
            if needs_log:
                col = 10.0 ** (s.decades * col / s.range) * s.log_zero
            if needs_gain:
                col /= s.gain
            out[:, j] = col
        return out

    @cached_property
    def events(self) -> np.ndarray:
        """``scaled()``, computed once (a second matrix in memory, unless :meth:`scale_in_place`
        was called)."""
        return self.scaled()

    def scale_in_place(self) -> np.ndarray:
        """Apply :meth:`scaled`'s scaling to ``channel_values`` itself and make it ``events``.

        For callers that need only the scaled events (the analysis of a 10^7-event tube): one
        matrix in memory instead of two. Afterwards ``channel_values`` holds scaled values too.
        """
        if "events" in self.__dict__:
            return self.__dict__["events"]
        values = self._scale(self.channel_values)
        self.__dict__["events"] = values  # cached_property's slot; the dataclass is frozen
        return values

    @classmethod
    def from_events(cls, header: FCSHeader, events: np.ndarray) -> FCSData:
        """An FCSData whose ``events`` are ``events``, values already scaled (rows picked from
        scaled chunks); ``header.n_events`` is set to their number."""
        data = cls(header=replace(header, n_events=int(events.shape[0])), channel_values=events)
        data.__dict__["events"] = events
        return data

    # --- compensation and FlowKit ---------------------------------------------------------
    def spillover(self) -> tuple[list[str], np.ndarray] | None:
        """(channel names, n x n matrix) from $SPILLOVER / SPILL / $SPILL, or None if absent."""
        for key in SPILLOVER_KEYWORDS:
            if key in self.metadata and self.metadata[key].strip():
                return _parse_spillover(self.header, key, self.metadata[key])
        return None

    def to_flowkit(self, sample_id: str | None = None):
        """A ``flowkit.Sample`` holding the scaled events, labelled with $PnN and $PnS.

        FlowKit stores the matrix as float32 in a temporary FCS file and re-reads it, so the
        Sample's "raw" events equal :meth:`scaled` to float32 precision.
        """
        import flowkit  # heavy import, only when asked for
        import pandas as pd

        columns = pd.MultiIndex.from_arrays([self.pnn, self.pns], names=["pnn", "pns"])
        frame = pd.DataFrame(self.scaled(np.float64), columns=columns)
        return flowkit.Sample(frame, sample_id=sample_id or Path(self.path).name)


# --------------------------------------------------------------------------------------------
# Public functions
# --------------------------------------------------------------------------------------------


def read_header(path: str | os.PathLike) -> FCSHeader:
    """Parse HEADER and TEXT (and supplemental TEXT) of ``path``; DATA is not read.

    Resolves and validates the DATA offsets against $TOT x bytes per event and the file size,
    so a header that reads cleanly describes a DATA segment that can be read.
    """
    path = str(path)
    try:
        with open(path, "rb") as fh:
            return _read_header(fh, path, os.fstat(fh.fileno()).st_size)
    except OSError as exc:
        raise FCSReadError(path, f"cannot open: {exc.strerror or exc}") from exc


def read_fcs(path: str | os.PathLike, dtype: np.typing.DTypeLike = np.float32) -> FCSData:
    """Read the first data set of ``path`` as channel values in ``dtype`` (float32 by default).

    Memory is one events x parameters matrix in ``dtype`` plus a conversion buffer of a few
    MB.  Files with further data sets ($NEXTDATA != 0) give an FCSReadWarning.
    """
    path = str(path)
    out_dtype = np.dtype(dtype)
    if out_dtype.kind != "f":
        raise ValueError(f"dtype must be a floating type, not {out_dtype}")
    try:
        with open(path, "rb") as fh:
            header = _read_header(fh, path, os.fstat(fh.fileno()).st_size)
            if header.n_datasets_hint > 1:
                warnings.warn(
                    f"{path}: holds more than one data set ($NEXTDATA="
                    f"{header.metadata.get('$NEXTDATA', '').strip()}); only the first is read",
                    FCSReadWarning,
                    stacklevel=2,
                )
            values = _read_data(fh, header, out_dtype)
    except OSError as exc:
        raise FCSReadError(path, f"cannot read: {exc.strerror or exc}") from exc
    return FCSData(header=header, channel_values=values)


def read_channel_values(path: str | os.PathLike) -> tuple[list[str], np.ndarray]:
    """($PnN labels, stored channel values as float32): the adapter the shared scorer calls."""
    data = read_fcs(path)
    return data.pnn, data.channel_values


def iter_events(path: str | os.PathLike, chunk_events: int = 1 << 20,
                dtype: np.typing.DTypeLike = np.float32) -> Iterator[tuple[int, FCSData]]:
    """Stream the first data set of ``path`` as (first event index, FCSData of the next
    ``chunk_events`` events), so a tube larger than memory can be processed in one pass.

    Each chunk's ``n_events`` is its own row count (the file's is ``read_header(path).n_events``);
    its values are stored channel values, as :func:`read_fcs` gives them, so
    ``chunk.scale_in_place()`` applies the same scaling. Memory is one chunk plus the conversion
    buffer. Free-format ASCII DATA ($PnB ``*``) has no fixed record and is read whole, as one
    chunk. The file is reopened per call and read sequentially; DATA is not memory-mapped, so the
    events never count against the process's resident memory all at once.
    """
    path = str(path)
    out_dtype = np.dtype(dtype)
    if out_dtype.kind != "f":
        raise ValueError(f"dtype must be a floating type, not {out_dtype}")
    if chunk_events < 1:
        raise ValueError("chunk_events must be >= 1")
    try:
        with open(path, "rb") as fh:
            header = _read_header(fh, path, os.fstat(fh.fileno()).st_size)
            if header.n_datasets_hint > 1:
                warnings.warn(f"{path}: holds more than one data set; only the first is read", FCSReadWarning,
                              stacklevel=2)
            if header.datatype == "A" and header.bytes_per_event == 0:
                values = _read_data(fh, header, out_dtype)
                yield 0, FCSData(header=header, channel_values=values)
                return
            for start in range(0, header.n_events, chunk_events):
                stop = min(start + chunk_events, header.n_events)
                values = _read_rows(fh, header, start, stop, out_dtype)
                yield start, FCSData(header=replace(header, n_events=stop - start), channel_values=values)
    except OSError as exc:
        raise FCSReadError(path, f"cannot read: {exc.strerror or exc}") from exc


# --------------------------------------------------------------------------------------------
# HEADER and TEXT
# --------------------------------------------------------------------------------------------


def _read_header(fh: IO[bytes], path: str, file_size: int) -> FCSHeader:
    raw = fh.read(HEADER_BYTES)
    if len(raw) < HEADER_BYTES:
        raise FCSReadError(
            path,
            f"file too short to be FCS ({file_size} bytes; the HEADER alone needs {HEADER_BYTES})",
        )
    if not _VERSION_RE.fullmatch(raw[:6]):
        raise FCSReadError(path, f"not an FCS file (starts with {raw[:6]!r}, expected b'FCSx.y')")
    version = raw[:6].decode("ascii")
    offsets = [_header_offset(path, raw, i) for i in range(6)]
    text_start, text_end, hdr_data_start, hdr_data_end = offsets[:4]

    if not text_start or not text_end:
        raise FCSReadError(path, "HEADER gives no TEXT segment offsets")
    text_seg = _checked_segment(path, "TEXT", Segment(text_start, text_end), file_size)
    fh.seek(text_seg.start)
    text = fh.read(text_seg.length)
    delimiter = text[:1]
    metadata = _parse_text(path, "TEXT", text)

    for key, value in _supplemental_text(fh, path, metadata, delimiter, file_size).items():
        metadata.setdefault(key, value)

    return _build_header(path, version, metadata, file_size, hdr_data_start, hdr_data_end)


def _supplemental_text(
    fh: IO[bytes], path: str, metadata: dict[str, str], delimiter: bytes, file_size: int
) -> dict[str, str]:
    """Keywords of the supplemental TEXT ($BEGINSTEXT-$ENDSTEXT), {} when there is none.

    It only holds optional keywords, so a damaged one is reported as a warning, not a refusal.
    """
    try:
        seg = _optional_segment(path, metadata, "$BEGINSTEXT", "$ENDSTEXT")
        if seg is None:
            return {}
        seg = _checked_segment(path, "supplemental TEXT", seg, file_size)
        fh.seek(seg.start)
        raw = fh.read(seg.length)
        if raw[:1] != delimiter:  # the standard has it start with the primary delimiter
            raw = delimiter + raw
        return _parse_text(path, "supplemental TEXT", raw)
    except FCSReadError as err:
        warnings.warn(f"{err}; supplemental TEXT ignored", FCSReadWarning, stacklevel=5)
        return {}


def _header_offset(path: str, raw: bytes, index: int) -> int | None:
    """The ``index``-th 8-character HEADER offset (0 = TEXT start); None when blank."""
    field = raw[10 + 8 * index : 18 + 8 * index]
    text = field.strip(b" \x00")
    if not text:
        return None
    if not text.isdigit():
        which = ("TEXT", "DATA", "ANALYSIS")[index // 2] + (" start", " end")[index % 2]
        raise FCSReadError(path, f"HEADER {which} offset {field!r} is not a number")
    return int(text)


def _checked_segment(path: str, what: str, seg: Segment, file_size: int) -> Segment:
    if seg.start < 0:
        raise FCSReadError(path, f"{what} segment ({seg}) starts at a negative offset")
    if seg.end < seg.start:
        raise FCSReadError(path, f"{what} segment ({seg}) ends before it starts")
    if seg.end >= file_size:
        raise FCSReadError(
            path, f"{what} segment ({seg}) extends beyond end of file ({file_size} bytes)"
        )
    return seg


def _parse_text(path: str, what: str, text: bytes) -> dict[str, str]:
    """Split a TEXT segment into {KEYWORD: value}.

    The first byte is the delimiter; a doubled delimiter inside a keyword or value stands for
    one literal delimiter.  Tolerated: padding (spaces/NULs) after the final delimiter, and a
    final value whose closing delimiter is missing.  Keywords are upper-cased; values are
    decoded as UTF-8, falling back to latin-1 (older instruments write latin-1).
    """
    if len(text) < 2:
        raise FCSReadError(path, f"{what} segment is empty")
    delim = text[:1]
    body = text[1:]
    if delim not in body:
        raise FCSReadError(
            path, f"bad {what}: missing delimiter (the delimiter {delim!r} never occurs again)"
        )
    tokens: list[bytes] = []
    current = bytearray()
    pos = 0
    n = len(body)
    while True:
        hit = body.find(delim, pos)
        if hit < 0:
            current += body[pos:]
            break
        if hit + 1 < n and body[hit + 1 : hit + 2] == delim:  # escaped (doubled) delimiter
            current += body[pos : hit + 1]
            pos = hit + 2
            continue
        current += body[pos:hit]
        tokens.append(bytes(current))
        current = bytearray()
        pos = hit + 1
    if current.strip(b" \x00\r\n\t"):
        tokens.append(bytes(current))  # last value lacks its closing delimiter
    if len(tokens) % 2 or any(delim in k for k in tokens[::2]):
        # Some writers (e.g. CellQuest, FCS 2.0) write empty values as two adjacent delimiters,
        # which the escape rule reads as one literal delimiter. Fall back to a plain split that
        # allows empty values when that yields well-formed keyword/value pairs.
        plain = body.split(delim)
        if plain and not plain[-1].strip(b" \x00\r\n\t"):
            plain = plain[:-1]
        if len(plain) % 2 == 0 and all(k.strip() for k in plain[::2]):
            tokens = plain
    if len(tokens) % 2:
        raise FCSReadError(
            path,
            f"bad {what}: odd number of keyword/value fields ({len(tokens)}); "
            f"a value or delimiter is missing near {tokens[-1][:40]!r}",
        )
    metadata: dict[str, str] = {}
    for key, value in zip(tokens[::2], tokens[1::2]):
        name = _decode(key).strip().upper()
        if not name:
            raise FCSReadError(path, f"bad {what}: empty keyword before value {value[:40]!r}")
        metadata.setdefault(name, _decode(value))
    return metadata


def _decode(raw: bytes) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("latin-1")


def _int_keyword(
    path: str, metadata: dict[str, str], key: str, *, required: bool = True
) -> int | None:
    """An integer keyword; tolerates padding and integral floats ("1024.0")."""
    if key not in metadata or not metadata[key].strip():
        if required:
            raise FCSReadError(path, f"bad TEXT: required keyword {key} is missing")
        return None
    value = metadata[key].strip()
    try:
        return int(value)
    except ValueError:
        try:
            as_float = float(value)
        except ValueError:
            as_float = float("nan")
        if as_float.is_integer():
            return int(as_float)
        raise FCSReadError(path, f"bad TEXT: {key} = {metadata[key]!r} is not an integer") from None


def _optional_segment(path: str, metadata: dict[str, str], begin: str, end: str) -> Segment | None:
    """A segment named by TEXT keywords; None when absent or both 0."""
    start = _int_keyword(path, metadata, begin, required=False)
    stop = _int_keyword(path, metadata, end, required=False)
    if start is None or stop is None or (start == 0 and stop == 0):
        return None
    if start < 0 or stop < 0:
        raise FCSReadError(path, f"bad TEXT: negative offset in {begin}/{end} ({start}-{stop})")
    return Segment(start, stop)


def _byteorder(path: str, metadata: dict[str, str], datatype: str) -> str:
    raw = metadata.get("$BYTEORD")
    if raw is None or not raw.strip():
        if datatype == "A":
            return "<"  # byte order is meaningless for ASCII data
        raise FCSReadError(path, "bad TEXT: required keyword $BYTEORD is missing")
    order = raw.replace(" ", "")
    if order in _LITTLE_ENDIAN:
        return "<"
    if order in _BIG_ENDIAN:
        return ">"
    raise FCSReadError(path, f"unsupported $BYTEORD {raw!r} (only little- or big-endian orders)")


def _parameter_bits(
    path: str, metadata: dict[str, str], n_par: int, datatype: str
) -> tuple[int, ...]:
    """$PnB per parameter in bits (ASCII widths converted from characters; 0 for '*')."""
    bits = []
    for i in range(1, n_par + 1):
        key = f"$P{i}B"
        raw = metadata.get(key, "").strip()
        if not raw:
            raise FCSReadError(path, f"bad TEXT: required keyword {key} is missing")
        if raw == "*":
            if datatype != "A":
                raise FCSReadError(path, f"{key} = '*' (free-format) is only valid for $DATATYPE A")
            bits.append(0)
            continue
        b = _int_keyword(path, metadata, key)
        if datatype == "F":
            b = _expect_width(path, key, b, 32)
        elif datatype == "D":
            b = _expect_width(path, key, b, 64)
        elif datatype == "I" and b not in (8, 16, 32, 64):
            raise FCSReadError(
                path, f"unsupported {key} = {b} bits for integer data (8, 16, 32 or 64 are read)"
            )
        elif datatype == "A" and b <= 0:
            raise FCSReadError(path, f"bad TEXT: {key} = {b} characters")
        bits.append(b if datatype != "A" else 8 * b)  # ASCII widths are characters -> bits
    if datatype == "A" and 0 in bits and any(bits):
        raise FCSReadError(path, "ASCII data mixes fixed ($PnB digits) and free ('*') widths")
    return tuple(bits)


def _expect_width(path: str, key: str, bits: int, width: int) -> int:
    if bits != width:
        warnings.warn(
            f"{path}: {key} = {bits} but the $DATATYPE implies {width}; using {width}",
            FCSReadWarning,
            stacklevel=6,
        )
    return width


def _build_header(
    path: str,
    version: str,
    metadata: dict[str, str],
    file_size: int,
    hdr_data_start: int | None,
    hdr_data_end: int | None,
) -> FCSHeader:
    n_par = _int_keyword(path, metadata, "$PAR")
    if n_par <= 0:
        raise FCSReadError(path, f"bad TEXT: $PAR = {n_par}; a data set needs a parameter")
    mode = metadata.get("$MODE", "L").strip().upper() or "L"
    if mode != "L":
        raise FCSReadError(path, f"unsupported $MODE {mode!r}: only list-mode ('L') data is read")
    datatype = metadata.get("$DATATYPE", "").strip().upper()
    if not datatype:
        raise FCSReadError(path, "bad TEXT: required keyword $DATATYPE is missing")
    if datatype not in ("I", "F", "D", "A"):
        raise FCSReadError(path, f"unsupported $DATATYPE {datatype!r} (I, F, D or A)")
    byteorder = _byteorder(path, metadata, datatype)
    bits = _parameter_bits(path, metadata, n_par, datatype)

    pnn, pns = [], []
    for i in range(1, n_par + 1):
        name = metadata.get(f"$P{i}N", "").strip()
        if not name:
            raise FCSReadError(path, f"bad TEXT: required keyword $P{i}N is missing")
        if name in pnn:
            raise FCSReadError(
                path, f"bad TEXT: $P{i}N {name!r} repeats $P{pnn.index(name) + 1}N (channel names must be unique)"
            )
        pnn.append(name)
        pns.append(metadata.get(f"$P{i}S", "").strip())

    text_data = _optional_segment(path, metadata, "$BEGINDATA", "$ENDDATA")
    n_events = _int_keyword(path, metadata, "$TOT", required=not version.startswith("FCS2"))
    if n_events is not None and n_events < 0:
        raise FCSReadError(path, f"bad TEXT: $TOT = {n_events}")
    bytes_per_event = sum(bits) // 8
    data = _resolve_data_segment(
        path, hdr_data_start, hdr_data_end, text_data, n_events, bytes_per_event
    )
    if n_events is None:  # FCS 2.0 made $TOT optional: derive it from an exact DATA size
        if not bytes_per_event or data.length % bytes_per_event:
            raise FCSReadError(
                path, "bad TEXT: $TOT is missing and the DATA size does not give it exactly"
            )
        n_events = data.length // bytes_per_event
    data = _check_data_size(path, data, n_events, bytes_per_event, file_size)

    next_data = _int_keyword(path, metadata, "$NEXTDATA", required=False) or 0
    return FCSHeader(
        path=path,
        version=version,
        metadata=metadata,
        pnn=pnn,
        pns=pns,
        n_events=n_events,
        n_parameters=n_par,
        data_start=data.start,
        data_end=data.end,
        datatype=datatype,
        byteorder=byteorder,
        bits=bits,
        n_datasets_hint=2 if next_data > 0 else 1,
    )


# --------------------------------------------------------------------------------------------
# Locating and checking DATA
# --------------------------------------------------------------------------------------------


def _fits(seg: Segment, expected: int | None) -> bool:
    """The segment holds ``expected`` bytes, allowing the common off-by-one in either way."""
    return expected is None or abs(seg.length - expected) <= 1


def _resolve_data_segment(
    path: str,
    hdr_start: int | None,
    hdr_end: int | None,
    text_seg: Segment | None,
    n_events: int | None,
    bytes_per_event: int,
) -> Segment:
    """Decide where DATA lies from the HEADER offsets and $BEGINDATA/$ENDDATA.

    A HEADER offset that is blank or 0 means "see TEXT" (FCS 3.1 for files over 99,999,999
    bytes).  When both name a segment:

    * They disagree on the START: refuse.  Which one is right cannot be known from the file,
      and guessing silently gives wrong events: in FlowKit's
      ``data_start_offset_discrepancy_example.fcs`` the HEADER start lies inside the TEXT
      segment, so trusting it (as fcsparser does) decodes keyword text as events.  For a
      clinical MRD count a clear error beats plausible garbage.
    * They agree on the start but not the END: the size is fixed by $TOT x bytes per event
      anyway, so use the end that matches it (TEXT when both do) and warn.  This reads
      ``data_stop_offset_discrepancy_example.fcs``, whose HEADER end lies past end of file.
    """
    hdr_start = hdr_start or None
    hdr_end = hdr_end or None
    expected = None if n_events is None else n_events * bytes_per_event
    if text_seg is None:
        if hdr_start is not None and hdr_end is not None:
            return Segment(hdr_start, hdr_end)
        if expected == 0:
            return Segment(hdr_start or 0, (hdr_start or 0) - 1)
        raise FCSReadError(
            path,
            "no DATA offsets: HEADER offsets are blank or 0 and TEXT lacks $BEGINDATA/$ENDDATA",
        )
    if hdr_start is not None and hdr_start != text_seg.start:
        raise FCSReadError(
            path,
            f"HEADER and TEXT disagree on where DATA starts (HEADER offset {hdr_start}, "
            f"TEXT $BEGINDATA {text_seg.start}); refusing to guess which is right",
        )
    if hdr_end is None or hdr_end == text_seg.end:
        return text_seg
    hdr_seg = Segment(text_seg.start, hdr_end)
    exact = [s for s in (text_seg, hdr_seg) if expected is not None and s.length == expected]
    near = [s for s in (text_seg, hdr_seg) if _fits(s, expected)]
    chosen = (exact or near or [None])[0]
    if chosen is None:
        raise FCSReadError(
            path,
            f"HEADER and TEXT disagree on where DATA ends (HEADER {hdr_end}, TEXT $ENDDATA "
            f"{text_seg.end}) and neither matches $TOT x bytes per event = {expected} bytes",
        )
    warnings.warn(
        f"{path}: HEADER and TEXT disagree on where DATA ends (HEADER {hdr_end}, TEXT "
        f"{text_seg.end}); using {chosen.end}, which matches $TOT x bytes per event",
        FCSReadWarning,
        stacklevel=5,
    )
    return chosen


def _check_data_size(
    path: str, seg: Segment, n_events: int, bytes_per_event: int, file_size: int
) -> Segment:
    """Check $TOT x $PAR against the DATA segment and the file; return the bytes to read.

    Done before any allocation.  The returned segment holds exactly $TOT x bytes per event
    (the declared segment may be one byte longer or shorter: a common writer bug).
    """
    if n_events == 0:
        return Segment(seg.start, seg.start - 1)
    if bytes_per_event == 0:  # free-format ASCII: the size is only known by parsing
        if seg.end >= file_size:
            raise FCSReadError(
                path, f"DATA segment ({seg}) extends beyond end of file ({file_size} bytes)"
            )
        return seg
    expected = n_events * bytes_per_event
    if not _fits(seg, expected):
        where = (
            f"; the segment also extends beyond end of file ({file_size} bytes)"
            if seg.end >= file_size
            else ""
        )
        raise FCSReadError(
            path,
            f"$TOT/$PAR inconsistent with DATA size: $TOT = {n_events} events x "
            f"{bytes_per_event} bytes per event = {expected} bytes, but the DATA segment "
            f"({seg}) holds {seg.length} bytes{where}",
        )
    wanted = Segment(seg.start, seg.start + expected - 1)
    if wanted.end >= file_size:
        present = max(0, file_size - seg.start)
        raise FCSReadError(
            path,
            f"file truncated: DATA segment ({seg}) extends beyond end of file ({file_size} "
            f"bytes); {present} of {expected} DATA bytes are present",
        )
    return wanted


# --------------------------------------------------------------------------------------------
# DATA
# --------------------------------------------------------------------------------------------


def _stored_dtypes(header: FCSHeader) -> list[np.dtype]:
    """numpy dtype of each parameter as stored (unsigned ints for $DATATYPE I)."""
    o = header.byteorder
    if header.datatype == "F":
        return [np.dtype(o + "f4")] * header.n_parameters
    if header.datatype == "D":
        return [np.dtype(o + "f8")] * header.n_parameters
    if header.datatype == "I":
        return [np.dtype(f"{o}u{b // 8}") for b in header.bits]
    return [np.dtype(f"S{b // 8}") for b in header.bits]  # fixed-width ASCII


def _range_masks(header: FCSHeader) -> list[int | None]:
    """Bit mask per integer parameter: bits above the $PnR range are not data.

    The standard says so, and the reference readers apply ``value & (next_pow2($PnR) - 1)``.
    The fixture ``fake_bitmask_error__fcs1_cleaned.lmd`` stores 16912 (= 0x4210) in 16-bit
    channels with $PnR = 1024; its MANIFEST expects 528 = 16912 & 1023.
    """
    masks: list[int | None] = []
    for i, bits in enumerate(header.bits, start=1):
        raw = header.metadata.get(f"$P{i}R", "").strip()
        try:
            full_scale = int(float(raw))
        except (ValueError, OverflowError):
            full_scale = 0
        if full_scale <= 0:
            masks.append(None)  # unusable $PnR: keep every stored bit
            continue
        span = 1 << (full_scale - 1).bit_length()  # next power of two >= $PnR
        masks.append(span - 1 if span < (1 << bits) else None)
    return masks


def _read_data(fh: IO[bytes], header: FCSHeader, out_dtype: np.dtype) -> np.ndarray:
    if header.n_events == 0:
        return np.empty((0, header.n_parameters), dtype=out_dtype)
    if header.datatype == "A" and header.bytes_per_event == 0:
        fh.seek(header.data_start)
        return _read_free_ascii(fh, header, out_dtype)
    return _read_rows(fh, header, 0, header.n_events, out_dtype)


def _read_rows(fh: IO[bytes], header: FCSHeader, start: int, stop: int, out_dtype: np.dtype) -> np.ndarray:
    """Events ``start`` to ``stop - 1`` of a fixed-width DATA segment as stored channel values."""
    n, p = stop - start, header.n_parameters
    if n <= 0:
        return np.empty((0, p), dtype=out_dtype)
    stored = _stored_dtypes(header)
    masks = _range_masks(header) if header.datatype == "I" else [None] * p
    masked = any(m is not None for m in masks)
    uniform = len(set(stored)) == 1
    record = np.dtype([(f"p{j}", dt) for j, dt in enumerate(stored)])
    fh.seek(header.data_start + start * record.itemsize)
    out = np.empty((n, p), dtype=out_dtype)

    if uniform and stored[0].newbyteorder("=") == out_dtype and not masked:
        # Fast path: the file holds exactly our dtype; read straight into the output buffer
        # and fix the byte order in place.  No second copy.
        _readinto_exact(fh, header, memoryview(out).cast("B"))
        if not stored[0].isnative:
            out.byteswap(inplace=True)
        return out

    rows_per_chunk = max(1, CHUNK_BYTES // record.itemsize)
    for first in range(0, n, rows_per_chunk):
        rows = min(rows_per_chunk, n - first)
        buf = _read_exact(fh, header, rows * record.itemsize)
        if uniform and header.datatype != "A":
            block = np.frombuffer(buf, dtype=stored[0]).reshape(rows, p)
            if masked:
                every_bit = (1 << (8 * block.itemsize)) - 1
                row_mask = [every_bit if m is None else m for m in masks]
                block = block & np.array(row_mask, dtype=block.dtype.newbyteorder("="))
            out[first : first + rows] = block
            continue
        recs = np.frombuffer(buf, dtype=record)
        for j, mask in enumerate(masks):
            column = recs[f"p{j}"]
            if header.datatype == "A":
                column = _ascii_to_float(header, j, column)
            elif mask is not None:
                column = column & column.dtype.type(mask)
            out[first : first + rows, j] = column
    return out


def _read_exact(fh: IO[bytes], header: FCSHeader, size: int) -> bytes:
    buf = fh.read(size)
    if len(buf) != size:  # the file shrank since the size check
        raise header._fail(
            f"file truncated while reading DATA (bytes {header.data_start}-{header.data_end})"
        )
    return buf


def _readinto_exact(fh: IO[bytes], header: FCSHeader, view: memoryview) -> None:
    done = 0
    while done < len(view):
        got = fh.readinto(view[done:])
        if not got:
            raise header._fail(
                f"file truncated while reading DATA (bytes {header.data_start}-{header.data_end})"
            )
        done += got


def _ascii_to_float(header: FCSHeader, j: int, column: np.ndarray) -> np.ndarray:
    try:
        return np.char.strip(column).astype(np.float64)
    except ValueError as exc:
        raise header._fail(f"ASCII DATA of parameter {j + 1} holds a non-number ({exc})") from None


def _read_free_ascii(fh: IO[bytes], header: FCSHeader, out_dtype: np.dtype) -> np.ndarray:
    """$DATATYPE A with $PnB = '*': numbers separated by whitespace or commas."""
    size = header.data_end - header.data_start + 1
    text = _read_exact(fh, header, size).decode("latin-1")
    fields = [f for f in re.split(r"[\s,]+", text) if f]
    expected = header.n_events * header.n_parameters
    if len(fields) < expected:
        raise header._fail(
            f"$TOT/$PAR inconsistent with ASCII DATA: expected {expected} values, "
            f"found {len(fields)}"
        )
    try:
        values = np.array(fields[:expected], dtype=np.float64)
    except ValueError as exc:
        raise header._fail(f"ASCII DATA holds a non-number ({exc})") from None
    return values.reshape(header.n_events, header.n_parameters).astype(out_dtype)


# --------------------------------------------------------------------------------------------
# Scaling keywords and spillover
# --------------------------------------------------------------------------------------------


def _float_keyword(header: FCSHeader, key: str, default: float) -> float:
    raw = header.metadata.get(key, "").strip()
    if not raw:
        return default
    try:
        return float(raw)
    except ValueError:
        raise header._fail(f"{key} = {header.metadata[key]!r} is not a number") from None


def _timestep(header: FCSHeader) -> float:
    return _float_keyword(header, "$TIMESTEP", 1.0)


def _channel_scales(header: FCSHeader) -> list[ChannelScale]:
    scales = []
    for i, name in enumerate(header.pnn, start=1):
        decades, log_zero = 0.0, 0.0
        raw = header.metadata.get(f"$P{i}E", "").strip()
        if raw:
            parts = raw.split(",")
            try:
                decades, log_zero = (float(x) for x in parts)
            except ValueError:
                raise header._fail(f"$P{i}E = {raw!r} is not two numbers 'f1,f2'") from None
        if decades > 0 and log_zero == 0:
            log_zero = 1.0  # the standard reads a log channel's f2 = 0 as 1
        full_scale = _float_keyword(header, f"$P{i}R", 0.0)
        if decades > 0 and full_scale <= 0:
            raise header._fail(f"log channel {name!r} ($P{i}E = {raw}) needs a positive $P{i}R")
        scales.append(
            ChannelScale(
                decades=decades,
                log_zero=log_zero,
                range=full_scale,
                gain=_float_keyword(header, f"$P{i}G", 1.0),
                is_time=name.lower() == "time",
            )
        )
    return scales


def _parse_spillover(header: FCSHeader, key: str, raw: str) -> tuple[list[str], np.ndarray]:
    parts = [x.strip() for x in raw.split(",")]
    try:
        size = int(parts[0])
    except ValueError:
        raise header._fail(f"{key} does not start with a channel count: {raw[:40]!r}") from None
    if size <= 0 or len(parts) != 1 + size + size * size:
        raise header._fail(
            f"{key} is malformed: {size} channels need {size} names and {size * size} "
            f"values, found {len(parts) - 1} fields"
        )
    names = parts[1 : 1 + size]
    try:
        matrix = np.array(parts[1 + size :], dtype=np.float64).reshape(size, size)
    except ValueError:
        raise header._fail(f"{key} holds a non-numeric coefficient") from None
    return names, matrix

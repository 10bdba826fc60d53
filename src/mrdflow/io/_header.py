"""HEADER and TEXT of an FCS file: keywords, parameters and where DATA lies (:class:`FCSHeader`).

Offsets are byte positions in the file, inclusive at both ends as in the FCS standard.  Blank or
zero HEADER DATA offsets defer to ``$BEGINDATA``/``$ENDDATA``; a DATA segment one byte longer or
shorter than ``$TOT`` x bytes per event is read as exactly that many bytes; HEADER and TEXT
disagreeing on where DATA *starts* is refused (see ``_resolve_data_segment``).

Every refusal is an :class:`FCSReadError` whose message starts with the file path and names the
cause.  Sizes are checked against the DATA segment and the file size (bytes) before anything is
allocated, so a corrupt ``$TOT`` cannot make the reader allocate terabytes.  Decoding DATA is
:mod:`mrdflow.io._data`'s job; :mod:`mrdflow.io._reader` puts the two together.
"""

from __future__ import annotations

import os
import re
import warnings
from dataclasses import dataclass
from typing import IO, NamedTuple

from mrdflow.errors import MrdflowError

__all__ = ["FCSReadError", "FCSReadWarning", "FCSHeader", "read_header"]

HEADER_BYTES = 58  # "FCSx.y" + 4 spaces + six 8-character ASCII offsets

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
    def bits_per_event(self) -> int:
        """Bits of DATA one event occupies (the sum of $PnB; 0 for free-format ASCII)."""
        return sum(self.bits)

    @property
    def bytes_per_event(self) -> int:
        """Whole bytes per event; for packed integer data (see :attr:`packed`) the events are
        not byte-aligned and :attr:`bits_per_event` is the exact figure."""
        return self.bits_per_event // 8

    @property
    def packed(self) -> bool:
        """Integer data with a $PnB that is not a whole number of bytes: DATA is a bit stream."""
        return self.datatype == "I" and any(b % 8 for b in self.bits)

    def _fail(self, cause: str) -> FCSReadError:
        return FCSReadError(self.path, cause)


# --------------------------------------------------------------------------------------------
# Public function
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
        elif datatype == "I" and not 1 <= b <= 64:
            raise FCSReadError(
                path, f"unsupported {key} = {b} bits for integer data (1 to 64 bits are read)"
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
    bits_per_event = sum(bits)
    data = _resolve_data_segment(
        path, hdr_data_start, hdr_data_end, text_data, n_events, bits_per_event
    )
    if n_events is None:  # FCS 2.0 made $TOT optional: derive it from an exact DATA size
        # Packed events that end inside a byte leave the count ambiguous (padding bits at the
        # end of DATA could hold part of one more event), so those need $TOT.
        if not bits_per_event or bits_per_event % 8 or data.length % (bits_per_event // 8):
            raise FCSReadError(
                path, "bad TEXT: $TOT is missing and the DATA size does not give it exactly"
            )
        n_events = data.length // (bits_per_event // 8)
    data = _check_data_size(path, data, n_events, bits, file_size)

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


def _data_bytes(n_events: int, bits_per_event: int) -> int:
    """Bytes that ``n_events`` events of ``bits_per_event`` bits fill (packed data rounds the
    last byte up)."""
    return (n_events * bits_per_event + 7) // 8


def _fits(seg: Segment, expected: int | None) -> bool:
    """The segment holds ``expected`` bytes, allowing the common off-by-one in either way."""
    return expected is None or abs(seg.length - expected) <= 1


def _resolve_data_segment(
    path: str,
    hdr_start: int | None,
    hdr_end: int | None,
    text_seg: Segment | None,
    n_events: int | None,
    bits_per_event: int,
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
    expected = None if n_events is None else _data_bytes(n_events, bits_per_event)
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
    path: str, seg: Segment, n_events: int, bits: tuple[int, ...], file_size: int
) -> Segment:
    """Check $TOT x $PAR against the DATA segment and the file; return the bytes to read.

    Done before any allocation.  The returned segment holds exactly $TOT x bytes per event
    (the declared segment may be one byte longer or shorter: a common writer bug); packed
    integer data (a $PnB that is not a whole number of bytes) fills $TOT x bits per event
    rounded up to whole bytes.
    """
    if n_events == 0:
        return Segment(seg.start, seg.start - 1)
    bits_per_event = sum(bits)
    if bits_per_event == 0:  # free-format ASCII: the size is only known by parsing
        if seg.end >= file_size:
            raise FCSReadError(
                path, f"DATA segment ({seg}) extends beyond end of file ({file_size} bytes)"
            )
        return seg
    expected = _data_bytes(n_events, bits_per_event)
    if not _fits(seg, expected):
        where = (
            f"; the segment also extends beyond end of file ({file_size} bytes)"
            if seg.end >= file_size
            else ""
        )
        per_event = (
            f"{bits_per_event} bits per event (packed), rounded up to {expected} bytes"
            if bits_per_event % 8
            else f"{bits_per_event // 8} bytes per event = {expected} bytes"
        )
        raise FCSReadError(
            path,
            f"$TOT/$PAR inconsistent with DATA size: $TOT = {n_events} events x "
            f"{per_event}, but the DATA segment ({seg}) holds {seg.length} bytes{where}"
            + _whole_byte_hint(seg, n_events, bits),
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


def _whole_byte_hint(seg: Segment, n_events: int, bits: tuple[int, ...]) -> str:
    """A note for packed $PnB whose DATA is exactly the size of whole-byte fields.

    Some writers declare the bits a value uses (e.g. $PnB = 10 from Beckman Coulter CXP) but
    store each value in whole bytes.  Reading such DATA as a bit stream gives wrong numbers and
    assuming a field width is a guess, so the file stays refused; the note says why.
    """
    if not any(b % 8 for b in bits):
        return ""
    padded = [8 * -(-b // 8) for b in bits]
    for width in (padded, [1 << (b - 1).bit_length() if b > 8 else 8 for b in bits]):
        if _fits(seg, n_events * sum(width) // 8):
            return (
                f"; that is the size of values stored in whole bytes ($PnB rounded up to "
                f"{sorted(set(width))} bits), as some writers do while declaring the bits "
                f"used (e.g. Beckman Coulter CXP's $PnB = 10), so the layout is ambiguous"
            )
    return ""

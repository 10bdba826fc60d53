"""The DATA segment of an FCS file decoded into one preallocated events x parameters matrix.

Integer data ($DATATYPE I: unsigned, any $PnB from 1 to 64 bits, masked to the bits of $PnR),
float data (F: 32-bit, D: 64-bit) and ASCII data (A: fixed width, or free format when $PnB is
``*``), in either byte order.  Integer widths numpy has a type for (8/16/32/64 bits) are read
straight into numpy; other whole-byte widths (24, 40, 48, 56 bits, as e.g. the Cytek xP5 writes)
are widened byte by byte, and widths that are not whole bytes are cut out of the DATA bit stream
(see :func:`_read_odd_int_rows`).  Fixed-width DATA is converted in chunks of about :data:`CHUNK_BYTES` bytes,
so memory is the output matrix plus one chunk.  Values are the stored channel values; scaling
is :class:`mrdflow.io.FCSData`'s job.  Where DATA lies comes from :class:`FCSHeader`, already
checked against the file size.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Iterator
from typing import IO

import numpy as np

from mrdflow.io._header import FCSHeader, FCSReadWarning

CHUNK_BYTES = 16 * 2**20  # DATA is converted in pieces of about this size (bytes)
NUMPY_INT_BITS = (8, 16, 32, 64)  # integer widths numpy reads directly (the fast paths)


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


def _read_rows(fh: IO[bytes], header: FCSHeader, start: int, stop: int, out_dtype: np.dtype,
               out: np.ndarray | None = None) -> np.ndarray:
    """Events ``start`` to ``stop - 1`` of a fixed-width DATA segment as stored channel values
    (into ``out``, a C-contiguous (stop - start, parameters) array of ``out_dtype``, when given
    and the file's layout reads straight into it)."""
    n, p = stop - start, header.n_parameters
    if n <= 0:
        return np.empty((0, p), dtype=out_dtype)
    if header.datatype == "I" and any(b not in NUMPY_INT_BITS for b in header.bits):
        return _read_odd_int_rows(fh, header, start, stop, out_dtype)
    stored = _stored_dtypes(header)
    masks = _range_masks(header) if header.datatype == "I" else [None] * p
    masked = any(m is not None for m in masks)
    uniform = len(set(stored)) == 1
    record = np.dtype([(f"p{j}", dt) for j, dt in enumerate(stored)])
    fh.seek(header.data_start + start * record.itemsize)
    direct = uniform and stored[0].newbyteorder("=") == out_dtype and not masked
    if out is None or not direct or out.shape != (n, p) or not out.flags.c_contiguous:
        out = np.empty((n, p), dtype=out_dtype)

    if direct:
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


def _read_odd_int_rows(
    fh: IO[bytes], header: FCSHeader, start: int, stop: int, out_dtype: np.dtype
) -> np.ndarray:
    """Events ``start`` to ``stop - 1`` of integer DATA where some $PnB is not 8/16/32/64 bits.

    Each value is widened to a 64-bit unsigned integer, masked to its $PnR bits and stored in
    ``out_dtype``.  Whole-byte widths (e.g. 24 bits) are copied into 8-byte slots: the low bytes
    of a little-endian slot, the high bytes of a big-endian one.  Otherwise ($PnB not a multiple
    of 8: "packed" data, which FCS 2.0/3.0 allow) DATA is one stream of $PnB-bit fields with no
    padding between values or events.  The standard names no bit order for it; we take the one
    that reduces to the byte order of $BYTEORD when the widths are whole bytes: most significant
    bit first for big-endian files, least significant first for little-endian ones.  Because
    that is a reading of the standard, not a rule of it, packed files give an FCSReadWarning.
    """
    n, p = stop - start, header.n_parameters
    out = np.empty((n, p), dtype=out_dtype)
    masks = _range_masks(header)
    per_event = header.bits_per_event
    if header.packed and start == 0:
        order = "most" if header.byteorder == ">" else "least"
        warnings.warn(
            f"{header.path}: packed integer DATA ($PnB {sorted(set(header.bits))} bits); read as "
            f"one bit stream, {order} significant bit first per $BYTEORD",
            FCSReadWarning,
            stacklevel=5,
        )
    # A chunk widens one parameter at a time into a (rows x 64) bit or (rows x 8) byte matrix,
    # and packed DATA is unpacked to one byte per bit first, so the row count keeps both that
    # matrix and the chunk's (unpacked) DATA at most about CHUNK_BYTES.
    if header.packed:
        rows_per_chunk = max(1, CHUNK_BYTES // max(64, per_event))
    else:
        rows_per_chunk = max(1, CHUNK_BYTES // max(8, per_event // 8))
    for first in range(0, n, rows_per_chunk):
        rows = min(rows_per_chunk, n - first)
        first_bit = (start + first) * per_event
        fh.seek(header.data_start + first_bit // 8)
        size = (first_bit % 8 + rows * per_event + 7) // 8
        raw = np.frombuffer(_read_exact(fh, header, size), dtype=np.uint8)
        if header.packed:
            columns = _unpack_bit_fields(raw, first_bit % 8, rows, header)
        else:
            columns = _widen_byte_fields(raw.reshape(rows, per_event // 8), header)
        for j, (column, mask) in enumerate(zip(columns, masks)):
            out[first : first + rows, j] = column if mask is None else column & np.uint64(mask)
    return out


def _widen_byte_fields(records: np.ndarray, header: FCSHeader) -> Iterator[np.ndarray]:
    """uint64 columns, one at a time, from a (rows x bytes per event) matrix of whole-byte
    fields (one column in memory at a time: 1-byte fields would otherwise grow 8-fold)."""
    big = header.byteorder == ">"
    slot = np.zeros((records.shape[0], 8), dtype=np.uint8)
    offset = 0
    for bits in header.bits:
        width = bits // 8
        field = records[:, offset : offset + width]
        offset += width
        slot[:] = 0
        if big:
            slot[:, 8 - width :] = field
        else:
            slot[:, :width] = field
        yield slot.view(">u8" if big else "<u8")[:, 0].astype(np.uint64)


def _unpack_bit_fields(raw: np.ndarray, skip: int, rows: int, header: FCSHeader) -> Iterator[np.ndarray]:
    """uint64 columns, one at a time, from packed DATA: ``rows`` events starting ``skip`` bits
    into ``raw``."""
    big = header.byteorder == ">"
    order = "big" if big else "little"
    per_event = header.bits_per_event
    stream = np.unpackbits(raw, bitorder=order)[skip : skip + rows * per_event]
    events = stream.reshape(rows, per_event)
    slot = np.zeros((rows, 64), dtype=np.uint8)
    offset = 0
    for bits in header.bits:
        field = events[:, offset : offset + bits]
        offset += bits
        slot[:] = 0
        if big:  # most significant bit first: the field fills the low end of a big-endian word
            slot[:, 64 - bits :] = field
        else:  # least significant bit first: bit t of the field is bit t of the word
            slot[:, :bits] = field
        word = np.packbits(slot, axis=1, bitorder=order)
        yield word.view(">u8" if big else "<u8")[:, 0].astype(np.uint64)


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

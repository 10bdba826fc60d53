"""Integer DATA of any $PnB from 1 to 64 bits: whole-byte widths (24, 40, ...), packed bit
streams (10, 12, ...), mixed widths, $PnR masks, both byte orders, streamed = whole reads.

Files are built byte by byte by tests/fcs_bytes.py (Python integers, not numpy types), and the
byte layouts themselves are pinned by literal bytes in ``test_layout_bytes``.
"""

import subprocess
import sys
import warnings

import numpy as np
import pytest
from conftest import shared_dir
from fcs_bytes import FCSSpec, data_bytes, write_fcs

from mrdflow.io import FCSReadError, FCSReadWarning, iter_events, read_fcs

ORDERS = ["<", ">"]
WIDTHS = [
    [24, 24, 24],  # Cytek xP5 layout
    [24, 16, 8, 40, 32],  # whole bytes, mixed
    [48, 56, 64],
    [12, 12, 12],  # packed, events end on byte boundaries every 2 events
    [10, 16, 6, 1],  # packed, mixed, 33 bits per event
    [1, 2, 3, 5, 7, 9, 63],  # every kind of odd width, up to 63 bits
    [64, 10],
]


def _values(n, bits, seed=0):
    rng = np.random.default_rng(seed)
    cols = [rng.integers(0, 2**b, n, dtype=np.uint64, endpoint=False) for b in bits]
    for j, b in enumerate(bits):  # the extremes of each width
        cols[j][0], cols[j][-1] = 0, 2**b - 1
    return np.column_stack(cols)


def _read_quiet(path, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FCSReadWarning)
        return read_fcs(path, **kw)


@pytest.mark.parametrize("order", ORDERS)
@pytest.mark.parametrize("bits", WIDTHS, ids=lambda b: "-".join(map(str, b)))
def test_values_read_back_exactly(tmp_path, bits, order):
    values = _values(41, bits)
    path = write_fcs(tmp_path / "w.fcs", values, datatype="I", bits=bits, byteorder=order)
    data = _read_quiet(path, dtype=np.float64)
    assert data.header.bits == tuple(bits)
    # float64 holds every value below 2**53 exactly; wider ones round the same way either side
    np.testing.assert_array_equal(data.channel_values, values.astype(np.float64))


def test_layout_bytes():
    """The byte layouts the reader assumes, written out by hand."""
    v24 = np.array([[0x010203]])
    assert data_bytes(FCSSpec(v24, datatype="I", bits=[24], byteorder=">")) == b"\x01\x02\x03"
    assert data_bytes(FCSSpec(v24, datatype="I", bits=[24], byteorder="<")) == b"\x03\x02\x01"
    v12 = np.array([[0xABC, 0x123]])
    # big-endian: most significant bit first -> AB C1 23
    assert data_bytes(FCSSpec(v12, datatype="I", bits=[12, 12], byteorder=">")) == b"\xab\xc1\x23"
    # little-endian: least significant first -> the 24-bit word 0x123ABC, low byte first
    assert data_bytes(FCSSpec(v12, datatype="I", bits=[12, 12], byteorder="<")) == b"\xbc\x3a\x12"
    # a 10-bit field then padding: 0x3FF MSB first -> 11111111 11000000
    assert data_bytes(FCSSpec(np.array([[0x3FF]]), datatype="I", bits=[10], byteorder=">")) == b"\xff\xc0"


@pytest.mark.parametrize("order", ORDERS)
def test_hand_written_bytes_decode(tmp_path, order):
    """Literal DATA bytes (not built by the writer) decode to the intended values."""
    blob = b"\xab\xc1\x23" if order == ">" else b"\xbc\x3a\x12"
    spec_path = write_fcs(tmp_path / "p.fcs", np.array([[0, 0]]), datatype="I", bits=[12, 12], byteorder=order)
    raw = bytearray(spec_path.read_bytes())
    raw[-3:] = blob
    spec_path.write_bytes(bytes(raw))
    assert _read_quiet(spec_path).channel_values.tolist() == [[0xABC, 0x123]]


@pytest.mark.parametrize("order", ORDERS)
@pytest.mark.parametrize("bits", [[24, 24], [12, 12], [10, 6, 20]], ids=str)
def test_range_masks_apply(tmp_path, bits, order):
    """Bits above the next power of two >= $PnR are not data, whatever the width."""
    values = _values(30, bits, seed=3)
    kw = {f"$P{i}R": "1000" for i in range(1, len(bits) + 1)}  # 10 bits of data per value
    path = write_fcs(tmp_path / "m.fcs", values, datatype="I", bits=bits, byteorder=order, keywords=kw)
    got = _read_quiet(path, dtype=np.float64).channel_values
    np.testing.assert_array_equal(got, (values & np.uint64(1023)).astype(np.float64))


@pytest.mark.parametrize("order", ORDERS)
@pytest.mark.parametrize("bits", [[24, 24, 24], [10, 16, 6, 1], [1, 2, 3, 5, 7, 9, 63]], ids=str)
@pytest.mark.parametrize("chunk", [1, 3, 7, 100])
def test_streamed_chunks_equal_whole_read(tmp_path, bits, order, chunk):
    values = _values(53, bits, seed=5)
    path = write_fcs(tmp_path / "s.fcs", values, datatype="I", bits=bits, byteorder=order)
    whole = _read_quiet(path).channel_values
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FCSReadWarning)
        parts = list(iter_events(path, chunk_events=chunk))
    assert [s for s, _ in parts] == list(range(0, 53, chunk))
    np.testing.assert_array_equal(np.vstack([c.channel_values for _, c in parts]), whole)


def test_chunked_conversion_matches(tmp_path, monkeypatch):
    """Internal conversion chunks (CHUNK_BYTES) split rows without changing values."""
    import mrdflow.io._data as data_mod

    for bits in ([24, 16, 40], [12, 10, 3]):
        values = _values(501, bits, seed=9)
        path = write_fcs(tmp_path / "c.fcs", values, datatype="I", bits=bits, byteorder=">")
        whole = _read_quiet(path, dtype=np.float64).channel_values
        monkeypatch.setattr(data_mod, "CHUNK_BYTES", 97)
        np.testing.assert_array_equal(_read_quiet(path, dtype=np.float64).channel_values, whole)
        monkeypatch.undo()


def test_packed_data_warns_and_whole_bytes_do_not(tmp_path):
    packed = write_fcs(tmp_path / "p.fcs", _values(5, [12]), datatype="I", bits=[12])
    with pytest.warns(FCSReadWarning, match="packed integer DATA"):
        read_fcs(packed)
    whole = write_fcs(tmp_path / "w.fcs", _values(5, [24]), datatype="I", bits=[24])
    with warnings.catch_warnings():
        warnings.simplefilter("error", FCSReadWarning)
        read_fcs(whole)


@pytest.mark.parametrize("width", ["0", "65", "-8"])
def test_widths_outside_1_to_64_are_refused(tmp_path, width):
    path = write_fcs(tmp_path / "b.fcs", _values(4, [16]), datatype="I", bits=[16], keywords={"$P1B": width})
    with pytest.raises(FCSReadError, match=r"\$P1B"):
        read_fcs(path)


def test_declared_bits_over_whole_byte_data_is_refused(tmp_path):
    """$PnB = 10 over 16-bit values (Beckman Coulter CXP's habit) is ambiguous: refused, named."""
    path = write_fcs(
        tmp_path / "cxp.fcs", _values(40, [10, 10]), datatype="I", bits=[16, 16],
        keywords={"$P1B": "10", "$P2B": "10"},
    )
    with pytest.raises(FCSReadError, match="whole bytes.*CXP"):
        read_fcs(path)


def test_fcs2_without_tot(tmp_path):
    """$TOT may be missing in FCS 2.0: derivable for whole-byte events, not for packed ones."""
    ok = write_fcs(tmp_path / "a.fcs", _values(9, [24, 8]), version="FCS2.0", datatype="I", bits=[24, 8],
                   keywords={"$TOT": None})
    assert read_fcs(ok).n_events == 9
    packed = write_fcs(tmp_path / "b.fcs", _values(9, [12, 2]), version="FCS2.0", datatype="I", bits=[12, 2],
                       keywords={"$TOT": None})
    with pytest.raises(FCSReadError, match=r"\$TOT is missing"):
        read_fcs(packed)


# --------------------------------------------------------------------------------------------
# Real files: ../shared/fcs/more_instruments (Cytek xP5 writes 24-bit big-endian integers)
# --------------------------------------------------------------------------------------------

SHARED = shared_dir()
needs_shared = pytest.mark.skipif(
    SHARED is None or not (SHARED / "fcs" / "more_instruments").is_dir(),
    reason="../shared/fcs/more_instruments is absent",
)


@needs_shared
def test_more_instruments_match_manifest():
    folder = SHARED / "fcs" / "more_instruments"
    result = subprocess.run(
        [sys.executable, str(SHARED / "tools" / "check_reader.py"), str(folder / "MANIFEST.json"), str(folder),
         "mrdflow.io:read_channel_values"],
        capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr
    n_files = len(list(folder.glob("*.fcs"))) + len(list(folder.glob("*.lmd")))
    assert n_files == 7
    assert result.stdout.strip().splitlines()[-1] == f"{n_files} passed, 0 failed", result.stdout


@needs_shared
def test_cytek_xp5_streams_like_whole_read():
    path = SHARED / "fcs" / "more_instruments" / "Cytek_xP5__Cytek_xP5.fcs"
    whole = read_fcs(path)
    assert whole.header.bits == (24,) * 8 and whole.header.byteorder == ">"
    parts = [c.channel_values for _, c in iter_events(path, chunk_events=5000)]
    np.testing.assert_array_equal(np.vstack(parts), whole.channel_values)
    assert whole.channel_values[:, 1:].max() < 1024  # $PnR = 1024 masks FSC .. FL5 to 10 bits

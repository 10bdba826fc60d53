"""Tests of the FCS reader (mrdflow.io).

Self-contained tests build FCS files byte by byte (tests/fcs_bytes.py); the tests marked with the
``shared`` fixture run the shared scorer and compare with FlowKit on real instrument files, and
skip when ../shared is absent.
"""

from __future__ import annotations

import random
import subprocess
import sys
import time
import tracemalloc
import warnings
from pathlib import Path

import numpy as np
import pytest
from fcs_bytes import FCSSpec, fcs_bytes, write_fcs

from mrdflow.errors import MrdflowError
from mrdflow.io import (
    FCSData,
    FCSHeader,
    FCSReadError,
    FCSReadWarning,
    iter_events,
    read_channel_values,
    read_fcs,
    read_header,
)

RNG = np.random.default_rng(7)


def _ints(n: int, p: int, high: int) -> np.ndarray:
    return RNG.integers(0, high, size=(n, p)).astype(np.float64)


def _raw_file(tmp_path, name: str, text: bytes, data: bytes = b"", version: bytes = b"FCS3.0"):
    """A file with a hand-written TEXT segment at byte 58 and DATA right after it."""
    text_end = 58 + len(text) - 1
    d0 = text_end + 1 if data else 0
    d1 = d0 + len(data) - 1 if data else 0
    header = version + b"    " + b"".join(b"%8d" % v for v in (58, text_end, d0, d1, 0, 0))
    path = tmp_path / name
    path.write_bytes(header + text + data)
    return path


# --------------------------------------------------------------------------------------------
# Round trips
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("byteorder", ["<", ">"])
@pytest.mark.parametrize(
    "datatype, bits, values",
    [
        ("I", [16, 16, 16], _ints(50, 3, 2**16)),
        ("I", [32, 32], _ints(40, 2, 2**31)),
        ("I", [8, 16, 32, 16], _ints(30, 4, 2**8)),  # mixed widths -> record dtype
        ("F", None, RNG.normal(0, 1e4, size=(60, 5)).astype(np.float32)),
        ("D", None, RNG.normal(0, 1e4, size=(20, 3))),
        ("A", [5, 3], _ints(10, 2, 999)),
    ],
    ids=["I16", "I32", "I-mixed", "F", "D", "A"],
)
def test_round_trip(tmp_path, datatype, bits, values, byteorder):
    path = write_fcs(tmp_path / "rt.fcs", values, datatype=datatype, bits=bits, byteorder=byteorder)
    data = read_fcs(path, dtype=np.float64)
    assert data.channel_values.dtype == np.float64
    assert data.channel_values.shape == values.shape
    np.testing.assert_array_equal(data.channel_values, values)
    assert (data.n_events, data.n_parameters) == values.shape
    assert data.pnn == [f"FL{i}" for i in range(1, values.shape[1] + 1)]
    assert read_fcs(path).channel_values.dtype == np.float32


def test_header_fields_and_no_data_needed(tmp_path):
    values = _ints(12, 3, 1000)
    path = write_fcs(
        tmp_path / "h.fcs",
        values,
        datatype="I",
        bits=[16, 16, 32],
        byteorder=">",
        keywords={"$P2S": "CD19", "$cyt": "Aurora"},
    )
    header = read_header(path)
    assert isinstance(header, FCSHeader)
    assert header.version == "FCS3.1"
    assert (header.n_events, header.n_parameters) == (12, 3)
    assert header.pns == ["", "CD19", ""]
    assert header.datatype == "I" and header.byteorder == ">"
    assert header.metadata["$CYT"] == "Aurora"  # keywords are upper-cased
    assert header.data_end - header.data_start + 1 == 12 * 8
    assert header.n_datasets_hint == 1


def test_two_byte_byteorder_and_mask_to_range(tmp_path):
    # 16912 = 0x4210 in a channel with $PnR = 1024: the bits above 1023 are not data.
    values = np.full((4, 2), 16912.0)
    path = write_fcs(
        tmp_path / "mask.lmd",
        values,
        datatype="I",
        bits=[16, 16],
        keywords={"$BYTEORD": "1,2", "$P1R": "1024", "$P2R": "65536"},
    )
    got = read_fcs(path).channel_values
    np.testing.assert_array_equal(got[:, 0], 528)
    np.testing.assert_array_equal(got[:, 1], 16912)


@pytest.mark.parametrize("header_data", ["blank", "zero"])
def test_header_offsets_missing_use_text(tmp_path, header_data):
    values = RNG.normal(size=(25, 4))
    path = write_fcs(tmp_path / "big.fcs", values, header_data=header_data)
    np.testing.assert_allclose(read_fcs(path).channel_values, values, rtol=1e-6)


@pytest.mark.parametrize("end_shift", [+1, -1])
def test_off_by_one_data_end(tmp_path, end_shift):
    values = RNG.normal(size=(30, 3))
    path = write_fcs(tmp_path / "obo.fcs", values, end_shift=end_shift)
    np.testing.assert_allclose(read_fcs(path).channel_values, values, rtol=1e-6)


def test_header_text_end_disagree_uses_consistent_one(tmp_path):
    values = RNG.normal(size=(8, 2))
    path = write_fcs(tmp_path / "stop.fcs", values, header_end_shift=700)  # HEADER end past EOF
    with pytest.warns(FCSReadWarning, match="stop.fcs.*disagree on where DATA ends"):
        data = read_fcs(path)
    np.testing.assert_allclose(data.channel_values, values, rtol=1e-6)


def test_multiple_data_sets_warn_and_read_first(tmp_path):
    values = _ints(9, 2, 1024)
    path = write_fcs(tmp_path / "two.lmd", values, datatype="I", second_dataset=True)
    assert read_header(path).n_datasets_hint == 2
    with pytest.warns(FCSReadWarning, match="two.lmd.*more than one data set"):
        data = read_fcs(path)
    np.testing.assert_array_equal(data.channel_values, values)


def test_supplemental_text_and_escaped_delimiter(tmp_path):
    values = RNG.normal(size=(5, 2))
    path = write_fcs(
        tmp_path / "stext.fcs",
        values,
        names=["CD3/CD4", "Time"],  # contains the "/" delimiter: written doubled
        supplemental={"@INSTRUMENT": "MACSQuant", "$P1S": "ignored: primary TEXT wins"},
        keywords={"$P1S": "T cells"},
    )
    data = read_fcs(path)
    assert data.pnn == ["CD3/CD4", "Time"]
    assert data.metadata["@INSTRUMENT"] == "MACSQuant"
    assert data.pns[0] == "T cells"
    assert data.channel_index("CD3/CD4") == 0
    assert data.channel_index("T cells") == 0
    with pytest.raises(KeyError, match="CD8"):
        data.channel_index("CD8")


def test_latin1_text(tmp_path):
    values = RNG.normal(size=(3, 1))
    path = write_fcs(
        tmp_path / "latin.fcs",
        values,
        names=["Größe"],
        keywords={"$OP": "José"},
        text_encoding="latin-1",
    )
    data = read_fcs(path)
    assert data.pnn == ["Größe"] and data.metadata["$OP"] == "José"


def test_zero_events_gives_empty_matrix(tmp_path):
    path = write_fcs(tmp_path / "empty.fcs", np.zeros((0, 4)))
    data = read_fcs(path)
    assert data.channel_values.shape == (0, 4)
    assert data.scaled().shape == (0, 4)


def test_scaling_matches_flowkit_rules(tmp_path):
    values = np.array([[0, 512, 100, 2000], [256, 1023, 50, 4000]], dtype=float)
    path = write_fcs(
        tmp_path / "scale.fcs",
        values,
        datatype="I",
        bits=[16, 16, 16, 16],
        names=["FL1-H", "FL2-H", "FSC-H", "Time"],
        keywords={
            "$P1E": "4,0",  # 4 decades, f2 = 0 read as 1
            "$P1R": "1024",
            "$P2E": "3,0.5",
            "$P2R": "1024",
            "$P3G": "4",
            "$P4G": "0.01",  # a gain on Time is ignored
            "$TIMESTEP": "0.1",
        },
    )
    data = read_fcs(path, dtype=np.float64)
    np.testing.assert_array_equal(data.channel_values, values)  # stored values untouched
    expected = np.column_stack(
        [
            10 ** (4 * values[:, 0] / 1024),
            10 ** (3 * values[:, 1] / 1024) * 0.5,
            values[:, 2] / 4,
            values[:, 3] * 0.1,
        ]
    )
    np.testing.assert_allclose(data.scaled(), expected, rtol=1e-12)
    np.testing.assert_allclose(data.events, expected, rtol=1e-12)
    assert data.scaled(np.float32).dtype == np.float32


def test_bad_timestep_is_a_read_error_only_when_scaling(tmp_path):
    values = RNG.normal(size=(3, 1))
    path = write_fcs(tmp_path / "ts.fcs", values, names=["Time"], keywords={"$TIMESTEP": "xx"})
    data = read_fcs(path)  # channel values are fine
    with pytest.raises(FCSReadError, match=r"ts\.fcs.*\$TIMESTEP"):
        data.scaled()


def test_spillover(tmp_path):
    spill = "2,FL1,FL2,1,0.1,0.05,1"
    path = write_fcs(tmp_path / "sp.fcs", RNG.normal(size=(3, 2)), keywords={"$SPILLOVER": spill})
    names, matrix = read_fcs(path).spillover()
    assert names == ["FL1", "FL2"]
    np.testing.assert_array_equal(matrix, [[1, 0.1], [0.05, 1]])
    plain = write_fcs(tmp_path / "nosp.fcs", RNG.normal(size=(3, 2)))
    assert read_fcs(plain).spillover() is None
    bad = write_fcs(tmp_path / "badsp.fcs", RNG.normal(size=(3, 2)), keywords={"SPILL": "2,A,B"})
    with pytest.raises(FCSReadError, match=r"badsp\.fcs.*SPILL is malformed"):
        read_fcs(bad).spillover()


def test_to_flowkit(tmp_path):
    values = np.array([[0, 10.0, 5.0], [512, 20.0, 7.0]])
    path = write_fcs(
        tmp_path / "fk.fcs",
        values,
        datatype="I",
        bits=[16, 16, 16],
        names=["FL1-H", "FSC-A", "Time"],
        keywords={"$P1E": "4,1", "$P1R": "1024", "$P1S": "CD34", "$TIMESTEP": "0.5"},
    )
    data = read_fcs(path)
    sample = data.to_flowkit()
    assert sample.id == "fk.fcs"
    assert sample.pnn_labels == ["FL1-H", "FSC-A", "Time"]
    assert sample.pns_labels[0] == "CD34"
    np.testing.assert_allclose(sample.get_events(source="raw"), data.scaled(np.float64), rtol=1e-6)


def test_read_channel_values_adapter(tmp_path):
    values = RNG.normal(size=(4, 2))
    pnn, events = read_channel_values(write_fcs(tmp_path / "a.fcs", values))
    assert pnn == ["FL1", "FL2"]
    np.testing.assert_allclose(events, values, rtol=1e-6)


# --------------------------------------------------------------------------------------------
# Refusals: FCSReadError naming the file and the cause
# --------------------------------------------------------------------------------------------

_SMALL = np.arange(40, dtype=float).reshape(10, 4)

SPEC_ERRORS = [  # (file name, FCSSpec knobs, word the cause must contain)
    ("nopar.fcs", dict(keywords={"$PAR": None}), "$PAR"),
    ("notot.fcs", dict(keywords={"$TOT": None}), "$TOT"),
    ("nodt.fcs", dict(keywords={"$DATATYPE": None}), "$DATATYPE"),
    ("nobo.fcs", dict(keywords={"$BYTEORD": None}), "$BYTEORD"),
    ("nopnb.fcs", dict(keywords={"$P3B": None}), "$P3B"),
    ("badtot.fcs", dict(keywords={"$TOT": "ten"}), "$TOT"),
    ("pdp.fcs", dict(keywords={"$BYTEORD": "3,4,1,2"}), "$BYTEORD"),
    ("b65.fcs", dict(datatype="I", bits=[16] * 4, keywords={"$P1B": "65"}), "65 bits"),  # 1-64 read
    ("hist.fcs", dict(keywords={"$MODE": "U"}), "$MODE"),
    ("long.fcs", dict(end_shift=4000), "beyond end of file"),
    ("cut.fcs", dict(truncate=7), "truncated"),
    ("tot.fcs", dict(keywords={"$TOT": "11"}), "$TOT"),
    ("par.fcs", dict(keywords={"$PAR": "5", "$P5N": "X", "$P5B": "32"}), "$PAR"),
    ("disc.fcs", dict(header_start_shift=-40), "disagree"),
    ("nooff.fcs", dict(header_data="blank", keywords={"$BEGINDATA": None}), "no DATA offsets"),
]

_HEADER_58_900 = b"FCS3.0    " + b"%8d%8d" % (58, 900) + b" " * 32
RAW_ERRORS = [  # (file name, whole file, cause)
    ("short.fcs", b"FCS3.1  ", "too short"),
    ("junk.fcs", b"oi21j08cn\n" * 10, "not an FCS file"),
    ("notext.fcs", b"FCS3.0    " + b" " * 48 + b"/$PAR/1/", "no TEXT segment"),
    ("textcut.fcs", _HEADER_58_900 + b"/A/1/", "beyond end of file"),
]

TEXT_ERRORS = [  # (file name, TEXT segment, cause)
    ("nodelim.fcs", b"|$PAR 1 $TOT 2", "missing delimiter"),
    ("odd.fcs", b"/$PAR/1/$TOT/", "odd number"),
]


def _assert_refused(path, cause: str) -> None:
    with pytest.raises(FCSReadError) as info:
        read_fcs(path)
    err = info.value
    assert isinstance(err, MrdflowError)
    assert path.name in str(err) and err.path == str(path)
    assert cause in err.cause, str(err)


@pytest.mark.parametrize("name, knobs, cause", SPEC_ERRORS, ids=[c[0] for c in SPEC_ERRORS])
def test_refused_bad_keywords_and_offsets(tmp_path, name, knobs, cause):
    _assert_refused(write_fcs(tmp_path / name, _SMALL, **knobs), cause)


@pytest.mark.parametrize("name, blob, cause", RAW_ERRORS, ids=[c[0] for c in RAW_ERRORS])
def test_refused_not_fcs(tmp_path, name, blob, cause):
    path = tmp_path / name
    path.write_bytes(blob)
    _assert_refused(path, cause)


@pytest.mark.parametrize("name, text, cause", TEXT_ERRORS, ids=[c[0] for c in TEXT_ERRORS])
def test_refused_bad_text(tmp_path, name, text, cause):
    _assert_refused(_raw_file(tmp_path, name, text), cause)


def test_missing_file(tmp_path):
    with pytest.raises(FCSReadError, match="nothere.fcs.*cannot open"):
        read_header(tmp_path / "nothere.fcs")


def test_huge_tot_raises_fast_without_allocating(tmp_path):
    path = write_fcs(tmp_path / "huge.fcs", _SMALL, keywords={"$TOT": str(10**12)})
    tracemalloc.start()
    t0 = time.perf_counter()
    try:
        with pytest.raises(FCSReadError, match=r"huge\.fcs.*\$TOT"):
            read_fcs(path)
        elapsed = time.perf_counter() - t0
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert elapsed < 1.0
    assert peak < 5 * 2**20


def test_no_stray_exceptions_on_damaged_files(tmp_path):
    """Every prefix and many random byte edits give data, or FCSReadError; never anything else."""
    spec = FCSSpec(_ints(6, 3, 256), datatype="I", bits=[16, 8, 32], keywords={"$P1E": "4,1"})
    blob = fcs_bytes(spec)
    rand = random.Random(3)
    variants = [blob[:k] for k in range(0, len(blob), 3)]
    for _ in range(300):
        b = bytearray(blob)
        for _ in range(rand.randint(1, 4)):
            b[rand.randrange(len(b))] = rand.choice(b"0123456789/ ,$AIFD\x00\xff")
        variants.append(bytes(b))
    path = tmp_path / "damaged.fcs"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for v in variants:
            path.write_bytes(v)
            try:
                data = read_fcs(path)
                data.scaled()
                data.spillover()
            except FCSReadError as err:
                assert "damaged.fcs" in str(err)


def test_memory_is_one_matrix(tmp_path):
    n, p = 200_000, 12
    for datatype, byteorder in (("F", ">"), ("I", "<")):
        values = _ints(n, p, 1024)
        path = tmp_path / f"mem_{datatype}.fcs"
        write_fcs(path, values, datatype=datatype, byteorder=byteorder)
        del values
        tracemalloc.start()
        try:
            data = read_fcs(path)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        matrix = n * p * 4
        assert data.channel_values.nbytes == matrix
        assert peak < matrix + 20 * 2**20, (datatype, peak / matrix)


# --------------------------------------------------------------------------------------------
# Shared material: the scorer and FlowKit on real instrument files
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("collection", ["instruments", "flowkit"])
def test_shared_scorer(shared, collection):
    folder = shared / "fcs" / collection
    result = subprocess.run(
        [
            sys.executable,
            str(shared / "tools" / "check_reader.py"),
            str(folder / "MANIFEST.json"),
            str(folder),
            "mrdflow.io:read_channel_values",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    last = result.stdout.strip().splitlines()[-1]
    n_files = len(list(folder.glob("*.fcs"))) + len(list(folder.glob("*.lmd")))
    assert last == f"{n_files} passed, 0 failed", result.stdout


FLOWKIT_READABLE = [
    "instruments/FACSCaliburHTS__Sample_Well_A02.fcs",  # I16, 4-decade log channels
    "instruments/FACS_Diva__facs_diva_test.fcs",  # F, Time x $TIMESTEP
    "instruments/MiltenyiBiotec__FCS3.1__EY_2013-07-19_PBS_FCS_3.1_Well_A1.001.fcs",  # STEXT, +1
    "instruments/fake_bitmask_error__fcs1_cleaned.lmd",  # bit mask, gains, log with f2 != 1
    "flowkit/100715.fcs",  # FCS 2.0 big-endian float
    "flowkit/test_comp_example.fcs",  # off-by-one end
    "flowkit/index_sorted_example.fcs",
]


@pytest.mark.parametrize("relpath", FLOWKIT_READABLE)
def test_scaled_equals_flowkit_raw_events(shared, relpath):
    flowkit = pytest.importorskip("flowkit")
    path = shared / "fcs" / relpath
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        reference = flowkit.Sample(str(path), ignore_offset_error=True).get_events(source="raw")
    data = read_fcs(path)
    assert isinstance(data, FCSData)
    np.testing.assert_allclose(data.scaled(), reference, rtol=1e-5)
    np.testing.assert_allclose(read_fcs(path, dtype=np.float64).scaled(), reference, rtol=1e-9)


def test_two_data_set_lmd_matches_flowio_first_set(shared):
    flowio = pytest.importorskip("flowio")
    path = shared / "fcs" / "flowkit" / "coulter.lmd"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        first = flowio.read_multiple_data_sets(str(path), ignore_offset_error=True)[0]
    with pytest.warns(FCSReadWarning, match="coulter.lmd"):
        data = read_fcs(path)
    np.testing.assert_allclose(data.scaled(), first.as_array(preprocess=True), rtol=1e-5)


def test_header_text_start_discrepancy_is_refused(shared):
    path = shared / "fcs" / "flowkit" / "data_start_offset_discrepancy_example.fcs"
    with pytest.raises(FCSReadError, match="HEADER offset 5555, TEXT \\$BEGINDATA 6081"):
        read_header(path)


def test_empty_values_written_as_double_delimiters(tmp_path):
    """CellQuest (FCS 2.0) writes empty values as two adjacent delimiters; read them as empty."""
    from mrdflow.io import read_fcs as _read

    vals = np.arange(12, dtype=np.float32).reshape(4, 3)
    path = write_fcs(tmp_path / "cq.fcs", vals, keywords={"EMPTYKEY": "", "$SRC": "x"})
    raw = path.read_bytes()
    assert b"/EMPTYKEY//" in raw  # the empty value really is two adjacent delimiters
    d = _read(path)
    np.testing.assert_array_equal(d.channel_values, vals)
    assert d.metadata["EMPTYKEY"] == "" and d.metadata["$SRC"] == "x"


def test_gatingml_suite_data_file(shared):
    """data1.fcs of the Gating-ML suite (CellQuest, empty values) equals FlowKit's raw events."""
    import flowkit as fk

    from mrdflow.io import read_fcs as _read

    path = shared / "conformance" / "gatingml2" / "data1.fcs"
    d = _read(path, dtype=np.float64)
    ref = fk.Sample(str(path)).get_events(source="raw")
    np.testing.assert_allclose(d.scaled(), ref, rtol=1e-9)


def test_scale_in_place_equals_scaled(tmp_path):
    """The analysis scales the stored matrix in place (one matrix in memory): same values as scaled()."""
    import numpy as np

    from mrdflow.demo import load_design, simulate_file
    from mrdflow.io import read_fcs

    design = load_design(Path(__file__).resolve().parents[2] / "config" / "test" / "design.yaml")
    row = {"sample_id": "PT01_BM_baseline", "patient_id": "PT01", "specimen": "BM", "visit": "baseline", "day": "-5",
           "infusion": "1", "tube": "ngf1", "panel": "ngf_tube1", "role": "stain", "fmo_marker": "",
           "fcs": "t.fcs", "beads_per_tube": "", "blood_volume_ul": ""}
    simulate_file(row, design, tmp_path)
    ref = read_fcs(tmp_path / "t.fcs").scaled()
    fcs = read_fcs(tmp_path / "t.fcs")
    ev = fcs.scale_in_place()
    assert ev is fcs.channel_values and fcs.events is ev
    assert np.array_equal(ev, ref)
    t = fcs.pnn.index("Time")
    assert float(fcs.metadata["$TIMESTEP"]) != 1.0 and not np.array_equal(
        ev[:, t], read_fcs(tmp_path / "t.fcs").channel_values[:, t]
    )


def test_duplicate_pnn_is_refused(tmp_path):
    """Two parameters with one $PnN make channel lookup ambiguous: refused, naming both."""
    spec = FCSSpec(np.ones((5, 3), np.float32), names=["FSC-A", "PE-A", "PE-A"])
    path = tmp_path / "dup.fcs"
    path.write_bytes(fcs_bytes(spec))
    with pytest.raises(FCSReadError, match=r"dup.fcs.*\$P3N 'PE-A' repeats \$P2N"):
        read_fcs(path)


# --------------------------------------------------------------------------------------------
# Streaming
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("byteorder", ["<", ">"])
@pytest.mark.parametrize(
    "datatype, bits, values",
    [
        ("I", [16, 16, 16], _ints(101, 3, 2**16)),
        ("I", [8, 16, 32, 16], _ints(97, 4, 2**8)),
        ("F", None, RNG.normal(0, 1e4, size=(103, 5)).astype(np.float32)),
        ("D", None, RNG.normal(0, 1e4, size=(64, 3))),
        ("A", [5, 3], _ints(33, 2, 999)),
    ],
    ids=["I16", "I-mixed", "F", "D", "A"],
)
@pytest.mark.parametrize("chunk", [1, 7, 64, 1000])
@pytest.mark.parametrize("reuse", [False, True])
def test_iter_events_chunks_equal_read_fcs(tmp_path, datatype, bits, values, byteorder, chunk, reuse):
    path = write_fcs(tmp_path / "s.fcs", values, datatype=datatype, bits=bits, byteorder=byteorder,
                     keywords={"$P1G": "2.0"})
    whole = read_fcs(path)
    starts, parts, scaled = [], [], []
    buffers = set()
    for start, part in iter_events(path, chunk_events=chunk, reuse=reuse):
        assert part.n_events == part.channel_values.shape[0] <= chunk
        buffers.add(part.channel_values.__array_interface__["data"][0])
        assert part.pnn == whole.pnn
        starts.append(start)
        parts.append(part.channel_values.copy())
        scaled.append(part.scale_in_place().copy())
    assert starts == list(range(0, values.shape[0], chunk))
    if reuse and datatype == "F" and len(starts) > 2:  # read straight into one buffer
        assert len(buffers) == 1
    np.testing.assert_array_equal(np.concatenate(parts), whole.channel_values)
    np.testing.assert_array_equal(np.concatenate(scaled), whole.scaled())


def test_iter_events_range_mask_and_errors(tmp_path):
    values = np.array([[16912, 3], [1023, 2048], [5, 7]], dtype=np.float64)
    path = write_fcs(tmp_path / "m.fcs", values, datatype="I", bits=[16, 16], keywords={"$P1R": "1024", "$P2R": "1024"})
    got = np.concatenate([c.channel_values for _, c in iter_events(path, chunk_events=2)])
    np.testing.assert_array_equal(got, read_fcs(path).channel_values)
    assert got[0, 0] == 16912 & 1023
    with pytest.raises(ValueError):
        next(iter_events(path, chunk_events=0))
    with pytest.raises(FCSReadError, match="nope.fcs"):
        next(iter_events(tmp_path / "nope.fcs"))
    # A file cut inside DATA: the chunks before the cut are never the whole story.
    blob = path.read_bytes()
    (tmp_path / "cut.fcs").write_bytes(blob[:-3])
    with pytest.raises(FCSReadError, match="cut.fcs"):
        list(iter_events(tmp_path / "cut.fcs", chunk_events=1))

"""Property-based fuzzing of the FCS reader (hypothesis).

Real headers and TEXT segments are mutated — bytes overwritten, inserted or deleted in HEADER and
TEXT, keyword values ($TOT, $PAR, $PnB, $BEGINDATA, $DATATYPE, ...) replaced by edge values, files
cut short — and the reader must either return events consistent with its own header (events ×
parameters, readable scaling and spillover) or raise ``FCSReadError`` naming the file; never any
other exception, within a time bound and a memory bound tied to the file's size.

Seeds: small files written here (float and integer data, with $SPILLOVER) and, when ``../shared``
is present, the real instrument files under ``fcs/instruments`` and ``fcs/flowkit`` (whole up to
1 MB; the two larger ones cut there, so they seed truncated files). ``MRDFLOW_FUZZ_EXAMPLES`` sets
the number of examples (default 150, the CI budget).
"""

from __future__ import annotations

import os
import re
import time
import tracemalloc
import warnings

import numpy as np
import pytest

hypothesis = pytest.importorskip("hypothesis")
from conftest import shared_dir  # noqa: E402
from fcs_bytes import FCSSpec, fcs_bytes  # noqa: E402
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from mrdflow.io import FCSReadError, read_fcs  # noqa: E402

EXAMPLES = int(os.environ.get("MRDFLOW_FUZZ_EXAMPLES", "150"))
MAX_SEED_BYTES = 1024 * 1024
SECONDS_PER_INPUT = 2.0


def _seeds() -> list[bytes]:
    rng = np.random.default_rng(5)
    seeds = [
        fcs_bytes(FCSSpec(rng.normal(100, 50, (40, 4)).astype(np.float32), datatype="F",
                          keywords={"$SPILLOVER": "2,FL1,FL2,1,0.1,0.05,1", "$TIMESTEP": "0.01"})),
        fcs_bytes(FCSSpec(rng.integers(0, 1000, (30, 3)), datatype="I", bits=[16, 16, 32], byteorder=">",
                          keywords={"$P1E": "4,1", "$P2G": "2"})),
    ]
    root = shared_dir()
    if root is not None:
        for folder in ("fcs/instruments", "fcs/flowkit"):
            for f in sorted((root / folder).glob("*")):
                if f.suffix.lower() in (".fcs", ".lmd") and f.is_file():
                    with open(f, "rb") as fh:
                        seeds.append(fh.read(MAX_SEED_BYTES))
    return seeds


SEEDS = _seeds()
EDGE_VALUES = [b"0", b"-1", b"1", b"999999999999", b"1000000000000", b"18446744073709551617", b"", b" ", b"abc",
               b"1.5", b"nan", b"/", b"\x00", b"4,3,2,1", b"1,2", b"F", b"D", b"I", b"A", b"X", b"8", b"64",
               b"12345678"]
KEYS = [b"$TOT", b"$PAR", b"$BEGINDATA", b"$ENDDATA", b"$BEGINSTEXT", b"$ENDSTEXT", b"$DATATYPE", b"$BYTEORD",
        b"$MODE", b"$NEXTDATA", b"$P1B", b"$P2B", b"$P1R", b"$P1E", b"$P2E", b"$P1G", b"$TIMESTEP", b"$SPILLOVER",
        b"SPILL", b"$P1N"]


def _text_end(blob: bytes) -> int:
    """TEXT end from the HEADER when it parses, else a bound of the first 4 KB."""
    try:
        return min(len(blob), int(blob[18:26].strip() or b"0") + 1) or min(len(blob), 4096)
    except ValueError:
        return min(len(blob), 4096)


@st.composite
def mutated(draw) -> bytes:
    blob = bytearray(draw(st.sampled_from(SEEDS)))
    end = max(58, _text_end(bytes(blob)))
    # keyword edits are listed three times: a file with one odd value is the commonest real damage,
    # and such files often still read, so both outcomes of the property get exercised
    for _ in range(draw(st.integers(1, 3))):
        kinds = ["byte", "insert", "delete", "keyword", "keyword", "keyword", "header", "truncate"]
        kind = draw(st.sampled_from(kinds))
        if kind == "byte" and blob:
            blob[draw(st.integers(0, min(end, len(blob)) - 1))] = draw(st.integers(0, 255))
        elif kind == "insert":
            pos = draw(st.integers(0, min(end, len(blob))))
            blob[pos:pos] = draw(st.binary(min_size=1, max_size=8))
        elif kind == "delete" and len(blob) > 1:
            pos = draw(st.integers(0, min(end, len(blob)) - 1))
            del blob[pos:pos + draw(st.integers(1, 8))]
        elif kind == "keyword":
            key = draw(st.sampled_from(KEYS))
            value = draw(st.sampled_from(EDGE_VALUES))
            text = bytes(blob[:end])
            m = re.search(re.escape(key) + rb"(.)([^\x00]*?)\1", text, flags=re.IGNORECASE | re.DOTALL)
            if m:
                blob[m.start(2):m.end(2)] = value
        elif kind == "header":
            field = draw(st.sampled_from([(10, 18), (18, 26), (26, 34), (34, 42), (42, 50), (50, 58), (0, 6)]))
            junk = [b"       0", b"99999999", b"        ", b"-1      ", b"FCS9.9", b"    abcd", b"00000058"]
            blob[field[0]:field[1]] = draw(st.sampled_from(junk))[: field[1] - field[0]]
        elif kind == "truncate" and len(blob) > 1:
            del blob[draw(st.integers(0, len(blob) - 1)):]
    return bytes(blob)


@settings(max_examples=EXAMPLES, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.function_scoped_fixture])
@given(blob=mutated())
def test_reader_returns_consistent_events_or_fcs_read_error(tmp_path_factory, blob):
    path = tmp_path_factory.mktemp("fuzz") / "fuzzed.fcs"
    path.write_bytes(blob)
    tracemalloc.start()
    t0 = time.perf_counter()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                data = read_fcs(path)
                assert data.channel_values.shape == (data.n_events, data.n_parameters)
                assert len(data.pnn) == data.n_parameters
                scaled = data.scaled()
                assert scaled.shape == data.channel_values.shape
                data.spillover()
            except FCSReadError as err:
                assert "fuzzed.fcs" in str(err), err
        elapsed = time.perf_counter() - t0
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert elapsed < SECONDS_PER_INPUT, f"{elapsed:.2f} s for one {len(blob)}-byte input"
    # one float32 matrix, its scaled copy and the conversion buffers: bounded by the file's size
    assert peak < 32 * 2**20 + 24 * len(blob), f"peak {peak / 2**20:.1f} MB for a {len(blob)}-byte input"

"""Review batches (config ``review.batches``): which tubes go into which FlowJo workspace
(mrdflow.review.review_batches)."""
from __future__ import annotations

import dataclasses

import pytest

from mrdflow.config import Tube
from mrdflow.review import ReviewBatch, review_batches

PANELS = ("ngf_tube1", "ngf_tube2", "pb_nk", "pb_cart")


def _tube(sample: str, tube: str, panel: str, fcs: str) -> Tube:
    return Tube(sample_id=sample, patient_id=sample[:4], specimen="BM", visit="baseline", day=-5, infusion=1,
                tube=tube, panel=panel, role="stain", fcs=fcs)


# Sheet order is not panel order: the batches keep the sheet's.
SHEET = [
    _tube("PT01_BM", "ngf1", "ngf_tube1", "PT01/PT01_BM_ngf1.fcs"),
    _tube("PT01_PB", "nk", "pb_nk", "PT01/PT01_PB_nk.fcs"),
    _tube("PT01_BM", "ngf2", "ngf_tube2", "PT01/PT01_BM_ngf2.fcs"),
    _tube("PT08_BM", "ngf1", "ngf_tube1", "PT08/PT08_BM_ngf1.fcs"),
    _tube("PT08_BM", "ngf2", "ngf_tube2", "PT08/PT08_BM_ngf2.fcs"),
    _tube("PT08_PB", "nk", "pb_nk", "PT08/PT08_PB_nk.fcs"),
]


def _keys(batch: ReviewBatch) -> list[str]:
    return [t.key for t in batch.tubes]


def test_default_is_one_batch_per_panel_with_tubes():
    batches = review_batches(SHEET, {}, PANELS)
    assert list(batches) == ["ngf_tube1", "ngf_tube2", "pb_nk"]  # pb_cart has no tube: left out
    assert _keys(batches["ngf_tube1"]) == ["PT01_BM.ngf1", "PT08_BM.ngf1"]
    assert _keys(batches["ngf_tube2"]) == ["PT01_BM.ngf2", "PT08_BM.ngf2"]
    assert _keys(batches["pb_nk"]) == ["PT01_PB.nk", "PT08_PB.nk"]
    assert all(b.name == name for name, b in batches.items())
    assert batches["pb_nk"].samples == ("PT01_PB", "PT08_PB")


def test_default_takes_the_panels_of_a_config_mapping():
    panels = {p: {"compensation": "fcs"} for p in ("pb_nk", "ngf_tube1")}  # config ``panels``: its keys
    assert list(review_batches(SHEET, {}, panels)) == ["pb_nk", "ngf_tube1"]
    assert list(review_batches(SHEET, {}, iter(PANELS))) == ["ngf_tube1", "ngf_tube2", "pb_nk"]


def test_configured_batches_hold_the_tubes_of_their_panels_in_sheet_order():
    batches = review_batches(SHEET, {"marrow": {"panels": ["ngf_tube2", "ngf_tube1"]}, "nk": {"panels": ["pb_nk"]}},
                             PANELS)
    assert list(batches) == ["marrow", "nk"]
    assert _keys(batches["marrow"]) == ["PT01_BM.ngf1", "PT01_BM.ngf2", "PT08_BM.ngf1", "PT08_BM.ngf2"]
    assert batches["marrow"].samples == ("PT01_BM", "PT08_BM")  # once each, in sheet order
    assert _keys(batches["nk"]) == ["PT01_PB.nk", "PT08_PB.nk"]


def test_configured_samples_narrow_a_batch():
    batches = review_batches(SHEET, {
        "w4": {"panels": ["ngf_tube1", "ngf_tube2"], "samples": ["PT08_BM"]},
        "both": {"panels": ["ngf_tube1"], "samples": ["PT08_BM", "PT01_BM"]},
        "all_nk": {"panels": ["pb_nk"], "samples": None},
    }, PANELS)
    assert _keys(batches["w4"]) == ["PT08_BM.ngf1", "PT08_BM.ngf2"]
    assert _keys(batches["both"]) == ["PT01_BM.ngf1", "PT08_BM.ngf1"]  # the sheet's order, not the config's
    assert _keys(batches["all_nk"]) == ["PT01_PB.nk", "PT08_PB.nk"]


def test_a_tube_may_be_in_two_batches():
    batches = review_batches(SHEET, {"a": {"panels": ["pb_nk"]}, "b": {"panels": ["pb_nk"], "samples": ["PT08_PB"]}},
                             PANELS)
    assert set(_keys(batches["a"])) & set(_keys(batches["b"])) == {"PT08_PB.nk"}


def test_an_unknown_panel_is_an_error_naming_the_batch():
    with pytest.raises(ValueError, match=r"review\.batches\.marrow\.panels: \['ngf_tube3'\]"):
        review_batches(SHEET, {"nk": {"panels": ["pb_nk"]}, "marrow": {"panels": ["ngf_tube1", "ngf_tube3"]}},
                       PANELS)
    # a panel with tubes in the sheet but not configured is unknown too
    with pytest.raises(ValueError, match=r"review\.batches\.nk\.panels: \['pb_nk'\]"):
        review_batches(SHEET, {"nk": {"panels": ["pb_nk"]}}, ["ngf_tube1"])


def test_an_unknown_sample_is_an_error_naming_the_batch():
    with pytest.raises(ValueError, match=r"review\.batches\.w4\.samples: \['PT02_BM'\] are not in the sample sheet"):
        review_batches(SHEET, {"w4": {"panels": ["ngf_tube1"], "samples": ["PT01_BM", "PT02_BM"]}}, PANELS)


def test_two_tubes_with_one_file_name_in_a_batch_are_an_error():
    sheet = [*SHEET, _tube("PT09_BM", "ngf1", "ngf_tube1", "rerun/PT01_BM_ngf1.fcs")]
    with pytest.raises(ValueError, match=r"review batch 'ngf_tube1'.*'PT01_BM_ngf1\.fcs'") as e:
        review_batches(sheet, {}, PANELS)
    assert "PT01/PT01_BM_ngf1.fcs" in str(e.value) and "rerun/PT01_BM_ngf1.fcs" in str(e.value)
    # a Windows-style folder separator names the same file
    sheet = [*SHEET, _tube("PT09_BM", "ngf1", "ngf_tube1", "rerun\\PT01_BM_ngf1.fcs")]
    with pytest.raises(ValueError, match="same file name"):
        review_batches(sheet, {}, PANELS)
    # in different batches they are fine
    batches = review_batches(sheet, {"a": {"panels": ["ngf_tube1"], "samples": ["PT01_BM"]},
                                     "b": {"panels": ["ngf_tube1"], "samples": ["PT09_BM"]}}, PANELS)
    assert _keys(batches["b"]) == ["PT09_BM.ngf1"]


def test_batches_without_tubes_are_left_out():
    batches = review_batches(SHEET, {
        "cart": {"panels": ["pb_cart"]},  # a configured panel without tubes
        "nk_of_marrow": {"panels": ["pb_nk"], "samples": ["PT01_BM"]},  # the sample has no NK tube
        "none": {"panels": ["ngf_tube1"], "samples": []},
        "kept": {"panels": ["ngf_tube1"], "samples": ["PT01_BM"]},
    }, PANELS)
    assert list(batches) == ["kept"]
    assert review_batches([], {}, PANELS) == {}


def test_a_batch_is_frozen():
    batch = review_batches(SHEET, {}, PANELS)["pb_nk"]
    with pytest.raises(dataclasses.FrozenInstanceError):
        batch.name = "other"  # type: ignore[misc]
    assert isinstance(batch.tubes, tuple)

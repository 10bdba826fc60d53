"""Config and sheet validation: errors name the file, row/key, field and cause."""
import copy
import dataclasses
from pathlib import Path

import pytest
import yaml

from mrdflow.config import load_config, read_samples, read_sheet, schema_defaults, validate_config
from mrdflow.errors import ConfigError
from mrdflow.panels import load_panels

REPO = Path(__file__).resolve().parents[1]
HEADER = ("sample_id\tpatient_id\tspecimen\tvisit\tday\tinfusion\ttube\tpanel\trole\tfcs\tbeads_per_tube"
          "\tblood_volume_ul\n")


def _row(sample="PT01_BM_baseline", tube="ngf1", panel="ngf_tube1", fcs=None, **kw):
    d = dict(patient_id="PT01", specimen="BM", visit="baseline", day="-5", infusion="1", role="stain", beads="", vol="")
    d.update(kw)
    fcs = fcs or f"PT01/{sample}_{tube}.fcs"
    return "\t".join([sample, d["patient_id"], d["specimen"], d["visit"], d["day"], d["infusion"], tube, panel,
                      d["role"], fcs, d["beads"], d["vol"]]) + "\n"


def _sheet(tmp_path, *rows):
    p = tmp_path / "samples.tsv"
    p.write_text(HEADER + "".join(rows))
    return p


def test_default_config_is_valid():
    cfg = load_config(REPO / "config" / "config.yaml")
    assert cfg["simulate"]["enabled"] is True
    assert set(cfg["panels"]) == {"ngf_tube1", "ngf_tube2", "pb_nk", "pb_nk_beads", "pb_cart"}


def test_typo_key_is_named():
    cfg = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    cfg["panels"]["pb_nk"]["compensaton"] = "fcs"
    with pytest.raises(ConfigError) as e:
        validate_config(cfg, source="config.yaml")
    assert "panels.pb_nk" in str(e.value) and "'compensaton'" in str(e.value)
    cfg = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    cfg["sampels"] = "x.tsv"
    with pytest.raises(ConfigError, match="'sampels'"):
        validate_config(cfg)


def test_bad_transform_value_is_named():
    cfg = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    cfg["panels"]["ngf_tube1"]["transform"]["fluorescence"]["type"] = "logicl"
    with pytest.raises(ConfigError, match=r"panels.ngf_tube1.transform.fluorescence.type: 'logicl' is not one of"):
        validate_config(cfg)


def test_good_sheet(tmp_path):
    p = _sheet(tmp_path, _row(), _row(tube="ngf2", panel="ngf_tube2"))
    tubes = read_samples(p, panels={"ngf_tube1", "ngf_tube2"})
    assert [t.key for t in tubes] == ["PT01_BM_baseline.ngf1", "PT01_BM_baseline.ngf2"]
    assert tubes[0].day == -5 and tubes[0].beads_per_tube is None


def test_bad_cell_names_line_sample_and_column(tmp_path):
    p = _sheet(tmp_path, _row(), _row(sample="PT01_BM_w4", day="four", visit="week4"))
    with pytest.raises(ConfigError) as e:
        read_samples(p)
    msg = str(e.value)
    assert "samples.tsv" in msg and "line 3" in msg and "PT01_BM_w4" in msg and "'day'" in msg


def test_unknown_visit(tmp_path):
    p = _sheet(tmp_path, _row(visit="wk4"))
    with pytest.raises(ConfigError, match=r"line 2 .*'visit'.*'wk4' is not one of"):
        read_samples(p)


def test_duplicate_sample_tube(tmp_path):
    p = _sheet(tmp_path, _row(), _row(fcs="PT01/other.fcs"))
    with pytest.raises(ConfigError, match="line 3: duplicate sample_id/tube PT01_BM_baseline/ngf1"):
        read_samples(p)


@pytest.mark.parametrize("bad", ["../secret/x.fcs", "/etc/passwd", "PT01/../../x.fcs"])
def test_path_outside_data_folder(tmp_path, bad):
    p = _sheet(tmp_path, _row(fcs=bad))
    with pytest.raises(ConfigError, match="outside the data folder"):
        read_samples(p)


def test_unknown_panel_and_column(tmp_path):
    p = _sheet(tmp_path, _row(panel="ngf_tube9"))
    with pytest.raises(ConfigError, match="unknown panel 'ngf_tube9'"):
        read_samples(p, panels={"ngf_tube1"})
    q = tmp_path / "s2.tsv"
    q.write_text(HEADER.replace("\n", "\tcomment\n") + _row().replace("\n", "\tx\n"))
    with pytest.raises(ConfigError, match=r"unknown column\(s\) \['comment'\]"):
        read_samples(q)


def test_cart_tube_needs_beads(tmp_path):
    p = _sheet(tmp_path,
               _row(sample="PT01_PB_D7", tube="cart", panel="pb_cart", specimen="PB", visit="serial", day="7"))
    with pytest.raises(ConfigError, match="beads_per_tube"):
        read_samples(p, panels=load_panels(REPO / "resources" / "panels"))  # the panel's readout: cart


def test_clinical_unknown_response(tmp_path):
    p = tmp_path / "clinical.tsv"
    cols = ["patient_id", "age", "sex", "ig_type", "riss", "prior_lines", "lymphodepletion", "cart_dose_cells",
            "infusion1_date", "best_response", "follow_up_months"]
    rows = [cols, ["PT01", "63", "M", "IgG", "II", "4", "full", "3e8", "2025-01-10", "nCR", "7.9"],
            ["PT02", "sixty", "F", "IgA", "III", "3", "full", "3e8", "2025-01-10", "PR", "2.1"]]
    p.write_text("".join("\t".join(r) + "\n" for r in rows))
    with pytest.raises(ConfigError) as e:
        read_sheet(p, "clinical", key="patient_id")
    msg = str(e.value)
    assert "line 2 (patient_id=PT01), column 'best_response': 'nCR' is not one of" in msg
    assert "line 3 (patient_id=PT02), column 'age'" in msg


def test_cart_check_follows_the_panels_readout(tmp_path):
    """The bead check asks the panel's read-out, not its name: a lab's own CAR-T panel needs beads
    too, and a panel that feeds no CAR-T read-out does not."""
    from mrdflow.panels import load_panel

    (tmp_path / "lab_cart.yaml").write_text("name: lab_cart\nreadout: cart\nmarkers:\n  CAR: {aliases: [CAR]}\n")
    (tmp_path / "lab_only.yaml").write_text("name: lab_only\nmarkers:\n  CD3: {aliases: [CD3]}\n")
    panels = {p.name: p for p in (load_panel(tmp_path / "lab_cart.yaml"), load_panel(tmp_path / "lab_only.yaml"))}
    p = _sheet(tmp_path,
               _row(sample="PT01_PB_D7", tube="cart", panel="lab_cart", specimen="PB", visit="serial", day="7"))
    with pytest.raises(ConfigError, match="CAR-T tube needs beads_per_tube"):
        read_samples(p, panels=panels)
    q = _sheet(tmp_path, _row(sample="PT01_PB_D7", tube="t", panel="lab_only", specimen="PB", visit="serial", day="7"))
    assert [t.panel for t in read_samples(q, panels=panels)] == ["lab_only"]


TRANSFORM = {"fluorescence": {"type": "logicle", "t": 262144, "w": 0.5, "m": 4.5, "a": 0.0},
             "scatter": {"type": "linear", "t": 262144}}


def test_validate_config_fills_every_default_from_the_schema():
    minimal = {"samples": "s.tsv", "clinical": "c.tsv", "data_dir": "d",
               "panels": {"ngf_tube1": {"transform": TRANSFORM}}, "qc": {"time_bins": 50}}
    before = copy.deepcopy(minimal)
    cfg = validate_config(minimal)
    assert minimal == before  # the caller's mapping is left alone
    assert cfg["qc"] == {**schema_defaults("qc"), "time_bins": 50}
    for section in ("mrd", "clustering", "sample", "cohort", "inventory"):
        assert cfg[section] == schema_defaults(section)
    assert cfg["panels_dir"] == "resources/panels" and cfg["gating_dir"] == "resources/gating"
    assert cfg["panels"]["ngf_tube1"]["compensation"] == "fcs"
    assert cfg["simulate"] == {"enabled": False, "seed": 596, "events_scale": 1.0, "instrument": None, "biology": None}
    assert cfg["clustering"]["reference"] == "resources/reference/normal_pc.yaml"
    assert cfg["sample"] == {"min_events": 1000, "plots": True, "placement_events": 1_000_000}
    assert {k: v for k, v in cfg["cohort"].items() if k != "associations"} == {
        "cart_lloq_cells_per_ul": 1.0, "auc_window_days": 28, "seed": 596, "n_boot": 5000, "n_perm": 20000,
        "nk_recovery": {"fraction_of_baseline": 0.5, "cells_per_ul": None}}
    assert [(a["x"], a["y"], a["test"]) for a in cfg["cohort"]["associations"]] == [
        ("baseline_nkg2a_pct", "cart_auc_0_28", "spearman"), ("baseline_nkg2a_pct", "cart_cmax", "spearman"),
        ("baseline_nkg2a_pct", "cart_persistence_day", "spearman"), ("baseline_nkg2a_pct", "responder", "mann_whitney"),
        ("w4_mrd_negative", "responder", "fisher"), ("baseline_pc_pct", "responder", "mann_whitney"),
        ("nk_recovery_day", "cart_persistence_day", "spearman"), ("nk_recovery_day", "cart_auc_0_28", "spearman"),
        ("nk_at_cart_peak", "cart_fall_rate_per_day", "spearman")]
    assert cfg["inventory"]["keywords"] == ["$CYT", "$DATE", "$BTIM", "$ETIM", "$TOT", "$PAR"]
    assert validate_config(cfg) == cfg  # the filled config is valid and filling again changes nothing


def test_settings_defaults_are_the_schemas():
    """The settings classes' defaults are the config schema's: one place to change a default."""
    from mrdflow.clustering import ClusteringSettings
    from mrdflow.gating import QCSettings
    from mrdflow.sample import HemodilutionSettings, MRDSettings, SampleSettings

    assert dataclasses.asdict(QCSettings()) == schema_defaults("qc")
    mrd = schema_defaults("mrd")
    hemodilution = mrd.pop("hemodilution")
    assert dataclasses.asdict(HemodilutionSettings()) == hemodilution == schema_defaults("mrd", "hemodilution")
    assert dataclasses.asdict(MRDSettings()) == mrd
    clustering = schema_defaults("clustering")
    clustering.pop("reference")  # a path the rules resolve, not a ClusteringSettings field
    assert dataclasses.asdict(ClusteringSettings()) == clustering
    sample = schema_defaults("sample")
    assert {f.name: f.default for f in dataclasses.fields(SampleSettings) if f.name in sample} == sample
    with pytest.raises(KeyError, match="no section 'qcc'"):
        schema_defaults("qcc")


def test_a_marrow_without_a_day_is_refused_naming_the_row(tmp_path):
    p = _sheet(tmp_path, _row(), _row(sample="PT01_BM_m3", visit="followup", day=""))
    with pytest.raises(ConfigError) as e:
        read_samples(p)
    assert "line 3" in str(e.value) and "PT01_BM_m3" in str(e.value) and "'day'" in str(e.value)


def test_a_time_point_before_infusion_1_must_be_a_baseline_visit(tmp_path):
    p = _sheet(tmp_path, _row(), _row(sample="PT01_BM_w4", visit="week4", day="-3"))
    with pytest.raises(ConfigError, match=r"line 3 \(sample_id=PT01_BM_w4\): day -3 is before infusion 1 but visit "
                                          r"is 'week4'"):
        read_samples(p)
    # before infusion 2 (but after infusion 1) and screening visits are fine
    ok = _sheet(tmp_path, _row(visit="screening", day="-20"), _row(sample="PT01_BM_i2", visit="followup", day="-3",
                                                                    infusion="2"))
    assert len(read_samples(ok)) == 2

"""The cohort stage's files are named once (mrdflow.cohort._outputs), and the code uses exactly the
files a rule names."""
import json
import re
import subprocess
import sys
from dataclasses import fields
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest

import mrdflow.cohort._tables as tables_module
from mrdflow.cohort import (
    COHORT_FIGURES,
    FIGURES,
    CohortTableFiles,
    FigureFiles,
    FigureInputs,
    ReportInputs,
    figure_paths,
    write_cohort,
    write_cohort_figures,
)
from mrdflow.cohort._report_data import TABLES as REPORT_TABLES
from mrdflow.config import read_clinical

REPO = Path(__file__).resolve().parents[2]


def test_snakefile_import_is_light():
    code = ("import sys; from mrdflow.cohort import COHORT_FIGURES, ReportInputs, CohortTableFiles; "
            "print(sorted(m for m in ('pandas', 'numpy', 'matplotlib', 'anndata') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_rule_files_name_no_cohort_file_themselves():
    """cohort.smk and the Snakefile take cohort paths from mrdflow.cohort (the PC model is the
    clustering stage's file)."""
    for path in (REPO / "workflow" / "rules" / "cohort.smk", REPO / "Snakefile"):
        text = path.read_text()
        assert re.findall(r'"(results/cohort/[^"]*)"', text) in ([], ["results/cohort/pc_model.json"]), path
        assert '"results/report.html"' not in text and not re.search(r"COHORT_FIGURES\s*=", text), path
    common = (REPO / "workflow" / "rules" / "common.smk").read_text()
    assert not re.search(r"COHORT_FIGURES\s*=", common)


def test_named_round_trip():
    files = CohortTableFiles()
    named = SimpleNamespace(**files.as_dict())
    assert CohortTableFiles.from_named(named) == files
    plots = FigureFiles()
    d = plots.as_dict()
    assert d["png"] == list(figure_paths("png")) and isinstance(d["png"], list)
    assert FigureFiles.from_named(SimpleNamespace(**d)) == plots
    with pytest.raises(AttributeError):
        CohortTableFiles.from_named(SimpleNamespace(patients="p.tsv"))  # every output by name


def test_under_and_required_fields(tmp_path):
    t = CohortTableFiles.under(tmp_path)
    assert Path(t.response) == tmp_path / "results" / "cohort" / "response_summary.tsv"
    with pytest.raises(TypeError):
        ReportInputs.under(tmp_path)  # inventory, sheets and plot folders have no default
    r = ReportInputs.under(tmp_path, inventory="i.tsv", samples="s.tsv", clinical="c.tsv", plots=[])
    assert [Path(f).stem for f in r.figures] == list(COHORT_FIGURES)


def test_report_reads_its_rule_inputs_by_name():
    names = {f.name for f in fields(ReportInputs)}
    assert set(REPORT_TABLES) <= names
    assert [f[0] for f in FIGURES] == list(COHORT_FIGURES)
    assert {f.name for f in fields(FigureInputs)} <= {f.name for f in fields(CohortTableFiles)}


def _metrics(pid, i):
    return [
        {"sample_id": f"{pid}_BM_baseline", "patient_id": pid, "specimen": "BM", "visit": "baseline", "day": -5,
         "infusion": 1, "status": "ok", "errors": [], "pc": {"pc_pct": 10.0 + i}},
        {"sample_id": f"{pid}_PB_baseline_nk", "patient_id": pid, "specimen": "PB", "visit": "baseline", "day": -5,
         "infusion": 1, "status": "ok", "errors": [], "nk": {"nkg2a_pct": 20.0 + 3 * i}},
        *[{"sample_id": f"{pid}_PB_I1_D{d:03d}", "patient_id": pid, "specimen": "PB", "visit": "serial", "day": d,
           "infusion": 1, "status": "ok", "errors": [], "cart": {"cells_per_ul": c * (i + 1), "car_pct_cd3": 5.0}}
          for d, c in ((0, 0.0), (7, 30.0), (14, 60.0), (28, 8.0))],
    ]


@pytest.fixture
def cohort_tables(tmp_path, monkeypatch):
    """write_cohort on a small cohort (load_metrics reads plain JSON here: the schema is tested elsewhere)."""
    monkeypatch.setattr(tables_module, "load_metrics", lambda files: [json.loads(Path(f).read_text()) for f in files])
    clinical = read_clinical(REPO / "resources" / "demo" / "clinical.tsv")[:4]
    files = []
    for i, c in enumerate(clinical):
        for m in _metrics(c["patient_id"], i):
            f = tmp_path / "samples" / m["sample_id"] / "metrics.json"
            f.parent.mkdir(parents=True)
            f.write_text(json.dumps(m))
            files.append(f)
    settings = {"cart_lloq_cells_per_ul": 1.0, "auc_window_days": 28, "seed": 1, "n_boot": 50, "n_perm": 50,
                "associations": [{"x": "baseline_nkg2a_pct", "y": "cart_auc_0_28", "test": "spearman"}]}
    out = CohortTableFiles(**{name: tmp_path / "elsewhere" / f"{name}.out" for name in CohortTableFiles().as_dict()})
    (tmp_path / "elsewhere").mkdir()
    write_cohort(files, clinical, settings, out)
    return tmp_path, out


def test_write_cohort_writes_exactly_the_named_files(cohort_tables):
    root, out = cohort_tables
    assert sorted(p.name for p in (root / "elsewhere").iterdir()) == sorted(f"{n}.out" for n in out.as_dict())
    assert list(pd.read_csv(out.patients, sep="\t")["dose_level"]) == ["3.0×10^8", "1.5×10^8", "3.0×10^8", "3.0×10^8"]


def test_write_cohort_figures_uses_the_named_files(cohort_tables, tmp_path):
    _, t = cohort_tables
    inputs = FigureInputs(patients=t.patients, kinetics=t.kinetics, mrd=t.mrd, nk=t.nk, associations=t.associations)
    plots = tmp_path / "figs"
    out = FigureFiles(png=[plots / f"{s}.png" for s in COHORT_FIGURES],
                      svg=[plots / f"{s}.svg" for s in COHORT_FIGURES])
    written = write_cohort_figures(inputs, out, lloq=1.0)
    assert sorted(written) == sorted([*out.png, *out.svg]) and all(p.stat().st_size for p in written)
    with pytest.raises(ValueError, match="side by side"):
        write_cohort_figures(inputs, FigureFiles(png=out.png, svg=[tmp_path / f"{s}.svg" for s in COHORT_FIGURES]))

"""The whole DAG on the tiny test cohort (config/test), run through Snakemake in a temp folder."""
import csv
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.workflow


def _snakemake(workdir: Path, *args: str) -> subprocess.CompletedProcess:
    exe = Path(sys.executable).with_name("snakemake")
    cmd = [str(exe) if exe.exists() else "snakemake", "--snakefile", str(REPO / "Snakefile"),
           "--directory", str(workdir), "--configfile", str(REPO / "config" / "test" / "config.yaml"), *args]
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    work = tmp_path_factory.mktemp("tiny")
    r = _snakemake(work, "--cores", "2")
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-5000:]
    return work


def test_dry_run_lists_rules(tmp_path):
    r = _snakemake(tmp_path, "-n", "--cores", "1")
    assert r.returncode == 0, r.stderr[-3000:]
    assert "simulate_cohort" in r.stdout and "inventory" in r.stdout


def test_typo_in_config_fails_with_key_name(tmp_path):
    bad = tmp_path / "bad.yaml"
    text = (REPO / "config" / "test" / "config.yaml").read_text().replace("data_dir:", "data_dri:")
    bad.write_text(text)
    r = _snakemake(tmp_path, "-n", "--configfile", str(bad))
    assert r.returncode != 0
    assert "data_dri" in (r.stdout + r.stderr)


def test_inventory_of_tiny_cohort(tiny_run):
    inv = list(csv.DictReader((tiny_run / "results" / "inventory.tsv").open(), delimiter="\t"))
    sheet = list(csv.DictReader((REPO / "config" / "test" / "samples.tsv").open(), delimiter="\t"))
    assert len(inv) == len(sheet)
    assert all(r["status"] == "ok" for r in inv), [r for r in inv if r["status"] != "ok"]
    assert all(r["fcs_version"] == "FCS3.1" and int(r["events"]) > 0 for r in inv)


def test_rerun_is_a_no_op(tiny_run):
    r = _snakemake(tiny_run, "-n", "--cores", "1")
    assert r.returncode == 0
    assert "Nothing to be done" in (r.stdout + r.stderr)

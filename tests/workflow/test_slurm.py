"""The tiny test cohort (config/test) through a real SLURM with snakemake-executor-plugin-slurm and
the repository's SLURM profile, and locally with --cores 2, each in its own temp folder: both runs
succeed, SLURM's accounting (sacct) lists every job Snakemake submitted, and the per-sample and
cohort outputs are byte-identical between the two runs.

Needs a SLURM controller that answers `scontrol ping` (scripts/slurm_single_node.sh start sets
up a single-node one with accounting) and reads the partition and account from
$MRDFLOW_SLURM_PARTITION / $MRDFLOW_SLURM_ACCOUNT (defaults: the cluster's default partition, and
the plugin's guess of the account). Without a controller it skips, unless MRDFLOW_SLURM_TEST=1
(CI), where a missing SLURM is a failure.
"""
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slurm

REQUIRED = os.environ.get("MRDFLOW_SLURM_TEST", "") == "1"
RUN_TIMEOUT_S = int(os.environ.get("MRDFLOW_SLURM_TEST_TIMEOUT", "900"))  # per snakemake run
COHORT_FILES = ("patients.tsv", "table1.tsv", "response_summary.tsv", "associations.tsv")
SAMPLE_FILES = ("metrics.json", "gating.tsv")


def _cmd(*args: str, timeout: float = 30) -> subprocess.CompletedProcess:
    return subprocess.run(list(args), capture_output=True, text=True, timeout=timeout)


def _slurm_problem() -> str | None:
    """Why this machine cannot submit to SLURM, or None when a controller answers."""
    for tool in ("scontrol", "sinfo", "sbatch", "sacct", "scancel"):
        if shutil.which(tool) is None:
            return f"the SLURM client `{tool}` is not on PATH"
    try:
        r = _cmd("scontrol", "ping", timeout=30)
    except subprocess.TimeoutExpired:
        return "`scontrol ping` did not answer in 30 s"
    if r.returncode != 0 or "is UP" not in r.stdout:
        said = ((r.stdout + r.stderr).strip().splitlines() or ["no output"])[0][:200]
        return f"no SLURM controller answers `scontrol ping` ({said})"
    return None


def _default_partition() -> str:
    r = _cmd("sinfo", "-h", "-o", "%P")
    names = r.stdout.split()
    for n in names:
        if n.endswith("*"):
            return n[:-1]
    assert names, f"sinfo lists no partition: {r.stderr}"
    return names[0]


@pytest.fixture(scope="module")
def slurm():
    problem = _slurm_problem()
    if problem:
        hint = "start one with scripts/slurm_single_node.sh start"
        if REQUIRED:
            pytest.fail(f"MRDFLOW_SLURM_TEST=1 but {problem}; {hint}", pytrace=False)
        pytest.skip(f"{problem}; {hint} (MRDFLOW_SLURM_TEST=1 turns this skip into a failure)")
    partition = os.environ.get("MRDFLOW_SLURM_PARTITION") or _default_partition()
    account = os.environ.get("MRDFLOW_SLURM_ACCOUNT") or ""
    r = _cmd("sinfo", "-h", "-p", partition, "-o", "%c")
    cpus = [int(c) for c in re.findall(r"\d+", r.stdout)]
    assert r.returncode == 0 and cpus, f"partition {partition!r}: {r.stdout}{r.stderr}"
    return {"partition": partition, "account": account, "cpus": max(cpus)}


def _snakemake(workdir: Path, log: Path, args: list[str], env_extra: dict[str, str]) -> tuple[int, str, float]:
    """Run snakemake on the tiny cohort in workdir (output to log); (exit code, output, seconds).
    Past RUN_TIMEOUT_S it is interrupted (Snakemake then cancels its SLURM jobs) and killed."""
    exe = Path(sys.executable).with_name("snakemake")
    cmd = [str(exe) if exe.exists() else "snakemake", "--snakefile", str(REPO / "Snakefile"),
           "--directory", str(workdir), "--configfile", str(REPO / "config" / "test" / "config.yaml"),
           "--workflow-profile", "none", *args]
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
               **env_extra)
    env.pop("SNAKEMAKE_PROFILE", None)
    t0 = time.monotonic()
    with log.open("w") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=workdir,
                                start_new_session=True)
        try:
            rc = proc.wait(timeout=RUN_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGINT)
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
            rc = -1
    text = log.read_text(errors="replace")
    if rc == -1:
        text += f"\n[test_slurm] snakemake ran past {RUN_TIMEOUT_S} s and was interrupted\n"
    return rc, text, time.monotonic() - t0


def _run_id(text: str) -> str | None:
    m = re.search(r"SLURM run ID: (\S+)", text)
    return m.group(1) if m else None


def _slurm_log_tails(workdir: Path, n: int = 3) -> str:
    logs = sorted((workdir / ".snakemake" / "slurm_logs").rglob("*.log"), key=lambda p: p.stat().st_mtime)
    return "".join(f"\n==== {p} ====\n{p.read_text(errors='replace')[-2000:]}" for p in logs[-n:])


@pytest.fixture(scope="module")
def runs(slurm, tmp_path_factory):
    """The tiny cohort through SLURM (with the repository's SLURM profile), then locally."""
    slurm_dir = tmp_path_factory.mktemp("on_slurm")
    local_dir = tmp_path_factory.mktemp("local")
    env = {"MRDFLOW_SLURM_PARTITION": slurm["partition"], "MRDFLOW_SLURM_ACCOUNT": slurm["account"]}
    slurm_args = [
        "--profile", str(REPO / "workflow" / "profiles" / "slurm"),
        "--jobs", "4",
        "--slurm-init-seconds-before-status-checks", "1",
        # simulate_cohort asks for 8 threads: no more than a node has, and no more than the
        # local run's --cores 2 gives each rule (the same threads on both sides)
        "--max-threads", str(min(slurm["cpus"], 2)),
        "--latency-wait", "5",
        "--retries", "0",  # a failing job fails the test rather than hiding behind a retry
    ]
    rc, text, secs = _snakemake(slurm_dir, slurm_dir.parent / "on_slurm.log", slurm_args, env)
    run_id = _run_id(text)
    if run_id:  # nothing of this run may be left in the queue, whatever happened
        _cmd("scancel", "--name", run_id)
    assert rc == 0, f"snakemake on SLURM failed (exit {rc}):\n{text[-6000:]}{_slurm_log_tails(slurm_dir)}"
    assert run_id, f"no 'SLURM run ID' in the output: was the slurm executor used?\n{text[-3000:]}"
    rc_l, text_l, secs_l = _snakemake(local_dir, local_dir.parent / "local.log", ["--cores", "2"], {})
    assert rc_l == 0, f"local snakemake failed (exit {rc_l}):\n{text_l[-6000:]}"
    print(f"\n[test_slurm] SLURM run {secs:.0f} s, local run {secs_l:.0f} s")
    return {"slurm_dir": slurm_dir, "local_dir": local_dir, "slurm_log": text, "run_id": run_id, **slurm}


def _job_counts(text: str) -> dict[str, int]:
    """Snakemake's 'Job stats' table (rule -> number of jobs), from the start of a run."""
    block = text.split("Job stats:", 1)[1].split("total", 1)[0]
    return {m.group(1): int(m.group(2)) for m in re.finditer(r"^(\w+)\s+(\d+)\s*$", block, re.M)}


def test_sacct_lists_every_submitted_job(runs):
    text = runs["slurm_log"]
    submitted = {m.group(2): int(m.group(1))
                 for m in re.finditer(r"Job (\d+) has been submitted with SLURM jobid (\d+)", text)}
    counts = _job_counts(text)
    # every job but the local target rule `all` went through sbatch
    expected = sum(n for rule, n in counts.items() if rule != "all")
    assert expected > 20 and len(submitted) == expected, (counts, sorted(submitted))
    fields = "JobID,JobName,State,ExitCode,Account,Partition"
    rows: dict[str, list[str]] = {}
    deadline = time.monotonic() + 60  # slurmctld hands job records to slurmdbd asynchronously
    while True:
        r = _cmd("sacct", "-X", "-n", "-P", "-j", ",".join(submitted), f"--format={fields}")
        assert r.returncode == 0, f"sacct failed (is slurmdbd running?): {r.stderr}"
        rows = {line.split("|")[0]: line.split("|") for line in r.stdout.splitlines() if line.strip()}
        done = all(rows.get(j, [None] * 3)[2] == "COMPLETED" for j in submitted)
        if (set(rows) >= set(submitted) and done) or time.monotonic() > deadline:
            break
        time.sleep(2)
    missing = sorted(set(submitted) - set(rows), key=int)
    assert not missing, f"sacct does not list SLURM jobs {missing} that snakemake submitted:\n{r.stdout}"
    for jobid, (_, name, state, exit_code, account, partition) in ((j, rows[j]) for j in submitted):
        assert name == runs["run_id"], (jobid, name)
        assert state == "COMPLETED" and exit_code == "0:0", (jobid, state, exit_code)
        assert partition == runs["partition"], (jobid, partition)
        if runs["account"]:
            assert account == runs["account"], (jobid, account)
    # and the run's job name finds exactly these jobs
    r = _cmd("sacct", "-X", "-n", "-P", "-S", "now-1days", "--name", runs["run_id"], "--format=JobID")
    assert set(r.stdout.split()) == set(submitted), r.stdout


def _compared_files(a: Path, b: Path) -> list[str]:
    """The per-sample metrics.json and gating.tsv of every sample in the sheet and the cohort
    tables (required), plus every other .tsv/.json either run wrote under results/."""
    sheet = (REPO / "config" / "test" / "samples.tsv").read_text().splitlines()[1:]
    samples = sorted({line.split("\t")[0] for line in sheet if line.strip()})
    required = [f"samples/{s}/{f}" for s in samples for f in SAMPLE_FILES] + [f"cohort/{f}" for f in COHORT_FILES]
    tabular = {str(p.relative_to(root)) for root in (a, b) for ext in ("*.tsv", "*.json") for p in root.rglob(ext)}
    return required + sorted(tabular - set(required))


def test_slurm_and_local_outputs_are_byte_identical(runs):
    a, b = runs["slurm_dir"] / "results", runs["local_dir"] / "results"
    names = _compared_files(a, b)
    assert len(names) > 30
    missing = [n for n in names if not (a / n).is_file() or not (b / n).is_file()]
    assert not missing, missing
    differ = [n for n in names if (a / n).read_bytes() != (b / n).read_bytes()]
    detail = ""
    for n in differ[:3]:
        la, lb = (a / n).read_text(errors="replace").splitlines(), (b / n).read_text(errors="replace").splitlines()
        first = next((i for i, (x, y) in enumerate(zip(la, lb)) if x != y), min(len(la), len(lb)))
        detail += f"\n{n} line {first + 1}:\n  slurm: {la[first:first + 1]}\n  local: {lb[first:first + 1]}"
    assert not differ, f"{len(differ)} of {len(names)} files differ between SLURM and local runs:{detail}"
    # the metrics really are there (not two identical empty files)
    m = json.loads((a / "samples" / "PT08_BM_week4" / "metrics.json").read_text())
    assert m["mrd"]["mrd_status"] == "positive"

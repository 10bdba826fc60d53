"""The per-sample stage's files, named once.

The rule file (``workflow/rules/sample.smk``), the rules that read a sample's files
(``clustering.smk``, ``cohort.smk``), the Snakefile's rule ``all`` and the code that writes them
(:func:`mrdflow.sample.analyse_sample`, :func:`mrdflow.sample.finish_sample`) take the names from
here. Light on purpose (strings only): the Snakefile imports it while it is parsed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, fields

__all__ = ["SAMPLE_DIR", "REVIEWED_DIR", "SampleFiles", "SAMPLE_FILES", "sample_file", "reviewed_file",
           "plot_file_name"]

#: A sample's folder, relative to the workflow's working directory (``{sample}``: its sample_id).
SAMPLE_DIR = "results/samples/{sample}"
#: Inside a sample's folder: its stage-1 files remade with a reviewer's gates (rule review_sample,
#: :mod:`mrdflow.review`), the same names as the data-driven ones beside them.
REVIEWED_DIR = "reviewed"


@dataclass(frozen=True)
class SampleFiles:
    """A sample's files, each under the name the rules give it, as paths inside the sample's folder.

    gating: every gate's counts (TSV). gates: the first stained tube's gates as Gating-ML 2.0 (the
    other tubes' are ``gates_<tube>.xml`` beside it). stage1: what ``sample_metrics`` needs from the
    gating (JSON). pc_events / nk_events: the PC and NK events (npz). plots: the gating plots'
    folder. metrics: the sample's read-outs (JSON, ``workflow/schemas/metrics.schema.yaml``).
    """

    gating: str = "gating.tsv"
    gates: str = "gates.xml"
    stage1: str = "stage1.json"
    pc_events: str = "pc_events.npz"
    nk_events: str = "nk_events.npz"
    plots: str = "plots"
    metrics: str = "metrics.json"

    def names(self) -> tuple[str, ...]:
        """The files' names (the rules' input/output names), in declaration order."""
        return tuple(f.name for f in fields(self))


SAMPLE_FILES = SampleFiles()


def sample_file(name: str, sample: str = "{sample}") -> str:
    """Path of one of a sample's files by its name in :class:`SampleFiles` (``"metrics"`` →
    ``results/samples/{sample}/metrics.json``); ``sample`` fills the folder, or stays a wildcard."""
    return f"{SAMPLE_DIR.format(sample=sample)}/{getattr(SAMPLE_FILES, name)}"


def reviewed_file(name: str, sample: str = "{sample}") -> str:
    """Path of one of a sample's stage-1 files remade with reviewed gates
    (``results/samples/{sample}/reviewed/<file>``)."""
    return f"{SAMPLE_DIR.format(sample=sample)}/{REVIEWED_DIR}/{getattr(SAMPLE_FILES, name)}"


def plot_file_name(index: int, gate_id: str, n_steps: int = 0) -> str:
    """``<NN>_<gate_id>.png`` for the step at 1-based ``index`` (NN zero-padded to 2 digits, more
    when there are 100+ steps); characters unsafe in file names become ``_``."""
    width = max(2, len(str(n_steps)))
    safe = re.sub(r"[^A-Za-z0-9._+-]", "_", gate_id)
    return f"{index:0{width}d}_{safe}.png"

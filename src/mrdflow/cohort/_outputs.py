"""The cohort stage's files, named once.

The rule file (``workflow/rules/cohort.smk``), the Snakefile's rule ``all``, the table and figure
writers and the report all take names and paths from here. Each dataclass below is one rule's named
inputs or outputs: a field's name is the rule's input/output name, its default that file's path,
relative to the workflow's working directory. The rule builds its section from :meth:`as_dict`
(``**CohortTableFiles().as_dict()``); its script turns the rule's named files back into the
dataclass with :meth:`from_named` (``CohortTableFiles.from_named(snakemake.output)``), so the code
reads and writes exactly the files the rule names.

Light on purpose (dataclasses and strings; no pandas, no matplotlib): the Snakefile imports it while
it is parsed.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import MISSING, dataclass, fields
from os import PathLike
from pathlib import Path
from typing import Any, Self

__all__ = ["RESULTS_DIR", "COHORT_DIR", "PLOTS_DIR", "REPORT_HTML", "COHORT_FIGURES", "figure_paths",
           "SampleMetricsTable", "CohortTableFiles", "AnnDataFiles", "FigureInputs", "FigureFiles", "ReportInputs"]

RESULTS_DIR = "results"
COHORT_DIR = f"{RESULTS_DIR}/cohort"
PLOTS_DIR = f"{COHORT_DIR}/plots"
#: The self-contained cohort report (rule ``report``).
REPORT_HTML = f"{RESULTS_DIR}/report.html"

#: Cohort figure stems, in the report's order; each is drawn as ``<PLOTS_DIR>/<stem>.png`` and ``.svg``.
COHORT_FIGURES = ("swimmer", "kinetics", "over_time", "nkg2a_auc", "mrd")

_Path = str | PathLike


def figure_paths(fmt: str) -> tuple[str, ...]:
    """The cohort figures' files of one format ('png' or 'svg'), in :data:`COHORT_FIGURES` order."""
    return tuple(f"{PLOTS_DIR}/{stem}.{fmt}" for stem in COHORT_FIGURES)


def _as_paths(v: Any) -> str | tuple[str, ...]:
    """One path as a string; a list of them (a Snakemake named list) as a tuple of strings."""
    if isinstance(v, (str, PathLike)):
        return str(v)
    return tuple(str(x) for x in v)


class _Files:
    """A rule's named files, as a frozen dataclass (the subclasses below)."""

    @classmethod
    def from_named(cls, named: Any) -> Self:
        """From an object that carries the files as attributes by name (a rule script's
        ``snakemake.input`` or ``snakemake.output``); a list of files becomes a tuple of paths."""
        return cls(**{f.name: _as_paths(getattr(named, f.name)) for f in fields(cls)})

    @classmethod
    def under(cls, root: _Path, **given: Any) -> Self:
        """The default paths placed under ``root`` instead of the working directory (tests, tools);
        ``given`` sets fields as they are (those without a default must be given)."""
        out = dict(given)
        for f in fields(cls):
            if f.name not in out and f.default is not MISSING:
                d = f.default
                out[f.name] = str(Path(root, d)) if isinstance(d, str) else tuple(str(Path(root, x)) for x in d)
        return cls(**out)

    def as_dict(self) -> dict[str, str | list[str]]:
        """The files by name, for a rule's ``input:`` or ``output:`` section (``**files.as_dict()``)."""
        out: dict[str, str | list[str]] = {}
        for f in fields(self):
            v = getattr(self, f.name)
            out[f.name] = str(v) if isinstance(v, (str, PathLike)) else [str(x) for x in v]
        return out


@dataclass(frozen=True)
class SampleMetricsTable(_Files):
    """Output of rule ``sample_metrics_table``: one flat row per sample's ``metrics.json``."""

    sample_metrics: _Path = f"{COHORT_DIR}/sample_metrics.tsv"


@dataclass(frozen=True)
class CohortTableFiles(_Files):
    """Outputs of rule ``cohort_tables`` (:func:`mrdflow.cohort.write_cohort`)."""

    patients: _Path = f"{COHORT_DIR}/patients.tsv"
    patients_parquet: _Path = f"{COHORT_DIR}/patients.parquet"
    kinetics: _Path = f"{COHORT_DIR}/kinetics.tsv"
    mrd: _Path = f"{COHORT_DIR}/mrd_timeline.tsv"
    nk: _Path = f"{COHORT_DIR}/nk_timeline.tsv"
    table1: _Path = f"{COHORT_DIR}/table1.tsv"
    table1_html: _Path = f"{COHORT_DIR}/table1.html"
    response: _Path = f"{COHORT_DIR}/response_summary.tsv"
    associations: _Path = f"{COHORT_DIR}/associations.tsv"
    samples_parquet: _Path = f"{COHORT_DIR}/sample_metrics.parquet"


@dataclass(frozen=True)
class AnnDataFiles(_Files):
    """Outputs of rule ``cohort_anndata`` (:func:`mrdflow.cohort.write_anndata`)."""

    pc: _Path = f"{COHORT_DIR}/pc_events.h5ad"
    nk: _Path = f"{COHORT_DIR}/nk_events.h5ad"


_TABLES = CohortTableFiles()


@dataclass(frozen=True)
class FigureInputs(_Files):
    """Inputs of rule ``cohort_plots`` (:func:`mrdflow.cohort.write_cohort_figures`)."""

    patients: _Path = _TABLES.patients
    kinetics: _Path = _TABLES.kinetics
    mrd: _Path = _TABLES.mrd
    nk: _Path = _TABLES.nk
    associations: _Path = _TABLES.associations


@dataclass(frozen=True)
class FigureFiles(_Files):
    """Outputs of rule ``cohort_plots``: each figure of :data:`COHORT_FIGURES` as PNG and SVG, in that
    order (a figure's two files share their folder and stem)."""

    png: Iterable[_Path] = figure_paths("png")
    svg: Iterable[_Path] = figure_paths("svg")


@dataclass(frozen=True, kw_only=True)
class ReportInputs(_Files):
    """Inputs of rule ``report`` (:func:`mrdflow.cohort.build_report`). ``plots``: the samples' gating-plot
    folders (``results/samples/<sample>/plots``); ``samples``/``clinical``: the sample and clinical sheets."""

    patients: _Path = _TABLES.patients
    table1: _Path = _TABLES.table1
    response: _Path = _TABLES.response
    associations: _Path = _TABLES.associations
    mrd: _Path = _TABLES.mrd
    nk: _Path = _TABLES.nk
    kinetics: _Path = _TABLES.kinetics
    sample_metrics: _Path = SampleMetricsTable().sample_metrics
    figures: Iterable[_Path] = figure_paths("png")
    inventory: _Path
    samples: _Path
    clinical: _Path
    plots: Iterable[_Path]
    review_changes: _Path = "results/review/changes.tsv"  # mrdflow.review.CHANGES_TSV (review's own layer)
    review_problems: _Path = "results/review/problems.tsv"  # mrdflow.review.PROBLEMS_TSV

"""What the cohort report reads (:mod:`mrdflow.cohort._report`): the files its rule names
(:class:`mrdflow.cohort.ReportInputs`), each table read once."""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd

from mrdflow.cohort._outputs import ReportInputs
from mrdflow.cohort._report_html import _file_label
from mrdflow.cohort._tables import read_tsv

#: The report's input tables, by their input name (the inventory is the io stage's).
TABLES = ("patients", "table1", "response", "associations", "mrd", "nk", "kinetics", "sample_metrics", "inventory",
          "review_changes", "review_problems")


class ReportData:
    """The report's input tables (None where a file is missing), read once; ``missing`` lists the
    labels of the files not found. A file's label is its path relative to the report's folder
    (``cohort/patients.tsv``), or its name when it lies elsewhere."""

    def __init__(self, inputs: ReportInputs, out_dir: Path):
        self.inputs = inputs
        self.out_dir = Path(out_dir)
        self.missing: list[str] = []
        self.tables: dict[str, pd.DataFrame | None] = {name: self._read(name) for name in TABLES}

    def path(self, name: str) -> Path:
        """The input file of that name."""
        return Path(getattr(self.inputs, name))

    def label(self, name: str) -> str:
        """How the report names the input file ``name``."""
        return self.label_path(self.path(name))

    def label_path(self, path: str | os.PathLike) -> str:
        """How the report names a file: relative to the report's folder, else by its name (never an
        absolute path)."""
        try:
            rel = os.path.relpath(os.path.abspath(path), os.path.abspath(self.out_dir))
        except ValueError:  # another drive
            rel = os.path.abspath(path)
        if rel == ".." or rel.startswith(".." + os.sep) or os.path.isabs(rel):
            return _file_label(os.path.abspath(path))
        return rel.replace(os.sep, "/")

    def _read(self, name: str) -> pd.DataFrame | None:
        path = self.path(name)
        if not path.is_file():
            self.missing.append(self.label_path(path))
            return None
        return read_tsv(path)

    def __getitem__(self, name: str) -> pd.DataFrame | None:
        return self.tables[name]

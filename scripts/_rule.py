"""Shared set-up for the rule scripts: logging to the rule's log and the per-sample settings."""

import logging
from pathlib import Path

from mrdflow.config import resolve_path
from mrdflow.panels import load_panels
from mrdflow.sample import settings_from_config


def setup_logging(log_file: str | None) -> None:
    kw = {"filename": log_file} if log_file else {}
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", force=True, **kw)
    logging.captureWarnings(True)


def sample_settings(config: dict):
    panels = load_panels(resolve_path(config["panels_dir"]))
    return settings_from_config(
        config, panels, resolve_path(config["gating_dir"]), workdir=Path("."),
        reference=resolve_path(config["clustering"]["reference"]),
    )

"""Set-up shared by the rule scripts in ``workflow/scripts/`` (one script a rule, named after it).

Every rule script has the same shape: ``config = setup(snakemake)``, then one call into the stage's
package with the rule's inputs, outputs and params by name.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

__all__ = ["setup", "sample_settings"]


def setup(smk: Any) -> dict:
    """Log to the rule's log file (if it has one) and return the validated config (defaults filled)."""
    from mrdflow.config import validate_config

    log_files = list(smk.log)
    kw = {"filename": log_files[0]} if log_files else {}
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", force=True, **kw)
    logging.captureWarnings(True)
    return validate_config(smk.config)


def sample_settings(config: dict, *, panels_dir: str | Path | None = None, gating_dir: str | Path | None = None,
                    reference: str | Path | None = None, compiled_dir: str | Path | None = None):
    """:class:`mrdflow.sample.SampleSettings` of a validated config. The folders of the panels and
    gating templates and the normal-PC reference are the rule's (its params, by name) when given,
    else the config's, resolved from the working directory. ``compiled_dir``: the run's compiled
    templates (rule ``compile_template``), read without FlowKit."""
    from mrdflow.config import resolve_path
    from mrdflow.panels import load_panels
    from mrdflow.sample import settings_from_config

    panels = load_panels(panels_dir if panels_dir is not None else resolve_path(config["panels_dir"]))
    return settings_from_config(
        config, panels, gating_dir if gating_dir is not None else resolve_path(config["gating_dir"]), workdir=Path("."),
        reference=reference if reference is not None else resolve_path(config["clustering"]["reference"]),
        compiled_dir=compiled_dir,
    )

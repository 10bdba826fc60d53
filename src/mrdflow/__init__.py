"""mrdflow: flow-cytometry read-outs (PC burden, MRD, NKG2A%, CAR-T kinetics) for an allogeneic CAR-T trial."""

__version__ = "0.1.0"

from mrdflow.errors import ConfigError, MrdflowError, PanelError  # noqa: E402

__all__ = ["__version__", "MrdflowError", "ConfigError", "PanelError"]

"""Input: reading FCS files (see :mod:`mrdflow.io.reader`)."""

from mrdflow.io.reader import (
    FCSData,
    FCSHeader,
    FCSReadError,
    FCSReadWarning,
    iter_events,
    read_channel_values,
    read_fcs,
    read_header,
)

__all__ = [
    "FCSData",
    "FCSHeader",
    "FCSReadError",
    "FCSReadWarning",
    "iter_events",
    "read_channel_values",
    "read_fcs",
    "read_header",
]

"""FCS in and out: the reader (any cytometer, FCS 2.0-3.1), the writer, and the per-file inventory.

Stage ``io`` (rule file ``workflow/rules/io.smk``). Everything downstream reads events through
:func:`read_fcs` / :func:`iter_events`; nothing here knows about panels' biology.
"""

import lazy_loader as _lazy

__getattr__, __dir__, __all__ = _lazy.attach(
    __name__,
    submod_attrs={
        "_inventory": [
            "INVENTORY_TSV",
            "InventoryRow",
            "inventory",
            "parse_fcs_date",
            "sha256_file",
            "write_inventory",
        ],
        "_header": [
            "FCSReadError",
            "FCSReadWarning",
            "FCSHeader",
            "read_header",
        ],
        "_reader": [
            "FCSData",
            "read_fcs",
            "read_channel_values",
            "iter_events",
        ],
        "_writer": [
            "write_fcs",
            "format_spillover",
        ],
    },
)

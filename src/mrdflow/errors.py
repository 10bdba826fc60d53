"""The package's own exception classes. Messages name the file/row/field and the cause."""


class MrdflowError(Exception):
    """Base class of every error mrdflow raises on purpose."""


class ConfigError(MrdflowError):
    """A config file or sample sheet is invalid (names the file, row/field and cause)."""


class PanelError(MrdflowError):
    """A panel marker cannot be resolved to a channel of an FCS file."""


class CalibrationError(MrdflowError):
    """An instrument calibration cannot be made (names the panel, file or marker and the cause)."""

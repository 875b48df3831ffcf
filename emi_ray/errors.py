"""Errors a user can cause. The CLI prints them in one line and exits 2."""


class EmiError(Exception):
    """Base class: the message names the file or row and what to do."""


class LayoutError(EmiError):
    """A dataset directory or split CSV is malformed."""


class StoreError(EmiError):
    """A feature store is missing, incomplete or inconsistent."""


class ConfigError(EmiError):
    """An unknown config key or a value of the wrong type."""


class InputError(EmiError):
    """A user-supplied file (predictions, pickle, media) is malformed."""

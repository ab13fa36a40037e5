"""Exceptions whose message is meant for the user, printed without a traceback."""


class PCNError(Exception):
    """Base class: an error that `train.py` reports as one clear message."""


class ConfigError(PCNError, ValueError):
    """A configuration or input that cannot work; the message says what to change."""


class DataNotFoundError(PCNError, FileNotFoundError):
    """A dataset that is not on disk and cannot be downloaded."""


class DivergenceError(PCNError, FloatingPointError):
    """The energy became NaN/inf or exploded; the weights were not updated."""

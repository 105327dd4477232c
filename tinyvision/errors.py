"""User-facing errors: everything raised for bad input is a TinyVisionError.

The CLI turns these into one line on stderr and a non-zero exit; anything else is a bug and keeps
its traceback.
"""
from __future__ import annotations


class TinyVisionError(Exception):
    """Bad input from the user (a name, a file, a value). Its message is one line."""

    exit_code = 1


class ConfigError(TinyVisionError, ValueError):
    """A configuration field is unknown, of the wrong type or out of range (exit code 2)."""

    exit_code = 2


class SpecError(TinyVisionError, ValueError):
    """A model spec string is malformed; the message points at the offending token."""

    exit_code = 2


class DataError(TinyVisionError):
    """A data file is missing, truncated or not in the expected format; the message names it."""


class UnknownNameError(TinyVisionError, KeyError):
    """A dataset, model, optimiser... name not in its registry; the message lists valid names."""

    exit_code = 2

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""

"""Exceptions the harness raises on purpose.

Every message names the file and the item at fault and says what to do, so a user never has to read a
traceback to learn that an annotation file is broken or a weights file is missing.
"""

from __future__ import annotations


class C6BenchError(Exception):
    """Base class: the CLI prints these as one clean line and exits with status 2."""


class DataError(C6BenchError):
    """A dataset, annotation or prediction file is malformed or inconsistent."""


class ConfigError(C6BenchError):
    """A YAML config or command-line option is invalid (unknown key, bad value)."""


class MissingWeightsError(C6BenchError):
    """A named or given weights file is not on disk; the message holds the fetch command."""


class NetworkDisabledError(C6BenchError):
    """Raised instead of reaching the network outside the explicit fetch commands."""

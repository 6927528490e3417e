"""The one family of user-facing errors.

Anything raised as a :class:`UserError` was caused by the user's input, configuration
or artifacts (a bad image, a bad ``params.yaml``, a missing or stale artifact, a bad
command line) and names what to do about it. The command-line tools print such an
error as one line; every other exception is a bug and keeps its traceback.
"""
from pathlib import Path
from typing import Union

PathLike = Union[str, Path]


class UserError(Exception):
    """A failure caused by input, configuration or artifact state, not by the code."""


class InputError(UserError, ValueError):
    """A file, folder, argument or request the user gave is not usable."""


class ConfigError(UserError, ValueError):
    """``params.yaml`` is missing, malformed, or holds a setting that is not allowed."""


def one_line(err: BaseException) -> str:
    """An exception's message on one line (its type name when it has none)."""
    return " ".join(str(err).split()) or type(err).__name__

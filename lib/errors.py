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


class NotInCollectionError(InputError):
    """A name or folder the user gave holds no image of the collection being searched."""


class ConfigError(UserError, ValueError):
    """``params.yaml`` is missing, malformed, or holds a setting that is not allowed."""


class ImageReadError(InputError):
    """A file is not a usable image (missing, empty, corrupt or too large)."""


class ArtifactError(UserError, ValueError):
    """An artifact is missing, unreadable, or not of the expected shape or type."""


class PinningError(UserError, ValueError):
    """The artifacts are not the versions recorded in ``dvc.lock``."""


class WeightsError(ConfigError):
    """``modelling.weights`` does not lead to ResNet50 no-top weights."""


class RayClusterError(UserError):
    """The Ray cluster named by ``modelling.ray_address`` or ``$RAY_ADDRESS`` is unusable."""


def one_line(err: BaseException) -> str:
    """An exception's message on one line (its type name when it has none).

    Runs of whitespace become one space, and any other character that is not
    printable (a terminal escape, say) is shown escaped, as :func:`printable` does.
    """
    return printable(" ".join(str(err).split())) or type(err).__name__


def printable(text: str) -> str:
    """``text`` safe for a line-based output: one line, nothing a terminal interprets.

    A backslash becomes ``\\\\``, and every character that is not printable (newline,
    tab, carriage return, escape, other control or format characters, and the lone
    surrogates that stand for bytes of a file name that are not valid UTF-8) becomes
    its Python escape (``\\n``, ``\\x1b``, ``\\u200b``, ``\\udce9``). Printable text,
    spaces and non-ASCII letters included, is unchanged, and the escaping is
    unambiguous: the raw name can be recovered from what is printed.
    """
    if text.isprintable() and "\\" not in text:
        return text
    return "".join(_escape(char) for char in text)


def _escape(char: str) -> str:
    """One character of :func:`printable`'s output."""
    if char == "\\":
        return "\\\\"
    if char.isprintable():
        return char
    return char.encode("unicode_escape").decode("ascii")

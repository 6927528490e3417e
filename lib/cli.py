"""Shared command-line plumbing: logging set-up, and user errors apart from bugs.

A :class:`~lib.errors.UserError` is printed as one line and exits 1; any other
exception is a bug and keeps its full traceback (exit 1 too). ``-v/--verbose``, which
every script's parser has, turns on DEBUG logging and shows tracebacks for user errors.
"""
import argparse
import logging
import signal
import sys
import threading
import traceback
from typing import Callable, Optional, Sequence

from lib.errors import UserError, one_line

logger = logging.getLogger(__name__)

EXIT_USER_ERROR = 1
EXIT_INTERRUPTED = 130
_STATE = {"verbose": False}


def setup_logging(verbose: bool = False) -> None:
    """Logs to stderr; INFO for progress, DEBUG and tracebacks with ``verbose``."""
    _STATE["verbose"] = bool(verbose)
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO,
                        format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr,
                        force=True)


def is_verbose() -> bool:
    """Whether ``-v`` was given."""
    return _STATE["verbose"]


def error_line(prog: str, err: BaseException) -> str:
    """``prog: error: message`` on one line."""
    return f"{prog}: error: {one_line(err)}"


def run(main: Callable[[Optional[Sequence[str]]], int],
        argv: Optional[Sequence[str]] = None) -> int:
    """Runs a script's ``main``, turning user errors into one line on stderr.

    Returns:
        The exit status: ``main``'s, 1 for a user error, 130 when interrupted. Any
        other exception propagates with its traceback: it is a bug.
    """
    prog = sys.argv[0].rsplit("/", 1)[-1]
    interrupted = threading.Event()

    def on_sigint(signum, frame):
        # Remembered as well as raised: library code that swallows the exception
        # (a broad ``except`` in a framework) cannot turn Ctrl-C into a success.
        interrupted.set()
        signal.default_int_handler(signum, frame)

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, on_sigint)
    # A file name that is not valid UTF-8 is printed escaped rather than failing.
    if hasattr(sys.stdout, "reconfigure"):
        sys.stdout.reconfigure(errors="backslashreplace")
    try:
        status = main(argv)
        if interrupted.is_set():
            raise KeyboardInterrupt
        return status
    except KeyboardInterrupt:
        print(f"{prog}: interrupted; finished artifacts are kept, rerun to complete",
              file=sys.stderr)
        return EXIT_INTERRUPTED
    except UserError as err:
        if is_verbose():
            traceback.print_exc()
        print(error_line(prog, err), file=sys.stderr)
        return EXIT_USER_ERROR


class ArgumentParser(argparse.ArgumentParser):
    """An ``argparse`` parser with ``-v/--verbose``; usage errors are one line, exit 2."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.add_argument("-v", "--verbose", action="store_true",
                          help="debug logging, and tracebacks for errors too")

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message}\n")


def positive_int(text: str) -> int:
    """``argparse`` type for a count of at least 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value

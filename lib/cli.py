"""Shared command-line plumbing: logging set-up and one-line errors for user mistakes."""
import argparse
import logging
import signal
import sys
import threading
from typing import Callable, Optional, Sequence

logger = logging.getLogger(__name__)

# Errors caused by input or configuration: reported in one line, never a traceback.
USER_ERRORS = (ValueError, TypeError, OSError)
EXIT_USER_ERROR = 1
EXIT_INTERRUPTED = 130


def setup_logging(verbose: bool = False) -> None:
    """Logs to stderr; INFO for progress, DEBUG with ``verbose``."""
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO,
                        format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)


def run(main: Callable[[Optional[Sequence[str]]], int],
        argv: Optional[Sequence[str]] = None) -> int:
    """Runs a stage's ``main``, turning user errors into one line on stderr.

    Returns:
        The exit status: ``main``'s, 1 for a user error, 130 when interrupted.
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
    except USER_ERRORS as err:
        message = " ".join(str(err).split()) or type(err).__name__
        print(f"{prog}: error: {message}", file=sys.stderr)
        return EXIT_USER_ERROR


class ArgumentParser(argparse.ArgumentParser):
    """An ``argparse`` parser whose usage errors are one line on stderr, exit status 2."""

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

"""Shared command-line plumbing: logging set-up, and user errors apart from bugs.

A :class:`~lib.errors.UserError` is printed as one line and exits 1; any other
exception is a bug and keeps its full traceback (exit 1 too). ``-v/--verbose``, which
every script's parser has, turns on DEBUG logging and shows tracebacks for user errors.
Without it, what native libraries print while they load (TensorFlow's absl and oneDNN
start-up lines) and Python warnings from libraries are hidden, so a normal run shows only
the project's own lines; ``-v`` shows everything.
"""
import argparse
import contextlib
import logging
import os
import signal
import sys
import tempfile
import threading
import traceback
import warnings
from pathlib import Path
from typing import Callable, Iterator, Optional, Sequence

from lib.config import positive_int as checked_count
from lib.errors import one_line, UserError

logger = logging.getLogger(__name__)

EXIT_USER_ERROR = 1
EXIT_INTERRUPTED = 130
# Loggers of the project itself (stage scripts log as __main__).
_OWN_LOGGERS = ("lib", "stages", "bench", "__main__")
_STATE = {"verbose": False, "quiet": False}


def setup_logging(verbose: bool = False) -> None:
    """Logs to stderr; INFO for progress, DEBUG and tracebacks with ``verbose``.

    Without ``verbose`` the run is quiet: library warnings are ignored and
    :func:`quiet_native_stderr` hides native start-up output.
    """
    _STATE["verbose"] = bool(verbose)
    _STATE["quiet"] = not verbose
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO,
                        format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr,
                        force=True)
    if not verbose:
        # Keras and TensorFlow warn about their own internals (not the user's input).
        for module in ("keras", "tensorflow", "openvino", "absl"):
            warnings.filterwarnings("ignore", module=module)
        # Libraries' own progress chatter (e.g. faiss.loader's INFO lines) is not shown.
        for handler in logging.getLogger().handlers:
            handler.addFilter(_own_or_warning)


def _own_or_warning(record: logging.LogRecord) -> bool:
    """Whether a log record is shown in a quiet run: the project's, or a warning."""
    return record.levelno >= logging.WARNING or record.name.split(".")[0] in _OWN_LOGGERS


def is_verbose() -> bool:
    """Whether ``-v`` was given."""
    return _STATE["verbose"]


@contextlib.contextmanager
def quiet_native_stderr() -> Iterator[None]:
    """Hides what native code writes to stderr inside the block (quiet runs only).

    TensorFlow's C++ start-up lines (``WARNING: All log messages before
    absl::InitializeLog()...``, ``oneDNN custom operations are on``) bypass Python and
    its own log-level variables, so file descriptor 2 is pointed at a scratch file
    while TensorFlow loads. If the block raises, what was hidden is written out first.
    Outside a quiet command-line run (``-v``, or a library caller) it does nothing.
    """
    if not _STATE["quiet"]:
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as sink:
        os.dup2(sink.fileno(), 2)
        failed = True
        try:
            yield
            failed = False
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            if failed:
                sink.seek(0)
                sys.stderr.write(sink.read().decode("utf-8", "replace"))
            else:
                logger.debug("hidden native output: %d bytes", sink.tell())


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
    """An ``argparse`` parser with the options every script shares.

    ``--params`` (the params file) and ``-v/--verbose``; usage errors are one line,
    exit 2.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.add_argument("--params", type=Path, default=Path("params.yaml"),
                          help="params file (default: params.yaml)")
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
    try:
        return checked_count(value, "the count")
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}") from None

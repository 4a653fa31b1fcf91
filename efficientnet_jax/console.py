"""The entry points' console: our lines on it, every library's lines in a log file, user errors as one line.

A training run's console is for its user: the job, progress, evaluations, checkpoints and warnings.
The libraries' INFO lines (orbax at every save, tfds at every epoch, TensorFlow's start-up) bury
them, so the console shows a record only when it comes from this repository (the package or an
entry script, wherever the logger: orbax logs through absl too), is a WARNING or worse, or is one of
`LIBRARY_LINES_SHOWN`; every record still goes to the log file (`log_to_file`). `--debug` or absl's
`-v`/`--verbosity` show everything on the console, and `--debug` the traceback of a user error.

Import this module before anything imports TensorFlow (entry scripts import it first): it imports
TensorFlow itself, quietly. A user error (a bad flag, config, dataset, checkpoint, sweep or weights
file) ends the program with one line, `<program>: <reason>`, and exit status 1.
"""

from __future__ import annotations

import contextlib
import logging as python_logging
import os
import sys
import tempfile
from collections.abc import Callable, Iterator
from typing import IO, NoReturn

import jax
from absl import app, flags, logging
from ml_collections import config_flags

from efficientnet_jax import errors

PACKAGE_DIRECTORY = os.path.dirname(os.path.abspath(__file__))
REPOSITORY = os.path.dirname(PACKAGE_DIRECTORY)  # where the entry scripts are
# Library lines that belong on the console: orbax's is the only line that says a checkpoint was written.
LIBRARY_LINES_SHOWN = ("Finished saving checkpoint",)
# What the flags parser raises for a bad `--config` file or `--config.x` override: ml_collections
# raises AttributeError (a misspelt key), KeyError, TypeError or ValueError (a mistyped value), OSError
# (no such file). Only around flag parsing are these user errors; in `main` they are bugs.
CONFIG_FLAG_ERRORS = (AttributeError, KeyError, TypeError, ValueError, OSError)

FLAGS = flags.FLAGS
flags.DEFINE_bool(
    "debug", False, "Show every library's log lines on the console, and tracebacks of user errors."
)


def _debug_requested() -> bool:
    """`--debug`, also before the flags are parsed (errors in the flags themselves)."""
    return FLAGS["debug"].value if FLAGS.is_parsed() else "--debug" in sys.argv[1:]


def _import_tensorflow_quietly() -> IO[str] | None:
    """Imports TensorFlow with file descriptor 2 on a temporary file, returned for the log file.

    While its libraries load, TensorFlow's C++ writes "oneDNN custom operations are on" and absl's
    "All log messages before absl::InitializeLog() is called are written to STDERR", twice each,
    straight to descriptor 2: no Python handler sees them and TF_CPP_MIN_LOG_LEVEL does not stop them.
    TF_CPP_MIN_LOG_LEVEL=1 (unless set) hides the INFO lines of TensorFlow's and XLA's C++ afterwards.
    """
    if _debug_requested():
        return None
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")
    captured = tempfile.TemporaryFile(mode="w+")  # noqa: SIM115  (read when the log file opens)
    sys.stderr.flush()
    console = os.dup(2)
    os.dup2(captured.fileno(), 2)
    try:
        import tensorflow  # noqa: F401
    finally:
        os.dup2(console, 2)
        os.close(console)
    return captured


def _ignore_callbacks_into_closed_event_loops(unraisable) -> None:
    """When orbax gives up reading a damaged checkpoint it closes its asyncio event loop while
    tensorstore still reads the other arrays; each read that completes later calls back into the
    closed loop from a tensorstore thread, and Python prints a "RuntimeError: Event loop is closed"
    traceback for it (through sys.unraisablehook): a dozen of them after the one line that names the
    damage. They say nothing more, so they are dropped; any other unraisable error prints as usual."""
    error = unraisable.exc_value
    if isinstance(error, RuntimeError) and str(error) == "Event loop is closed":
        return
    sys.__unraisablehook__(unraisable)


_TENSORFLOW_STARTUP = _import_tensorflow_quietly()
sys.unraisablehook = _ignore_callbacks_into_closed_event_loops


def _is_ours(path: str) -> bool:
    path = os.path.abspath(path)
    return path.startswith(PACKAGE_DIRECTORY + os.sep) or os.path.dirname(path) == REPOSITORY


# `extra` of a record that belongs in the log file alone: the full story behind a line the console gives.
LOG_FILE_ONLY = {"log_file_only": True}


def _shown_on_console(record: python_logging.LogRecord) -> bool:
    if getattr(record, "log_file_only", False):
        return False
    return (
        record.levelno >= python_logging.WARNING
        or _is_ours(record.pathname)
        or any(line in str(record.msg) for line in LIBRARY_LINES_SHOWN)
    )


# A bad flag, or an error whose message names the problem and the fix (a bad config, dataset,
# checkpoint, sweep or weights file: errors.UserError).
USER_ERRORS = (app.UsageError, flags.Error, errors.UserError)


def _one_line(error: BaseException) -> str:
    """The reason on one line. For a misspelt `--config.x`, ml_collections raises an AttributeError
    wrapping a KeyError whose text is the quoted key, a newline and the closest key."""
    while error.args and isinstance(error.args[0], BaseException):
        error = error.args[0]
    if isinstance(error, KeyError) and error.args:
        key, *suggestion = str(error.args[0]).splitlines()
        return " ".join([f"Unknown config key {key}.", *suggestion])
    return " ".join(str(error).split()) or type(error).__name__


@contextlib.contextmanager
def user_errors_as_one_line(program: str, *more_errors: type[Exception]) -> Iterator[None]:
    """A user error (`USER_ERRORS`, or one of `more_errors`) raised inside ends the program with
    `<program>: <reason>` as the last line on stderr and exit status 1, no traceback (with --debug:
    the traceback). Any other exception propagates: it is a bug, and its traceback is wanted."""
    try:
        yield
    except Exception as error:
        if _debug_requested() or not isinstance(error, (*USER_ERRORS, *more_errors)):
            raise
        for handler in python_logging.getLogger().handlers:  # the log file, before the last line
            handler.flush()
        sys.stdout.flush()
        sys.stderr.write(f"{program}: {_one_line(error)}\n")
        sys.stderr.flush()
        raise SystemExit(1) from None


def end_at_once(reason: str, details: str) -> NoReturn:
    """Ends the program from any thread: `details` to the log file, `<program>: <reason>` as the last
    line on stderr, exit status 1. Without unwinding the main thread, which may be blocked in a
    collective that never returns, and without the atexit handlers, where JAX's distributed shutdown
    would wait for a lost process and then abort."""
    logging.error("%s", details, extra=LOG_FILE_ONLY)
    for handler in python_logging.getLogger().handlers:
        handler.flush()
    sys.stdout.flush()
    sys.stderr.write(f"{_program()}: {reason}\n")
    sys.stderr.flush()
    os._exit(1)


def _program() -> str:
    return os.path.basename(sys.argv[0])


def define_config_flag(default: str | None, help_string: str) -> None:
    """`--config` (ml_collections' config file flag, locked). Without `--config` on the command line,
    ml_collections reads the default file and applies the `--config.x` overrides right here, at
    import, so a misspelt override is reported here."""
    with user_errors_as_one_line(_program(), *CONFIG_FLAG_ERRORS):
        config_flags.DEFINE_config_file("config", default, help_string, lock_config=True)


def run(main: Callable[[list[str]], None]) -> None:
    """`app.run(main)` with a quiet console and user errors, in the flags or in `main`, as one line."""
    program = _program()

    def parse_flags(argv: list[str]) -> list[str]:
        with user_errors_as_one_line(program, *CONFIG_FLAG_ERRORS):
            argv = FLAGS(argv)
            if "config" in FLAGS and FLAGS.config is not None:
                FLAGS.config.keys()  # ml_collections reports a config file it cannot load on first use
            return argv

    def quiet_main(argv: list[str]) -> None:
        if not (_debug_requested() or FLAGS["verbosity"].present):
            logging.get_absl_handler().python_handler.addFilter(_shown_on_console)
        python_logging.captureWarnings(True)  # Python warnings to the log file too
        with user_errors_as_one_line(program):
            main(argv)

    app.run(quiet_main, flags_parser=parse_flags)


_log_file: str | None = None


def log_file() -> str | None:
    """The log file `log_to_file` opened, if any."""
    return _log_file


def add_log_file(path: str) -> None:
    """Every log record from here on also goes to the file at `path` (appended to)."""
    handler = python_logging.FileHandler(path)
    handler.setFormatter(logging.PythonFormatter())
    python_logging.getLogger().addHandler(handler)


def log_to_file(directory: str | None) -> str | None:
    """Every log record (all libraries, INFO and up) also goes to `<directory>/<program>.log`, after
    TensorFlow's start-up lines; nothing without a `directory`. In a multi-process job, one file per
    process (`train.process1.log`), since hosts may share the directory: call it after
    `jax.distributed.initialize`. Returns the file's path."""
    global _log_file
    if not directory:  # absl's --log_dir is "" when not given
        return None
    name = os.path.splitext(_program())[0]
    if jax.distributed.is_initialized():  # asks no backend: sweep.py's must leave the devices to its runs
        name = f"{name}.process{jax.process_index()}"
    path = os.path.join(os.path.abspath(directory), f"{name}.log")
    try:
        os.makedirs(directory, exist_ok=True)
        if _TENSORFLOW_STARTUP is not None:
            _TENSORFLOW_STARTUP.seek(0)
            with open(path, "a") as f:
                f.write(_TENSORFLOW_STARTUP.read())
        add_log_file(path)
    except OSError as error:
        raise app.UsageError(f"Cannot write the log file {path} ({error.strerror or error}).") from error
    _log_file = path
    logging.info("Full log, every library's lines included: %s", path)
    return path

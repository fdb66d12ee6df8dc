"""The errors a user can meet, each with its exit status (the table of ``ppl-dgm --help``).

Every failure the command line reports is one line, ``ppl-dgm: error: WHAT; FIX``, and one exit
status per kind of failure:

====  ==========================================================================================
 0    done
 1    an unexpected failure (a bug: the line names the exception; ``--debug`` shows where)
 2    bad input: an option, a hyperparameter, a data file, a run directory that holds another run
 3    training diverged (non-finite loss, gradients, parameters or evaluation); the last good
      checkpoint is kept and ``summary.json`` records the failure
 4    the run directory is in use by another training process
 5    a file could not be written or read (disk full, permission denied); earlier files are kept
 6    ``sweep``: some runs still failed after their retries (the others are aggregated)
130   interrupted by SIGINT (Ctrl-C) after the current step; a checkpoint of the steps done is
      written, ``--resume`` continues exactly
141   the standard output was closed early (e.g. ``ppl-dgm models | head``): stops quietly
143   interrupted by SIGTERM; as for SIGINT
====  ==========================================================================================
"""

from __future__ import annotations

import errno
import signal

EXIT_OK = 0
EXIT_BUG = 1
EXIT_USAGE = 2
EXIT_DIVERGED = 3
EXIT_LOCKED = 4
EXIT_IO = 5
EXIT_RUNS_FAILED = 6
EXIT_SIGINT = 130
EXIT_BROKEN_PIPE = 141  # 128 + SIGPIPE: what a shell reports for a reader that closed the pipe
EXIT_SIGTERM = 143

EXIT_CODES_HELP = """exit status:
  0    done
  1    unexpected failure (a bug; --debug shows the traceback)
  2    bad input (option, hyperparameter, data file, a run directory holding another run)
  3    training diverged: the last good checkpoint is kept, summary.json says where and why
  4    the run directory is locked by another training process
  5    a file could not be written or read (disk full, permission denied); earlier files are kept
  6    sweep: some runs still failed after their retries (the others are aggregated)
  130  interrupted by SIGINT (Ctrl-C) after the current step: a checkpoint of the steps done is
       written and 'ppl-dgm train --resume --out DIR' continues exactly as if never stopped
  141  the standard output was closed early (e.g. 'ppl-dgm models | head'): stops quietly
  143  interrupted by SIGTERM: as for SIGINT"""


class PplDgmError(Exception):
    """Base of the errors reported as one line; ``exit_code`` is the process's exit status."""

    exit_code = EXIT_BUG

    def __init__(self, message: str, fix: str | None = None) -> None:
        self.message = message
        self.fix = fix
        super().__init__(f"{message}; {fix}" if fix else message)


class UserError(PplDgmError, ValueError):
    """Bad input (an option out of its domain, a malformed data file...): ``fix`` says what to do."""

    exit_code = EXIT_USAGE


class RunDirectoryError(UserError):
    """The run directory cannot be used: it holds another run, is a file, or is not writable."""


class RunLockedError(RunDirectoryError):
    """Another process holds the run directory (training, evaluating or sampling in it)."""

    exit_code = EXIT_LOCKED


class DivergenceError(PplDgmError, FloatingPointError):
    """Training produced a non-finite loss, gradient, parameter or evaluation value.

    ``details`` (JSON-able) is what ``summary.json`` records under ``"divergence"``.
    """

    exit_code = EXIT_DIVERGED

    def __init__(self, message: str, fix: str | None = None, details: dict | None = None) -> None:
        super().__init__(message, fix)
        self.details = details or {}


class Interrupted(PplDgmError):
    """SIGINT or SIGTERM arrived; training stopped after its current step (and wrote the
    checkpoint of the steps done)."""

    def __init__(self, message: str, signum: int) -> None:
        super().__init__(message)
        self.signum = signum
        self.exit_code = EXIT_SIGTERM if signum == signal.SIGTERM else EXIT_SIGINT


def describe(err: BaseException) -> tuple[str, int]:
    """The one line (without the ``ppl-dgm: error:`` prefix) and exit status of any exception."""
    if isinstance(err, PplDgmError):
        return str(err), err.exit_code
    if isinstance(err, KeyboardInterrupt):
        return "interrupted (Ctrl-C); files already written are kept", EXIT_SIGINT
    if isinstance(err, OSError) and not isinstance(err, FileNotFoundError | NotADirectoryError):
        where = f" {err.filename}" if err.filename else ""
        if err.errno == errno.ENOSPC:
            return (f"no space left on the device while writing{where}; the previous files are "
                    "kept: free some space, then run again (train: add --resume)"), EXIT_IO
        if err.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
            return (f"permission denied:{where} is not writable ({err.strerror}); pick a folder "
                    "you can write to"), EXIT_IO
        if isinstance(err, IsADirectoryError):
            return f"{where.strip()} is a directory; give a file name", EXIT_USAGE
        if isinstance(err, FileExistsError):
            return f"{where.strip()} already exists and is not a folder; pick another path", EXIT_USAGE
        return f"{err.strerror or err}{':' + where if where else ''}", EXIT_IO
    if isinstance(err, KeyError):  # str(KeyError) quotes its message
        return (str(err.args[0]) if err.args else "missing key"), EXIT_USAGE
    if isinstance(err, ValueError | FileNotFoundError | NotADirectoryError | RuntimeError):
        return str(err), EXIT_USAGE
    return f"unexpected {type(err).__name__}: {err} (a bug: rerun with --debug and report it)", EXIT_BUG

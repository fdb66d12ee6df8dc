"""``ppl-dgm``: train, evaluate and sample model/guide pairs; compare, sweep, reproduce.

    ppl-dgm models
    ppl-dgm train m2 --dataset digits --labels 100 --epochs 30 --out runs/m2-digits
    ppl-dgm evaluate runs/m2-digits --iw-samples 5000
    ppl-dgm sample runs/m2-digits

Each command parses its options, calls the Python API (``ppl_dgm.train``, ``ppl_dgm.load``,
``ppl_dgm.compare``, ...) and prints; errors become one line and an exit status.
"""

from __future__ import annotations

import argparse
import os
import sys
import warnings
from typing import Any

from ppl_dgm.cli import commands, compare, reproduce, sweep
from ppl_dgm.errors import EXIT_BROKEN_PIPE, EXIT_CODES_HELP, PplDgmError, describe


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ppl-dgm", description=__doc__, epilog=EXIT_CODES_HELP,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    parser.add_argument("--debug", action="store_true",
                        help="show the full traceback of an error instead of one line (also: "
                             "PPL_DGM_DEBUG=1)")
    sub = parser.add_subparsers(dest="command", required=True)
    commands.add_parsers(sub)
    compare.add_parser(sub)
    sweep.add_parser(sub)
    reproduce.add_parser(sub)
    return parser


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("ppl-dgm")
    except PackageNotFoundError:
        return "unknown (not installed)"


def debug_requested(args: argparse.Namespace) -> bool:
    """``--debug`` or ``PPL_DGM_DEBUG`` set to anything but empty or 0."""
    return bool(getattr(args, "debug", False)) or os.environ.get("PPL_DGM_DEBUG", "") not in ("", "0")


def _format_warning(message: Any, category: type[Warning], filename: str, lineno: int,
                    line: str | None = None) -> str:
    """A pair's warnings (``ppl_dgm.contract.PairWarning``) as one line; the others as Python's."""
    from ppl_dgm.contract import PairWarning

    if issubclass(category, PairWarning):
        return f"ppl-dgm: warning: {message}\n"
    return _PYTHON_FORMATWARNING(message, category, filename, lineno, line)


_PYTHON_FORMATWARNING = warnings.formatwarning


def _stdout_closed() -> bool:
    """After a ``BrokenPipeError``: whether it is the standard output that was closed (e.g. ``ppl-dgm
    models | head``). If so, the rest of the output goes to ``os.devnull`` (so that the
    interpreter's last flush is quiet too) and the command stops quietly with
    :data:`~ppl_dgm.errors.EXIT_BROKEN_PIPE` (141, what a shell reports for a program stopped by
    SIGPIPE, so that ``set -o pipefail`` still sees the output was cut short)."""
    import select

    try:
        sys.stdout.flush()
        poll = select.poll()  # the data may have been dropped: ask whether the pipe has a reader
        poll.register(sys.stdout.fileno(), select.POLLOUT)
        if not any(events & (select.POLLERR | select.POLLHUP) for _, events in poll.poll(0)):
            return False  # another pipe broke: an ordinary error
    except BrokenPipeError:
        pass
    except (OSError, ValueError, AttributeError):
        return False
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError, AttributeError):  # no file descriptor (a replaced sys.stdout)
        pass
    return True


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    warnings.formatwarning = _format_warning
    try:
        code = args.func(args)
        sys.stdout.flush()  # a closed pipe shows here, not in the interpreter's last flush
        return code
    except (Exception, KeyboardInterrupt) as err:  # one line each; the exit status says which kind
        if isinstance(err, BrokenPipeError) and _stdout_closed():
            return EXIT_BROKEN_PIPE
        if debug_requested(args):
            raise
        message, code = describe(err)
        from ppl_dgm.contract import error_origin

        origin = None if isinstance(err, KeyboardInterrupt) else error_origin(err)
        if origin:  # an error of a pair's own code: where it arose, not "a bug of ppl-dgm"
            if not isinstance(err, PplDgmError):  # Pyro appends the trace's shapes: first line
                message = f"{type(err).__name__}: {(str(err).strip().splitlines() or [''])[0]}"
            message += f" (at {origin}; --debug shows the traceback)"
        print(f"ppl-dgm: error: {message}", file=sys.stderr)
        return code
    finally:
        warnings.formatwarning = _PYTHON_FORMATWARNING


if __name__ == "__main__":
    sys.exit(main())

"""d2lkaggle: a Kaggle image-classification competition from raw files to submission.csv, in
PyTorch, MXNet or PaddlePaddle (the two Kaggle chapters of Dive into Deep Learning).

Start with `d2lkaggle demo`; `d2lkaggle COMMAND --help` explains each command."""
from __future__ import annotations

import argparse
import os
import signal
import sys

# errors a user can cause (USER_ERRORS: one line, exit 2) and that line, as log.txt says it
from ..compete import report
from ..compete.report import USER_ERRORS, error_line
from . import data, tools, train

__all__ = ["main", "build_parser", "error_line"]


def build_parser() -> argparse.ArgumentParser:
    """The ``d2lkaggle`` argument parser: one module per group of subcommands adds its own."""
    from .. import __version__
    p = argparse.ArgumentParser(prog="d2lkaggle", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = p.add_subparsers(dest="command", required=True)
    for group in (train, data, tools):
        group.add_parsers(sub)
    return p


def _one_line_errors(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Give ``parser`` and all its subcommands the one-line error format (usage stays in
    ``--help``) and the ``--debug`` flag; done here so that build_parser stays as it is."""
    parser.add_argument("--debug", action="store_true",
                        help="show Python tracebacks instead of one-line errors (also: "
                             "D2LKAGGLE_DEBUG=1); may be given anywhere on the line")
    todo = [parser]
    while todo:
        p = todo.pop()

        def error(message: str, p=p):
            p.exit(2, f"d2lkaggle: error: {p.prog}: {message} (see {p.prog} --help)\n")
        p.error = error
        for action in p._actions:
            if isinstance(action, argparse._SubParsersAction):
                todo.extend(action.choices.values())
    return parser

def _lines_as_they_come() -> None:
    """Off a terminal (a file, a pipe, a CI log), print each line when it is said: Python
    buffers a redirected stdout in 8 KB blocks, so a run's first lines would otherwise wait
    for minutes of training."""
    for stream in (sys.stdout, sys.stderr):
        try:
            if not stream.isatty():
                stream.reconfigure(line_buffering=True)
        except (AttributeError, ValueError, OSError):   # a replaced stream (pytest's, a notebook's)
            pass


def _terminated(signum: int, frame: object) -> None:
    """``kill`` (SIGTERM) ends a run as Ctrl-C does: its log.txt says how to resume it."""
    raise KeyboardInterrupt("SIGTERM")


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``d2lkaggle`` command.

    Every error a user can cause prints one line, ``d2lkaggle: error: ...``, on stderr and
    exits 2 (Ctrl-C: 130, SIGTERM: 143); ``--debug`` or ``D2LKAGGLE_DEBUG=1`` shows the
    traceback instead. Off a terminal every line is printed when it is said.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv or os.environ.get("D2LKAGGLE_DEBUG", "") not in ("", "0")
    args = _one_line_errors(build_parser()).parse_args([a for a in argv if a != "--debug"])
    args.argv = argv   # (``--distributed`` starts the launcher with the same arguments)
    _lines_as_they_come()
    try:
        previous = signal.signal(signal.SIGTERM, _terminated)
    except ValueError:   # not the main thread: leave the signal alone
        previous = None
    report.COMMAND = [a for a in argv if a != "--debug"]   # what log.txt tells to type again
    try:
        return args.func(args)
    except KeyboardInterrupt as e:
        if debug:
            raise
        print(f"d2lkaggle: interrupted ({str(e) or 'Ctrl-C'})", file=sys.stderr)
        return 143 if str(e) == "SIGTERM" else 130
    except Exception as e:
        if debug:
            raise
        line = error_line(e)
        if not isinstance(e, USER_ERRORS):  # a bug of ours: still one line, and how to see more
            line = f"{type(e).__name__}: {line} (internal error; rerun with --debug for the traceback)"
        print(f"d2lkaggle: error: {line}", file=sys.stderr)
        return 2
    finally:
        report.COMMAND = None
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)

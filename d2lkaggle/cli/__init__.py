"""d2lkaggle: a Kaggle image-classification competition from raw files to submission.csv, in
PyTorch, MXNet or PaddlePaddle (the two Kaggle chapters of Dive into Deep Learning).

Start with `d2lkaggle demo`; `d2lkaggle COMMAND --help` explains each command."""
from __future__ import annotations

import argparse
import os
import sys

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

#: errors a user's input, files or machine can cause: one line, exit 2
USER_ERRORS = (ValueError, OSError, RuntimeError, ImportError, ArithmeticError, MemoryError)

def error_line(e: BaseException) -> str:
    """One line for an exception: its message, with the file an OSError names."""
    if isinstance(e, OSError) and e.filename and e.strerror:
        where = e.filename if e.filename2 is None else f"{e.filename} -> {e.filename2}"
        msg = f"{e.strerror}: {where}"
    elif isinstance(e, MemoryError):
        msg = f"out of memory ({e or 'no details'}); use smaller images or batches"
    else:
        msg = str(e) or type(e).__name__
    return " ".join(msg.split())  # one line, whatever the message held

def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``d2lkaggle`` command.

    Every error a user can cause prints one line, ``d2lkaggle: error: ...``, on stderr and
    exits 2 (Ctrl-C: 130); ``--debug`` or ``D2LKAGGLE_DEBUG=1`` shows the traceback instead.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv or os.environ.get("D2LKAGGLE_DEBUG", "") not in ("", "0")
    args = _one_line_errors(build_parser()).parse_args([a for a in argv if a != "--debug"])
    args.argv = argv   # (``--distributed`` starts the launcher with the same arguments)
    try:
        return args.func(args)
    except KeyboardInterrupt:
        if debug:
            raise
        print("d2lkaggle: interrupted", file=sys.stderr)
        return 130
    except Exception as e:
        if debug:
            raise
        line = error_line(e)
        if not isinstance(e, USER_ERRORS):  # a bug of ours: still one line, and how to see more
            line = f"{type(e).__name__}: {line} (internal error; rerun with --debug for the traceback)"
        print(f"d2lkaggle: error: {line}", file=sys.stderr)
        return 2

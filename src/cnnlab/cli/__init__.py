"""The `cnnlab` command: argparse subcommands, each a thin call into the library.

Every module in this package that defines ``register(subparsers)`` adds its subcommands;
the handler it sets as ``func`` returns an exit code. Bad input anywhere becomes one line
on stderr and exit code 2, never a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import os
import pkgutil
import signal
import sys
import threading
from collections.abc import Sequence
from typing import NoReturn

__all__ = ["CliError", "main"]


class CliError(Exception):
    """A user error the CLI reports as one line with exit code 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise CliError(f"{self.prog}: {message}")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="cnnlab",
        description="The classic CNN architectures: build, analyse, train, evaluate.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True
    for module in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        commands = importlib.import_module(f"{__name__}.{module.name}")
        register = getattr(commands, "register", None)
        if register is not None:
            register(sub)
    return parser


def _exit_interrupted(signum: int, frame: object) -> None:
    # Ctrl-C while torch is being imported: a KeyboardInterrupt raised inside torch's C++
    # start-up can abort the process or be swallowed, so leave at once (nothing is written yet).
    sys.stderr.write("cnnlab: interrupted\n")
    sys.stderr.flush()
    os._exit(130)


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    """Import the subcommands and parse ``argv``, with Ctrl-C ending the process at once."""
    if threading.current_thread() is not threading.main_thread() or \
            signal.getsignal(signal.SIGINT) is not signal.default_int_handler:
        return build_parser().parse_args(argv)
    signal.signal(signal.SIGINT, _exit_interrupted)
    try:
        return build_parser().parse_args(argv)
    finally:
        signal.signal(signal.SIGINT, signal.default_int_handler)


def main(argv: Sequence[str] | None = None) -> int:
    try:
        args = _parse(argv)
        return int(args.func(args) or 0)
    except (CliError, ValueError, OSError) as exc:  # OSError: a path that cannot be used
        message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        print(f"cnnlab: error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as exc:  # a RunInterrupted says where the last checkpoint is
        print(f"cnnlab: {exc}" if str(exc) else "cnnlab: interrupted", file=sys.stderr)
        return 130

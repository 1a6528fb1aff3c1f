"""The `cnnlab` command: argparse subcommands, each a thin call into the library.

Every module in this package that defines ``register(subparsers)`` adds its subcommands;
the handler it sets as ``func`` returns an exit code. Bad input anywhere becomes one line
on stderr and exit code 2, never a traceback; library warnings print as one
``cnnlab: warning:`` line each; a closed pipe (``cnnlab models | head -1``) ends quietly.
"""

from __future__ import annotations

import argparse
import importlib
import os
import pkgutil
import re
import signal
import sys
import threading
import warnings
from collections.abc import Sequence
from typing import Any, NoReturn

__all__ = ["CliError", "add_threads_option", "at_least", "main", "positive"]


class CliError(Exception):
    """A user error the CLI reports as one line with exit code 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        # "argument --epochs: must be >= 1" reads as "--epochs must be >= 1"; the sub-command
        # ("summary", "data info") is named once, after the "cnnlab: error:" prefix main adds.
        message = re.sub(r"^argument ([^:]+): (?=must )", r"\1 ", message)
        command = self.prog.removeprefix("cnnlab").strip()
        raise CliError(f"{command}: {message}" if command else message)


def at_least(low: int, high: int | None = None) -> Any:
    """An argparse type: an integer >= ``low`` (and <= ``high``); its error names the flag:
    "--epochs must be an integer >= 1, got '0'"."""
    wanted = f">= {low}" if high is None else f"in [{low}, {high}]"

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = None
        if value is None or value < low or (high is not None and value > high):
            raise argparse.ArgumentTypeError(f"must be an integer {wanted}, got {text!r}")
        return value

    parse.__name__ = f"integer {wanted}"
    return parse


positive = at_least(1)


def add_threads_option(parser: argparse.ArgumentParser) -> None:
    """``--threads N``: torch's intra-op threads for this command (main applies it)."""
    parser.add_argument(
        "--threads", type=positive, default=None, metavar="N",
        help="CPU threads for torch (default: torch's own choice, one per core); on a machine "
             "shared with other jobs fewer threads can be much faster (docs/benchmarks.md)")


def _version() -> str:
    from cnnlab import __version__

    return f"cnnlab {__version__}"


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="cnnlab",
        description="The classic CNN architectures: build, analyse, train, evaluate.",
    )
    parser.add_argument("--version", action="version", version=_version(),
                        help="print the version and exit")
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


def _show_warning(message: Any, category: Any, *_args: Any, **_kw: Any) -> None:
    print(f"cnnlab: warning: {str(message).splitlines()[0]}", file=sys.stderr)


def _quiet_stdout() -> None:
    """After a broken pipe: point stdout at /dev/null so the exit flush cannot fail again."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())


def _stdout_is_devnull() -> bool:
    try:
        out, null = os.fstat(sys.stdout.fileno()), os.stat(os.devnull)
    except (OSError, ValueError):
        return False
    return (out.st_dev, out.st_ino, out.st_rdev) == (null.st_dev, null.st_ino, null.st_rdev)


def main(argv: Sequence[str] | None = None) -> int:
    try:
        with warnings.catch_warnings():
            warnings.showwarning = _show_warning
            # Pillow's decompression-bomb warning is an error here (one line, naming the file
            # where the caller catches it), never a warning printed before our own error.
            warnings.filterwarnings("error", message=r"Image size \(\d+ pixels\) exceeds limit")
            args = _parse(argv)
            if getattr(args, "threads", None):
                import torch

                torch.set_num_threads(args.threads)
            code = int(args.func(args) or 0)
            sys.stdout.flush()
            return code
    except BrokenPipeError:  # the reader went away (`| head -1`): nothing left to say
        _quiet_stdout()
        return 0
    except SystemExit as exc:
        # rich meets a broken pipe by pointing stdout at /dev/null and exiting with 1
        if exc.code == 1 and _stdout_is_devnull():
            return 0
        raise
    except (CliError, ValueError, OSError, Warning) as exc:  # OSError: an unusable path
        message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        print(f"cnnlab: error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as exc:  # a RunInterrupted says where the last checkpoint is
        print(f"cnnlab: {exc}" if str(exc) else "cnnlab: interrupted", file=sys.stderr)
        return 130

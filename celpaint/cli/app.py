"""The Typer app: registers the commands and turns celpaint errors into exit codes."""

from __future__ import annotations

import functools
import logging
import os
import signal
import sys
from collections.abc import Callable
from typing import Annotated

import typer

from celpaint.errors import EXIT_INTERRUPTED, CelpaintError

app = typer.Typer(
    name="celpaint",
    help="Colorize line-art and black-and-white animation: clips, frame folders and images.",
    no_args_is_help=True,
    add_completion=True,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)

# Set by the root callback; read by main() after the command has run or failed.
_state = {"debug": False}


def _version(value: bool) -> None:
    if value:
        from celpaint.models.checkpoint import celpaint_version

        typer.echo(f"celpaint {celpaint_version()}")
        raise typer.Exit()


@app.callback()
def root(
    debug: Annotated[
        bool, typer.Option("--debug", help="Show the full traceback when something fails.")
    ] = False,
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="Print the version."),
    ] = False,
) -> None:
    _state["debug"] = debug
    _configure_logging(debug)


class _WarningHandler(logging.Handler):
    """Library warnings as one plain line each on stderr."""

    def emit(self, record: logging.LogRecord) -> None:
        level = "warning" if record.levelno >= logging.WARNING else "info"
        sys.stderr.write(f"{level}: {record.getMessage()}\n")
        sys.stderr.flush()


def _configure_logging(debug: bool) -> None:
    logger = logging.getLogger("celpaint")
    for handler in list(logger.handlers):
        if isinstance(handler, _WarningHandler):
            logger.removeHandler(handler)
    logger.addHandler(_WarningHandler())
    logger.setLevel(logging.DEBUG if debug else logging.WARNING)
    logger.propagate = False


def _register_commands() -> None:
    from celpaint.cli import colorize, join, lineart, media

    app.command("colorize", no_args_is_help=True)(colorize.colorize_command)
    app.command("join", no_args_is_help=True)(join.join_command)
    app.command("extract", no_args_is_help=True)(media.extract_command)
    app.command("assemble", no_args_is_help=True)(media.assemble_command)
    app.command("info")(media.info_command)
    app.command("lineart", no_args_is_help=True)(lineart.lineart_command)
    from celpaint.cli import evaluate, export, train

    app.command("train", no_args_is_help=True)(train.train_command)
    app.command("evaluate", no_args_is_help=True)(evaluate.evaluate_command)
    app.command("export", no_args_is_help=True)(export.export_command)


_register_commands()


def _guarded(command: Callable) -> Callable:
    """Turn celpaint errors and interrupts into one line on stderr and an exit code."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except KeyboardInterrupt:
            sys.stderr.write("interrupted: nothing incomplete was left at the output path\n")
            raise typer.Exit(EXIT_INTERRUPTED) from None
        except CelpaintError as error:
            if _state["debug"]:
                raise
            sys.stderr.write(f"error: {error}\n")
            raise typer.Exit(error.exit_code) from None
        except (typer.Exit, typer.Abort):
            raise
        except Exception as error:
            if _state["debug"]:
                raise
            sys.stderr.write(
                f"error: unexpected {type(error).__name__}: {error} (run with --debug for the "
                "traceback and please report it)\n"
            )
            raise typer.Exit(1) from None

    wrapper.__celpaint_guarded__ = True
    return wrapper


def _guard_commands() -> None:
    for info in app.registered_commands:
        if info.callback is not None and not getattr(info.callback, "__celpaint_guarded__", False):
            info.callback = _guarded(info.callback)


def _raise_interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    """Run the CLI and return its exit code (used by the console script, ``-m`` and tests)."""
    _guard_commands()
    args = list(sys.argv[1:] if argv is None else argv)
    _state["debug"] = "--debug" in args
    # A plain kill (SIGTERM) should clean up like Ctrl-C: partial outputs are removed.
    previous = signal.getsignal(signal.SIGTERM)
    try:
        signal.signal(signal.SIGTERM, _raise_interrupt)
    except ValueError:  # not the main thread (e.g. called from a worker thread)
        previous = None
    try:
        app(args=args, prog_name="celpaint")
    except SystemExit as done:
        code = done.code
        return code if isinstance(code, int) else (0 if code is None else 1)
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    return 0


def run() -> None:
    """The console script and ``python -m celpaint``: ``main``'s exit code as the process's.

    After an interrupt the process ends at once (``os._exit``) once everything is flushed: the
    pipeline's outputs are already cleaned up, and a worker thread still unwinding inside
    native code (OpenCV, torch) must not meet the interpreter's teardown, which can abort the
    process ("terminate called without an active exception") instead of exiting with 130.
    """
    code = main()
    if code == EXIT_INTERRUPTED:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    raise SystemExit(code)

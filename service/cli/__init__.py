"""The `integration-service` command line (CONTRACT section 1), built with click.

Errors go to stderr as one line naming what is wrong; exit status 2 for bad input (bad
arguments, an unknown venue, job or dead-letter id, a bad setting) and 1 for everything
else (an unreachable service, say). No command ever prints a traceback.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Coroutine, Iterable, Sequence
from typing import Any, TypeVar

import click

from service import config
from service.errors import IntegrationError, ValidationError
from service.logs import configure_logging, redact_text

T = TypeVar("T")


class CommandError(Exception):
    """A CLI failure with its exit status."""

    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.exit_code = exit_code


class ExitStatus(Exception):
    """End the command with this status and nothing more on stderr (its output is said).
    click's own Exit cannot carry it: without standalone mode, click turns that into the
    return value of ``cli.main`` instead of raising it."""

    def __init__(self, exit_code: int) -> None:
        super().__init__(exit_code)
        self.exit_code = exit_code


def load(*, long_running: bool = False) -> config.Settings:
    """Settings from the environment, with logging configured; bad values exit 2."""
    try:
        settings = config.load_settings()
    except config.ConfigurationError as exc:
        raise CommandError(str(exc), 2) from None
    configure_logging(level=settings.log_level, fmt=settings.log_format, final=long_running)
    return settings


def new_event_loop() -> asyncio.AbstractEventLoop:
    """The event loop every command runs on: uvloop's where it is installed (its loop and
    transports are C, and asyncio's own bookkeeping was a third of the daemon's CPU per
    message: bench/consume.py A/B in the README), else asyncio's."""
    try:
        import uvloop
    except ImportError:  # not built for this platform: asyncio's loop does the same work
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


def run_async(coro: Coroutine[Any, Any, T]) -> T:
    """Run a command's coroutine on a fresh event loop (``new_event_loop``'s)."""
    with asyncio.Runner(loop_factory=new_event_loop) as runner:
        return runner.run(coro)


def format_table(header: Sequence[str], rows: Iterable[Sequence[str]]) -> list[str]:
    """Left-aligned columns two spaces apart, the header first, for a person to read."""
    table = [tuple(header), *(tuple(row) for row in rows)]
    widths = [max(len(line[i]) for line in table) for i in range(len(header))]
    return ["  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip() for line in table]


def exit_code_for(exc: IntegrationError) -> int:
    return 2 if isinstance(exc, ValidationError) else 1


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="integration-service")
def cli() -> None:
    """Keep each venue's Stripe, Square, QuickBooks Online and Mailchimp accounts in sync.

    Settings come from the environment (see the README); per-venue secrets live in the
    credential vault and never on the command line.
    """


def _register() -> None:
    """Add the commands of every module in this package (each lists them in COMMANDS)."""
    import importlib
    import pkgutil

    for module_info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        module = importlib.import_module(f"{__name__}.{module_info.name}")
        for command in getattr(module, "COMMANDS", ()):
            cli.add_command(command)


_register()


def _fail(message: str, code: int) -> int:
    click.echo(f"error: {redact_text(message)}", err=True)
    return code


def main(argv: list[str] | None = None) -> int:
    """Entry point of the console script; returns (and exits with) the status."""
    args = sys.argv[1:] if argv is None else argv
    if not args:
        return _fail("no command given; see `integration-service --help`", 2)
    try:
        cli.main(args=args, prog_name="integration-service", standalone_mode=False)
    except (click.exceptions.Exit, ExitStatus) as exc:
        return exc.exit_code
    except click.Abort:
        return _fail("aborted", 1)
    except click.ClickException as exc:  # usage errors: exit 2
        return _fail(exc.format_message(), exc.exit_code)
    except CommandError as exc:
        return _fail(str(exc), exc.exit_code)
    except IntegrationError as exc:
        return _fail(str(exc), exit_code_for(exc))
    except KeyboardInterrupt:
        return _fail("interrupted", 130)
    except Exception as exc:  # never a traceback: one line naming the failure
        return _fail(f"unexpected {type(exc).__name__}: {exc}".splitlines()[0], 1)
    return 0


def entry() -> None:
    sys.exit(main())

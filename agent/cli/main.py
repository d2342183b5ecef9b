"""Entry point: one click group; expected failures become one line and an exit code."""

from __future__ import annotations

import sys

import click

from .. import __version__
from ..errors import ConnscopeError
from .check import check
from .fleet import fleet
from .run import run
from .sockets import sockets
from .top import top
from .trace import trace


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="connscope")
def cli() -> None:
    """Trace TCP connection attempts and connections with eBPF."""


cli.add_command(trace)
cli.add_command(check)
cli.add_command(run)
cli.add_command(top)
cli.add_command(sockets)
cli.add_command(fleet)


def main(argv: list[str] | None = None) -> None:
    try:
        rv = cli.main(args=argv, prog_name="connscope", standalone_mode=False)
    except click.exceptions.NoArgsIsHelpError as err:
        click.echo(err.ctx.get_help() if err.ctx else str(err))
        sys.exit(0)
    except click.UsageError as err:
        cmd = err.ctx.command_path if err.ctx else "connscope"
        click.echo(f"connscope: {err.format_message()} (fix: see `{cmd} --help`)", err=True)
        sys.exit(2)
    except click.exceptions.Abort:
        sys.exit(130)
    except ConnscopeError as err:
        click.echo(err.one_line(), err=True)
        sys.exit(err.exit_code)
    except KeyboardInterrupt:
        sys.exit(130)
    sys.exit(rv if isinstance(rv, int) else 0)

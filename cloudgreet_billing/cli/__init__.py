"""The ``cloudgreet-billing`` command: groups are wired here, behaviour lives in services."""

from __future__ import annotations

import importlib
import inspect
import os
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from typer.core import TyperCommand, TyperGroup
from typer.main import get_group

from cloudgreet_billing import __version__
from cloudgreet_billing.cli.context import AppContext, app_context
from cloudgreet_billing.cli.output import fail, json_mode, set_json_mode
from cloudgreet_billing.config import scrub_secrets
from cloudgreet_billing.errors import BillingError, ExitCode

if TYPE_CHECKING:
    # The click that Typer vendors: TyperGroup's methods are typed with its classes.
    from typer._click import Command, Context, HelpFormatter

# Command name -> (module under cloudgreet_billing.cli, attribute): a Typer sub-app or a
# command function. Listed in the order ``--help`` shows them.
COMMANDS: dict[str, tuple[str, str]] = {
    "db": ("db", "app"),
    "ledger": ("ledger", "app"),
    "dunning": ("dunning", "app"),
    "doctor": ("doctor", "doctor"),
    "sync": ("sync", "sync"),
    "serve": ("serve", "serve"),
    "quarantine": ("quarantine", "app"),
    "alerts": ("alerts", "app"),
    "retry": ("actions", "retry"),
    "resend-link": ("actions", "resend_link"),
    "portal": ("actions", "portal"),
    "reconcile": ("finance", "reconcile"),
    "dashboard": ("finance", "dashboard"),
    "export-csv": ("finance", "export_csv"),
    "incident": ("incident", "app"),
    "demo": ("demo", "demo"),
}


def _target(name: str) -> typer.Typer | Callable[..., Any]:
    module_name, attribute = COMMANDS[name]
    module = importlib.import_module(f"cloudgreet_billing.cli.{module_name}")
    target: typer.Typer | Callable[..., Any] = getattr(module, attribute)
    return target


def build_command(name: str) -> TyperCommand | TyperGroup:
    """The click command for one top-level name, built from its module on demand."""
    target = _target(name)
    holder = typer.Typer(add_completion=False)
    if isinstance(target, typer.Typer):
        holder.add_typer(target, name=name)
    else:
        holder.command(name)(target)
    command = get_group(holder).commands[name]
    assert isinstance(command, TyperGroup | TyperCommand)
    return command


def command_help(name: str) -> str:
    """A command's help text as ``build_command`` would give it, without building it."""
    target = _target(name)
    if isinstance(target, typer.Typer):
        return target.info.help if isinstance(target.info.help, str) else ""
    return inspect.getdoc(target) or ""


class BillingGroup(TyperGroup):
    """Maps every failure to the contract: one line (or JSON), an exit code, no traceback.

    Commands are built on first use: converting all of them costs about as much as
    the rest of start-up, and a cron job runs one command. The command list in ``--help``
    needs only each command's help text, so it builds none of them.
    """

    _listing = False

    def list_commands(self, ctx: Context) -> list[str]:
        return list(COMMANDS)

    def get_command(self, ctx: Context, cmd_name: str) -> Command | None:
        if cmd_name not in self.commands:
            if self._listing and cmd_name in COMMANDS:
                return TyperCommand(cmd_name, help=command_help(cmd_name))
            if cmd_name in COMMANDS:
                self.commands[cmd_name] = build_command(cmd_name)
            else:
                # Typer suggests close names from ``self.commands``; a typo may pay for all.
                for name in COMMANDS.keys() - self.commands.keys():
                    self.commands[name] = build_command(name)
        return self.commands.get(cmd_name)

    def format_help(self, ctx: Context, formatter: HelpFormatter) -> None:
        self._listing = True
        try:
            super().format_help(ctx, formatter)
        finally:
            self._listing = False

    def main(self, args: Any = None, *posargs: Any, **kwargs: Any) -> Any:
        argv = list(sys.argv[1:] if args is None else args)
        set_json_mode("--json" in argv)
        return super().main(argv, *posargs, **kwargs)

    def invoke(self, ctx: Context) -> Any:
        try:
            return super().invoke(ctx)
        except (typer.Exit, typer.Abort):
            raise
        except BillingError as error:
            raise typer.Exit(fail(error)) from None
        except KeyboardInterrupt:
            raise typer.Exit(130) from None
        except Exception as exc:
            known = ctx.obj.explain(exc) if isinstance(ctx.obj, AppContext) else None
            if known is not None:
                raise typer.Exit(fail(known)) from None
            if _usage_error(exc):
                if not json_mode():
                    raise
                raise typer.Exit(
                    fail(BillingError(str(exc), code="usage", exit_code=ExitCode.BAD_INPUT))
                ) from None
            if os.environ.get("BILLING_DEBUG") in ("1", "true", "yes"):
                traceback.print_exc()
            raise typer.Exit(
                fail(
                    BillingError(
                        f"unexpected {type(exc).__name__}: {scrub_secrets(str(exc))}",
                        hint="set BILLING_DEBUG=1 to see the traceback, and report it",
                        code="internal",
                    )
                )
            ) from None


def _usage_error(exc: Exception) -> bool:
    # Typer vendors click; its usage errors carry an exit code of 2 and a ``show`` method.
    return getattr(exc, "exit_code", None) == ExitCode.BAD_INPUT and hasattr(exc, "show")


app = typer.Typer(
    cls=BillingGroup,
    name="cloudgreet-billing",
    help="CloudGreet's billing and finance playbook: Stripe, Supabase, dunning, reconciliation.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        sys.stdout.write(f"cloudgreet-billing {__version__}\n")
        raise typer.Exit()


@app.callback()
def root(
    ctx: typer.Context,
    env_file: Annotated[
        Path | None,
        typer.Option(
            "--env-file",
            help="Read variables from this file (default: .env in the working directory). "
            "Real environment variables win.",
            dir_okay=False,
        ),
    ] = None,
    version: Annotated[
        bool,
        typer.Option(
            "--version", help="Print the version and exit.", callback=_version, is_eager=True
        ),
    ] = False,
) -> None:
    """CloudGreet's billing and finance playbook: Stripe, Supabase, dunning, reconciliation."""
    context = app_context(ctx)
    context.env_file = _load_env_file(env_file)


def _load_env_file(path: Path | None) -> Path | None:
    if path is not None and not path.is_file():
        raise BillingError(
            f"--env-file {path} does not exist",
            hint="give the path of a .env file",
            code="config",
            exit_code=ExitCode.BAD_INPUT,
        )
    chosen = path or Path(".env")
    if not chosen.is_file():
        return None
    from dotenv import load_dotenv

    load_dotenv(chosen, override=False)
    return chosen


def main() -> None:
    """Console-script entry point."""
    app()

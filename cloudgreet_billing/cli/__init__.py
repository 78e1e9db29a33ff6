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
from cloudgreet_billing.cli.quick_params import use_quick_params
from cloudgreet_billing.config import scrub_secrets
from cloudgreet_billing.errors import BadInput, BillingError, ExitCode, refused_value

if TYPE_CHECKING:
    # The click that Typer vendors: TyperGroup's methods are typed with its classes.
    from typer._click import Command, Context, HelpFormatter

    from cloudgreet_billing.config import Override

# Command name -> (module under cloudgreet_billing.cli, attribute): a Typer sub-app or a
# command function. Listed in the order ``--help`` shows them.
COMMANDS: dict[str, tuple[str, str]] = {
    "db": ("db", "app"),
    "ledger": ("ledger", "app"),
    # The group's module is dunning.py; dunning_report.py adds ``report`` to it.
    "dunning": ("dunning_report", "app"),
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


def reflow(help_text: str) -> str:
    """Help text whose paragraphs wrap at the terminal's width, not the source's.

    Typer's Rich help keeps each line break of a docstring, so a line written for 100
    columns breaks in two at 80 and leaves a ragged stub. Paragraphs are joined into one
    line each for Rich to wrap; an ``Example:`` paragraph and a ``\\b`` block (a table the
    author laid out) keep their lines.
    """
    paragraphs = inspect.cleandoc(help_text).split("\n\n")
    return "\n\n".join(
        paragraph
        if paragraph.startswith(("\b", "Example")) or paragraph.lstrip().startswith("$ ")
        else " ".join(line.strip() for line in paragraph.splitlines())
        for paragraph in paragraphs
    )


def _reflow_tree(command: Command) -> None:
    if command.help:
        command.help = reflow(command.help)
    for sub in getattr(command, "commands", {}).values():
        _reflow_tree(sub)


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
    _reflow_tree(command)
    return command


def command_help(name: str) -> str:
    """A command's help text as ``build_command`` would give it, without building it."""
    target = _target(name)
    if isinstance(target, typer.Typer):
        text = target.info.help if isinstance(target.info.help, str) else ""
    else:
        text = inspect.getdoc(target) or ""
    return reflow(text) if text else text


def _flags_take_no_value() -> None:
    """Typer labels a flag ``<bool>`` in help, as if it took a value; a flag takes none."""
    from typer.core import TyperOption

    shown = TyperOption.display_type_rich

    def display_type_rich(self: TyperOption, ctx: Context) -> str | None:
        return None if self.is_flag else shown(self, ctx)

    TyperOption.display_type_rich = display_type_rich  # type: ignore[method-assign]


_flags_take_no_value()
use_quick_params()


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
        argv = env_file_first(list(sys.argv[1:] if args is None else args))
        set_json_mode("--json" in argv)
        refused = _unreadable_argument(argv)
        if refused is not None:
            # Before click reads anything: no command runs on an argument it cannot show.
            sys.exit(fail(refused))
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
            refused = refused_value(exc)
            if refused is not None:
                raise typer.Exit(fail(refused)) from None
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


def env_file_first(argv: list[str]) -> list[str]:
    """``--env-file`` is the root's option, but may be given after the command too
    (``alerts list --env-file prod.env``): it is moved in front, up to a ``--``."""
    moved: list[str] = []
    rest: list[str] = []
    index = 0
    while index < len(argv):
        arg = argv[index]
        if arg == "--":
            rest.extend(argv[index:])
            break
        if arg == "--env-file":
            moved.extend(argv[index : index + 2])
            index += 2
            continue
        (moved if arg.startswith("--env-file=") else rest).append(arg)
        index += 1
    return moved + rest


def _unreadable_argument(argv: list[str]) -> BillingError | None:
    """An argument that is not one line of UTF-8 (bytes that are not UTF-8 reach Python as
    lone surrogates; NUL, a line break or ESC are no part of any id, amount or note)."""
    from cloudgreet_billing.domain.inputs import shown, unwanted_character

    for position, argument in enumerate(argv):
        problem = unwanted_character(argument)
        if problem is None:
            continue
        option, _, value = argument.partition("=")
        if argument.startswith("--") and value:
            named, argument = option, value
            problem = unwanted_character(argument) or problem
        elif position and argv[position - 1].startswith("--") and argv[position - 1] != "--":
            named = argv[position - 1]
        else:
            named = f"argument {position + 1}"
        return BadInput(
            f"{named} {shown(argument)} {problem}", hint="type it again as one line of plain text"
        )
    return None


def _usage_error(exc: Exception) -> bool:
    # Typer vendors click; its usage errors carry an exit code of 2 and a ``show`` method.
    return getattr(exc, "exit_code", None) == ExitCode.BAD_INPUT and hasattr(exc, "show")


ROOT_HELP = """CloudGreet's billing and finance playbook: Stripe, Supabase, dunning, reconciliation.

Example: cloudgreet-billing --env-file prod.env dashboard
"""

app = typer.Typer(
    cls=BillingGroup,
    name="cloudgreet-billing",
    help=ROOT_HELP,
    no_args_is_help=True,
    add_completion=True,
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
            help="Read variables from this file (default: .env in the working directory); "
            "before or after the command. Real environment variables win, and stderr "
            "names each one that does.",
            dir_okay=False,
        ),
    ] = None,
    version: Annotated[
        bool,
        typer.Option(
            "--version", "-V", help="Print the version and exit.", callback=_version, is_eager=True
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
    from dotenv import dotenv_values, load_dotenv

    from cloudgreet_billing.config import env_overrides

    overrides = env_overrides(dotenv_values(chosen), os.environ)
    load_dotenv(chosen, override=False)
    for override in overrides:
        # A warning, so JSON mode shows it too: stdout stays JSON, and a cron log keeps it.
        sys.stderr.write(_override_line(override, chosen) + "\n")
    return chosen


def _override_line(override: Override, env_file: Path) -> str:
    from cloudgreet_billing.config import shown_value

    name = override.variable
    ours, theirs = shown_value(name, override.environment), shown_value(name, override.file)
    if override.live_key:
        return (
            f"warning: {name} from the environment is a LIVE key ({ours}) and wins over "
            f"{env_file} ({theirs}): Stripe calls here reach the live account "
            f"(unset {name} to use the file's setting)"
        )
    return f"note: {name} from the environment ({ours}) wins over {env_file} ({theirs})"


def main() -> None:
    """Console-script entry point (``python -m cloudgreet_billing`` too): one name in usage
    lines and shell completion, however it was started."""
    app(prog_name="cloudgreet-billing")

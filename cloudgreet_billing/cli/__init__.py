"""The ``cloudgreet-billing`` command: groups are wired here, behaviour lives in services."""

from __future__ import annotations

import os
import sys
import traceback
from pathlib import Path
from typing import Annotated, Any

import typer
from typer.core import TyperGroup

from cloudgreet_billing import __version__
from cloudgreet_billing.cli import (
    actions,
    alerts,
    db,
    demo,
    doctor,
    dunning,
    finance,
    ledger,
    serve,
    sync,
)
from cloudgreet_billing.cli.context import app_context
from cloudgreet_billing.cli.output import fail, json_mode, set_json_mode
from cloudgreet_billing.config import scrub_secrets
from cloudgreet_billing.errors import BillingError, ExitCode


class BillingGroup(TyperGroup):
    """Maps every failure to the contract: one line (or JSON), an exit code, no traceback."""

    def main(self, args: Any = None, *posargs: Any, **kwargs: Any) -> Any:
        argv = list(sys.argv[1:] if args is None else args)
        set_json_mode("--json" in argv)
        return super().main(argv, *posargs, **kwargs)

    def invoke(self, ctx: typer.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (typer.Exit, typer.Abort):
            raise
        except BillingError as error:
            raise typer.Exit(fail(error)) from None
        except KeyboardInterrupt:
            raise typer.Exit(130) from None
        except Exception as exc:
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


app.add_typer(db.app, name="db")
app.add_typer(ledger.app, name="ledger")
app.add_typer(dunning.app, name="dunning")
app.command("doctor")(doctor.doctor)
app.command("sync")(sync.sync)
app.command("serve")(serve.serve)
app.add_typer(alerts.app, name="alerts")
app.command("retry")(actions.retry)
app.command("resend-link")(actions.resend_link)
app.command("portal")(actions.portal)
app.command("reconcile")(finance.reconcile)
app.command("dashboard")(finance.dashboard)
app.command("export-csv")(finance.export_csv)
app.command("demo")(demo.demo)


def main() -> None:
    """Console-script entry point."""
    app()

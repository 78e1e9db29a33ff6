"""``demo``: walk the daily checklist end to end in a throwaway workspace."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from cloudgreet_billing.cli.context import app_context
from cloudgreet_billing.cli.output import JsonFlag, emit, json_mode

if TYPE_CHECKING:
    from rich.console import Console


def demo(
    ctx: typer.Context,
    directory: Annotated[
        Path | None,
        typer.Option(
            "--dir",
            help="Workspace folder (default: a new temporary folder). Its .env points every "
            "part at files inside it. A folder holding the store in use, or a .env the demo "
            "did not write, is refused.",
            file_okay=False,
        ),
    ] = None,
    json_output: JsonFlag = False,
) -> None:
    """Try the whole playbook with realistic data and no credentials.

    Each step runs the real command, as you would type it, against the workspace only:
    your own environment's Stripe key and database are never used.
    """
    from cloudgreet_billing.adapters.files import store_files
    from cloudgreet_billing.bootstrap import store_files_of
    from cloudgreet_billing.clock import utcnow
    from cloudgreet_billing.config import default_sqlite_path, variables
    from cloudgreet_billing.errors import BillingError
    from cloudgreet_billing.services.demo import checklist, write_workspace

    try:
        protected = store_files_of(app_context(ctx).settings)
    except BillingError:
        # A broken environment is the demo's to ignore, not to trip over; the default
        # store is still never written.
        protected = store_files(default_sqlite_path())
    workspace = directory or Path(tempfile.mkdtemp(prefix="cloudgreet-billing-demo-"))
    files = write_workspace(workspace, utcnow(), protected=protected)
    # Real environment variables win over .env files: drop them, so the demo can never
    # touch a real Stripe account or database.
    env = {key: value for key, value in os.environ.items() if key not in variables()}
    env_file = str(files["env"])
    steps = []
    for step in checklist(files):
        command = ["cloudgreet-billing", "--env-file", env_file, *step.args]
        if not json_mode():
            sys.stderr.write(f"\n== {step.title}\n$ {' '.join(command)}\n")
            sys.stderr.flush()
        result = subprocess.run(
            [sys.executable, "-m", "cloudgreet_billing", *command[1:]],
            env=env,
            cwd=workspace,
            capture_output=json_mode(),
            text=True,
            check=False,
        )
        steps.append({"command": " ".join(command), "exit_code": result.returncode})
        if result.returncode not in step.expected:
            raise BillingError(
                f"demo step failed: {' '.join(command)} exited {result.returncode}",
                hint="set BILLING_DEBUG=1 and run that command to see why",
                code="demo_failed",
            )

    def human(console: Console) -> None:
        console.print(
            f"\nThe workspace is {workspace}. Messages dunning sent are in "
            f"{files['outbox']}; the finance export is {files['export']}.\n"
            f"Carry on, e.g.: cloudgreet-billing --env-file {env_file} alerts show 1"
        )

    emit({"dir": str(workspace), "env_file": env_file, "steps": steps}, human)
